//! What a servable file declares, read straight from its protobuf: the contract's metadata entry
//! and the graph's inputs and outputs with their shapes. An ONNX Runtime session built only to
//! read these costs as much as a real one (seconds to tens of seconds for an unrolled
//! paper-sized model, docs/performance.md "Start-up"); skipping the nodes and weights takes
//! milliseconds. Whether ONNX Runtime can run the graph is found when the sessions are built.

use super::onnx_wire::{field, Fields, WireError};
use super::TensorInfo;

/// A file's declarations, as ONNX Runtime reports them for a session of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declarations {
    /// The value of the metadata entry `key`, if the file has one.
    pub metadata: Option<String>,
    /// The graph inputs a caller feeds (initializers listed as inputs, as before IR 4, are not).
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

/// Reads the metadata entry `key` and the declared inputs and outputs of a serialized model.
pub fn read_declarations(model: &[u8], key: &str) -> Result<Declarations, WireError> {
    let mut metadata = None;
    let mut graph = None;
    for f in Fields::new(model) {
        let f = f?;
        match f.number {
            field::MODEL_GRAPH => {
                if graph.is_some() {
                    // Protobuf would merge the two; no exporter writes that.
                    return Err(WireError("more than one graph field"));
                }
                graph = Some(f.payload()?);
            }
            field::MODEL_METADATA_PROPS => {
                let (mut k, mut v) = ("", "");
                for e in Fields::new(f.payload()?) {
                    let e = e?;
                    match e.number {
                        field::ENTRY_KEY => k = e.string()?,
                        field::ENTRY_VALUE => v = e.string()?,
                        _ => {}
                    }
                }
                if k == key {
                    metadata = Some(v.to_string());
                }
            }
            _ => {}
        }
    }
    let graph = graph.ok_or(WireError("the model has no graph"))?;
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut initializers = std::collections::HashSet::new();
    for f in Fields::new(graph) {
        let f = f?;
        match f.number {
            field::GRAPH_INPUT => inputs.push(value_info(f.payload()?)?),
            field::GRAPH_OUTPUT => outputs.push(value_info(f.payload()?)?),
            field::GRAPH_INITIALIZER => {
                for t in Fields::new(f.payload()?) {
                    let t = t?;
                    if t.number == field::TENSOR_NAME {
                        initializers.insert(t.string()?);
                    }
                }
            }
            _ => {}
        }
    }
    inputs.retain(|i| !initializers.contains(i.name.as_str()));
    Ok(Declarations {
        metadata,
        inputs,
        outputs,
    })
}

