//! `POST /v1/models/{model}/activations`: chosen layers x chosen timesteps of the model's time
//! course, raw or spatially pooled, as JSON (small answers) or `.npz` (`Accept:
//! application/x-npz`; `np.load` opens it, one array per layer named after it).

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::inference::{
    model_info, off_the_async_threads, run_images, timing_headers, INLINE_JSON_VALUES,
    INLINE_NPZ_VALUES,
};
use super::input::{merge_options, ImagePayload};
use super::selection::{Pool, Selection};
use super::AppState;
use crate::engine::ItemResult;
use crate::model::ModelInfo;
use crate::npz::{NpyData, NpzWriter};
use crate::presentation::Presentation;

pub const NPZ_MEDIA_TYPE: &str = "application/x-npz";

/// Options of an activations request, as query parameters or as the JSON `options` object.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivationOptions {
    /// Comma-separated layer names, `all` (default: every layer), and/or `logits`.
    #[param(example = "conv3,conv5")]
    pub layers: Option<String>,
    /// Timesteps: `all` (default), a half-open range `a:b` (either end optional), or a list `1,3,5`.
    #[param(example = "4:12")]
    pub steps: Option<String>,
    /// A window in milliseconds `START:END`: the steps whose start `t * step_ms` lies in it.
    /// Exclusive with `steps`.
    #[param(example = "70:160")]
    pub window_ms: Option<String>,
    /// Spatial pooling: `none` (default) keeps `[C, H, W]`, `mean` and `max` give `[C]`.
    pub pool: Option<Pool>,
    /// Presentation schedule: `default`, `flash`, `mask` or `sequence` (see classify).
    pub presentation: Option<String>,
    /// Steps the image is shown (`flash`, `mask`).
    pub on_steps: Option<usize>,
    /// Steps the mask is shown (`mask`).
    pub mask_steps: Option<usize>,
    /// For `presentation=sequence`: `IMAGE:STEPS,...` with `blank:STEPS`.
    pub sequence: Option<String>,
}

/// One layer's activations.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayerActivations {
    /// `[images, steps, C, H, W]`, or `[images, steps, C]` when pooled (`[images, steps, K]` for logits).
    #[schema(example = json!([1, 2, 8]))]
    pub shape: Vec<usize>,
    /// Nested arrays of that shape (`numpy.array(data)` restores it).
    #[schema(value_type = Vec<serde_json::Value>)]
    pub data: serde_json::Value,
}

/// The JSON answer (documentation of the shape; the server writes it directly).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"model": "rgc_fmnist", "steps": [4, 5], "time_ms": [40.0, 50.0], "pool": "mean",
    "layers": {"conv3": {"shape": [1, 2, 2], "data": [[[0.1, 0.2], [0.3, 0.4]]]}}}))]
pub struct ActivationsResponse {
    pub model: String,
    /// The step indices returned, in order.
    pub steps: Vec<usize>,
    /// Start time of each returned step in ms (`step * step_ms`).
    pub time_ms: Vec<f64>,
    pub pool: Pool,
    pub layers: std::collections::BTreeMap<String, LayerActivations>,
}

/// One layer's selected values across the request's stimuli, flattened C-order.
struct Gathered {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

fn gather(
    info: &ModelInfo,
    results: &[ItemResult],
    sel: &Selection,
) -> Result<Vec<Gathered>, ApiError> {
    sel.layers
        .iter()
        .map(|name| {
            let layout = LayerLayout::new(info, sel, name, results.len())?;
            gather_layer(results, sel, name, layout)
        })
        .collect()
}

/// One layer's item shape `[T, ...]`, values per step, and answer shape.
struct LayerLayout {
    item_shape: Vec<usize>,
    per_step: usize,
    shape: Vec<usize>,
}

impl LayerLayout {
    fn new(
        info: &ModelInfo,
        sel: &Selection,
        name: &str,
        stimuli: usize,
    ) -> Result<Self, ApiError> {
        let item_shape = info
            .item_shape(name)
            .ok_or_else(|| ApiError::Internal(format!("no shape for {name}")))?;
        let per_step = item_shape[1..].iter().product();
        let shape = answer_shape(&item_shape, sel, stimuli);
        Ok(Self {
            item_shape,
            per_step,
            shape,
        })
    }

    /// Pooled answers keep only the channel axis of a [T, C, H, W] layer.
    fn pooled(&self) -> bool {
        self.shape.len() < self.item_shape.len() + 1
    }

    /// Step `t` of one item's `[T, ...]` values.
    fn step<'a>(&self, values: &'a [f32], t: usize) -> &'a [f32] {
        &values[t * self.per_step..(t + 1) * self.per_step]
    }
}

fn layer_values<'a>(r: &'a ItemResult, name: &str) -> Result<&'a [f32], ApiError> {
    r.output(name)
        .ok_or_else(|| ApiError::Internal(format!("the batch has no output {name}")))
}

fn gather_layer(
    results: &[ItemResult],
    sel: &Selection,
    name: &str,
    layout: LayerLayout,
) -> Result<Gathered, ApiError> {
    let pooled = layout.pooled();
    // Spatial plane of one channel (only read when pooling, i.e. for [T, C, H, W] layers).
    let plane = layout.item_shape[2..].iter().product::<usize>();
    let mut data = Vec::with_capacity(layout.shape.iter().product());
    for r in results {
        let values = layer_values(r, name)?;
        for &t in &sel.steps {
            let step = layout.step(values, t);
            let pool = if pooled { sel.pool } else { Pool::None };
            crate::pool::pool_step(step, plane, pool, &mut data);
        }
    }
    Ok(Gathered {
        name: name.to_string(),
        shape: layout.shape,
        data,
    })
}

