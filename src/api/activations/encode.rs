//! The two encodings of an activations answer: JSON with nested arrays, and a NumPy `.npz`
//! archive holding one array per layer plus `steps` and `time_ms`.

use crate::api::error::ApiError;
use crate::engine::ItemResult;
use crate::gather::{gather, gather_layer, layer_values, Gathered, LayerLayout, Selection};
use crate::model::ModelInfo;
use crate::npz::{NpyData, NpzWriter};
use crate::pool::Pool;

/// The answer's body, as npz or as JSON.
pub fn body(
    npz: bool,
    info: &ModelInfo,
    results: &[ItemResult],
    selection: &Selection,
    time_ms: &[f64],
) -> Result<Vec<u8>, ApiError> {
    if npz {
        npz_body(info, results, selection, time_ms)
    } else {
        let layers = gather(info, results, selection)?;
        Ok(json_body(
            info.name(),
            &selection.steps,
            time_ms,
            selection.pool,
            &layers,
        ))
    }
}

/// Writes `data` as nested JSON arrays of `shape` (non-finite values as null, as JSON has none).
fn write_nested(out: &mut Vec<u8>, data: &[f32], shape: &[usize]) {
    match shape {
        [] => write_f32(out, data[0]),
        [n] => {
            out.push(b'[');
            for (i, v) in data[..*n].iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_f32(out, *v);
            }
            out.push(b']');
        }
        [n, rest @ ..] => {
            let stride: usize = rest.iter().product();
            out.push(b'[');
            for i in 0..*n {
                if i > 0 {
                    out.push(b',');
                }
                write_nested(out, &data[i * stride..(i + 1) * stride], rest);
            }
            out.push(b']');
        }
    }
}

fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn json_body(
    model: &str,
    steps: &[usize],
    time_ms: &[f64],
    pool: Pool,
    layers: &[Gathered],
) -> Vec<u8> {
    let values: usize = layers.iter().map(|l| l.data.len()).sum();
    let mut out = Vec::with_capacity(64 + values * 12);
    let head =
        serde_json::json!({"model": model, "steps": steps, "time_ms": time_ms, "pool": pool});
    let head = head.to_string();
    // Splice the layers object into the header object, streaming the big arrays.
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"layers\":{");
    for (i, l) in layers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(
            serde_json::to_string(&l.name)
                .unwrap_or_default()
                .as_bytes(),
        );
        out.extend_from_slice(b":{\"shape\":");
        out.extend_from_slice(
            serde_json::to_string(&l.shape)
                .unwrap_or_default()
                .as_bytes(),
        );
        out.extend_from_slice(b",\"data\":");
        write_nested(&mut out, &l.data, &l.shape);
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

/// The npz answer. Unpooled layers are copied from the batch outputs straight into a
/// pre-sized archive, because answers of full-size models run to tens of MB per image and every
/// extra pass over fresh memory costs latency (docs/performance.md, "Activation answers").
fn npz_body(
    info: &ModelInfo,
    results: &[ItemResult],
    sel: &Selection,
    time_ms: &[f64],
) -> Result<Vec<u8>, ApiError> {
    let internal = |e: crate::npz::NpzError| ApiError::Internal(format!("writing npz: {e}"));
    let layouts = sel
        .layers
        .iter()
        .map(|name| LayerLayout::new(info, sel, name, results.len()))
        .collect::<Result<Vec<_>, _>>()?;
    // Values, plus a generous 1 KiB per array for the ZIP and .npy headers.
    let bytes: usize = layouts
        .iter()
        .map(|l| l.shape.iter().product::<usize>() * 4 + 1024)
        .sum::<usize>()
        + 2048
        + sel.steps.len() * 16;
    let mut npz = NpzWriter::with_capacity(bytes);
    for (name, layout) in sel.layers.iter().zip(layouts) {
        if layout.pooled() {
            let g = gather_layer(results, sel, name, layout)?;
            npz.add(name, &g.shape, NpyData::F32(&g.data))
                .map_err(internal)?;
        } else {
            let mut parts = Vec::with_capacity(results.len() * sel.steps.len());
            for r in results {
                let values = layer_values(r, name)?;
                parts.extend(sel.steps.iter().map(|&t| layout.step(values, t)));
            }
            npz.add_f32_parts(name, &layout.shape, &parts)
                .map_err(internal)?;
        }
    }
    let steps_i64: Vec<i64> = sel.steps.iter().map(|&s| s as i64).collect();
    npz.add("steps", &[sel.steps.len()], NpyData::I64(&steps_i64))
        .map_err(internal)?;
    npz.add("time_ms", &[time_ms.len()], NpyData::F64(time_ms))
        .map_err(internal)?;
    Ok(npz.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_json_has_the_shape() {
        let mut out = Vec::new();
        write_nested(&mut out, &[1.0, 2.0, 3.0, 4.0, 5.0, f32::NAN], &[2, 3]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[[1.0,2.0,3.0],[4.0,5.0,null]]"
        );
    }
}