/// A value's name and, for a tensor, its shape: `-1` for a dimension without a fixed size (a
/// named or unknown one), as ONNX Runtime reports it; no dimensions for anything else.
fn value_info(bytes: &[u8]) -> Result<TensorInfo, WireError> {
    let mut name = "";
    let mut shape = Vec::new();
    for f in Fields::new(bytes) {
        let f = f?;
        match f.number {
            field::VALUE_INFO_NAME => name = f.string()?,
            field::VALUE_INFO_TYPE => {
                for t in Fields::new(f.payload()?) {
                    let t = t?;
                    if t.number != field::TYPE_TENSOR {
                        continue;
                    }
                    for s in Fields::new(t.payload()?) {
                        let s = s?;
                        if s.number != field::TENSOR_TYPE_SHAPE {
                            continue;
                        }
                        shape.clear();
                        for d in Fields::new(s.payload()?) {
                            let d = d?;
                            if d.number == field::SHAPE_DIM {
                                shape.push(dim(d.payload()?)?);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(TensorInfo {
        name: name.to_string(),
        shape,
    })
}

fn dim(bytes: &[u8]) -> Result<i64, WireError> {
    let mut size = -1;
    for f in Fields::new(bytes) {
        let f = f?;
        if f.number == field::DIM_VALUE {
            // int64 on the wire: a negative value is its two's complement.
            size = f
                .varint
                .ok_or(WireError("a dimension has the wrong wire type"))? as i64;
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx_wire::{write_len_field, write_varint};

    enum Dim {
        Value(u64),
        Param(&'static str),
    }

    fn tensor_value_info(name: &str, dims: &[Dim]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            match d {
                Dim::Value(v) => {
                    write_varint(&mut dim, u64::from(field::DIM_VALUE) << 3);
                    write_varint(&mut dim, *v);
                }
                Dim::Param(p) => write_len_field(&mut dim, 2, p.as_bytes()),
            }
            write_len_field(&mut shape, field::SHAPE_DIM, &dim);
        }
        let mut tensor = Vec::new();
        write_varint(&mut tensor, 1 << 3); // elem_type FLOAT
        write_varint(&mut tensor, 1);
        write_len_field(&mut tensor, field::TENSOR_TYPE_SHAPE, &shape);
        let mut ty = Vec::new();
        write_len_field(&mut ty, field::TYPE_TENSOR, &tensor);
        let mut vi = Vec::new();
        write_len_field(&mut vi, field::VALUE_INFO_NAME, name.as_bytes());
        write_len_field(&mut vi, field::VALUE_INFO_TYPE, &ty);
        vi
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        let mut e = Vec::new();
        write_len_field(&mut e, field::ENTRY_KEY, key.as_bytes());
        write_len_field(&mut e, field::ENTRY_VALUE, value.as_bytes());
        e
    }

    fn model() -> Vec<u8> {
        let mut g = Vec::new();
        let mut w = Vec::new();
        write_len_field(&mut w, field::TENSOR_NAME, b"w");
        write_len_field(&mut w, 9, &[0u8; 64]); // raw_data, skipped
        write_len_field(&mut g, field::GRAPH_INITIALIZER, &w);
        let frames = [Dim::Param("N"), Dim::Value(17), Dim::Value(3)];
        write_len_field(
            &mut g,
            field::GRAPH_INPUT,
            &tensor_value_info("frames", &frames),
        );
        // Before IR 4 an initializer is listed as an input too; ONNX Runtime does not report it.
        write_len_field(
            &mut g,
            field::GRAPH_INPUT,
            &tensor_value_info("w", &[Dim::Value(4)]),
        );
        let logits = [Dim::Param("N"), Dim::Value(17), Dim::Value(10)];
        write_len_field(
            &mut g,
            field::GRAPH_OUTPUT,
            &tensor_value_info("logits", &logits),
        );
        let mut m = Vec::new();
        write_varint(&mut m, 1 << 3); // ir_version 8
        write_varint(&mut m, 8);
        write_len_field(&mut m, field::MODEL_METADATA_PROPS, &entry("other", "x"));
        write_len_field(&mut m, field::MODEL_GRAPH, &g);
        write_len_field(&mut m, field::MODEL_METADATA_PROPS, &entry("convrnn", "{}"));
        m
    }

    #[test]
    fn reads_the_metadata_entry_and_the_declared_tensors() {
        let d = read_declarations(&model(), "convrnn").unwrap();
        assert_eq!(d.metadata.as_deref(), Some("{}"));
        let named = |name: &str, shape: &[i64]| TensorInfo {
            name: name.into(),
            shape: shape.to_vec(),
        };
        assert_eq!(d.inputs, [named("frames", &[-1, 17, 3])]);
        assert_eq!(d.outputs, [named("logits", &[-1, 17, 10])]);
        assert_eq!(
            read_declarations(&model(), "absent").unwrap().metadata,
            None
        );
    }

    #[test]
    fn every_cut_of_a_model_is_an_error_or_a_shorter_reading_never_a_panic() {
        let m = model();
        for cut in 0..m.len() {
            let _ = read_declarations(&m[..cut], "convrnn");
        }
        assert!(read_declarations(b"GIF89a not a model", "convrnn").is_err());
        assert!(read_declarations(&[], "convrnn").is_err(), "no graph");
    }
}