/// Shape of one output in the answer: `[stimuli, steps, ...]` with the item's per-step axes, or
/// only its channels when space is pooled (logits, `[T, K]`, are never pooled).
fn answer_shape(item_shape: &[usize], sel: &Selection, stimuli: usize) -> Vec<usize> {
    let mut shape = vec![stimuli, sel.steps.len()];
    if sel.pool != Pool::None && item_shape.len() == 4 {
        shape.push(item_shape[1]);
    } else {
        shape.extend_from_slice(&item_shape[1..]);
    }
    shape
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
/// pre-sized archive: all layers x steps of rgc_intermediate are 89 MB per image, and each extra
/// pass over fresh memory (an intermediate copy, a growing buffer) showed in the latency.
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

/// Which encoding the client accepts: `application/x-npz`, else JSON (the default), else 406.
fn wants_npz(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(false);
    };
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    if types.contains(&NPZ_MEDIA_TYPE) {
        return Ok(true);
    }
    if types
        .iter()
        .any(|t| matches!(*t, "application/json" | "*/*" | "application/*" | ""))
    {
        return Ok(false);
    }
    Err(ApiError::NotAcceptable(format!(
        "cannot answer with {}: available are application/json and {NPZ_MEDIA_TYPE}",
        super::error::quote(accept)
    )))
}

/// Time-resolved layer activations.
///
/// Returns the selected layers at the selected timesteps for each stimulus. JSON by default;
/// send `Accept: application/x-npz` for a NumPy archive (`np.load(io.BytesIO(body))`) holding one
/// float32 array per layer shaped `[images, steps, C, H, W]` (pooled: `[images, steps, C]`), plus
/// `steps` (int64) and `time_ms` (float64).
#[utoipa::path(
    post,
    path = "/v1/models/{model}/activations",
    tag = "inference",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"), ActivationOptions),
    request_body(
        description = "One encoded image (JPEG, PNG, WebP, BMP, TIFF) as the raw body, sent as `application/octet-stream` or with its own `image/*` type (e.g. `image/png`); several as `multipart/form-data` parts (a part named `mask` is the mask, a part named `options` the JSON options); or JSON with base64 images",
        content(
            (super::input::ImageBytes = "application/octet-stream"),
            (super::input::MultipartImages = "multipart/form-data"),
            (super::input::JsonImages = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Activations", content(
            (ActivationsResponse = "application/json"),
            (Vec<u8> = "application/x-npz"),
        )),
        (status = 400, description = "Bad image, unknown layer, step out of range", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 406, description = "Unsupported Accept, or the answer is too large for JSON", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = ErrorBody),
        (status = 429, description = "Queue full; retry after the Retry-After header", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    )
)]
pub async fn activations(
    State(state): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    payload: ImagePayload,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let info = model_info(&state, &model)?;
    let npz = wants_npz(&headers)?;
    let mut payload = payload;
    let options: ActivationOptions = merge_options(query.as_deref(), payload.options.take())?;
    let meta = &info.metadata;
    let selection = Selection::parse(
        meta,
        options.layers.as_deref(),
        options.steps.as_deref(),
        options.window_ms.as_deref(),
        options.pool,
    )?;
    let presentation = Presentation::from_parts(
        options.presentation.as_deref(),
        options.on_steps,
        options.mask_steps,
        options.sequence.as_deref(),
        &meta.time,
    )?;
    let stimuli_count = match presentation {
        Presentation::Sequence(_) => 1,
        _ => payload.images.len(),
    };
    let values: usize = selection
        .layers
        .iter()
        .filter_map(|l| info.item_shape(l))
        .map(|s| {
            answer_shape(&s, &selection, stimuli_count)
                .iter()
                .product::<usize>()
        })
        .sum();
    // Refuse an oversized JSON answer before doing the work.
    if !npz && values > state.limits.max_json_values {
        return Err(ApiError::NotAcceptable(format!(
            "the answer has {values} values, more than the JSON limit of {}: ask for \
             `Accept: {NPZ_MEDIA_TYPE}`, pool space, or select fewer layers or steps",
            state.limits.max_json_values
        )));
    }
    let results = run_images(
        &state,
        &info,
        payload,
        &presentation,
        selection.layers.clone(),
    )
    .await?;
    let time_ms: Vec<f64> = selection
        .steps
        .iter()
        .map(|&t| t as f64 * meta.time.step_ms)
        .collect();
    let mut headers = timing_headers(&results, started);
    let content_type = if npz {
        NPZ_MEDIA_TYPE
    } else {
        "application/json"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if npz {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"activations.npz\""),
        );
    }
    let inline_up_to = if npz {
        INLINE_NPZ_VALUES
    } else {
        INLINE_JSON_VALUES
    };
    let body = off_the_async_threads(values <= inline_up_to, move || {
        body(npz, &info, &results, &selection, &time_ms)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("building the answer failed: {e}")))??;
    Ok((headers, body).into_response())
}

fn body(
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

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_npz(&h).unwrap());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-npz"),
        );
        assert!(wants_npz(&h).unwrap());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(wants_npz(&h).is_err());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, */*;q=0.8"),
        );
        assert!(!wants_npz(&h).unwrap());
    }
}
