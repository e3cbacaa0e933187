//! The model contract on the server side: what a servable ConvRNN file declares (metadata,
//! tensor names and shapes) and the checks that the two agree. Knows nothing of HTTP or ORT.

pub mod declarations;
pub mod held;
pub mod metadata;
pub mod onnx_wire;
pub mod prune;
pub mod readout;

use std::path::{Path, PathBuf};

pub use metadata::{LayerSpec, ModelMetadata, ReadoutSpec};

/// Name of the input tensor every servable file has.
pub const INPUT_NAME: &str = "frames";
/// Name of the readout output every servable file has.
pub const LOGITS_NAME: &str = "logits";

/// Whether a run asking for `outputs` needs nothing but the logits, so it can run on the graph
/// pruned to them ([`prune`]).
pub fn only_logits(outputs: &[String]) -> bool {
    outputs.iter().all(|o| o == LOGITS_NAME)
}

/// A tensor as declared by the graph; `-1` marks a dynamic axis.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Metadata {
        path: String,
        #[source]
        source: metadata::MetadataError,
    },
    #[error("{path}: graph does not follow the contract: {msg}")]
    Graph { path: String, msg: String },
}

/// Everything the server knows about one servable file, checked against its graph.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub metadata: ModelMetadata,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// sha256 of the file (hex), which names the weights a result came from; set when read from
    /// a file ([`inspect`]).
    pub weights_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Wire {
        path: String,
        #[source]
        source: onnx_wire::WireError,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Reads a servable file once: its metadata and declared tensors, checked against the contract
/// without building a runtime session ([`declarations`]), and the sha256 that names its weights.
pub fn inspect(path: &Path) -> Result<ModelInfo, InspectError> {
    let (declared, sha256) = read_model_file(path)?;
    Ok(ModelInfo::from_declarations(path, declared, sha256)?)
}

/// A file's declarations and the sha256 of its bytes (lowercase hex), from one read.
pub fn read_model_file(path: &Path) -> Result<(declarations::Declarations, String), InspectError> {
    use sha2::Digest;
    let shown = || path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InspectError::Read {
        path: shown(),
        source,
    })?;
    let declared =
        declarations::read_declarations(&bytes, metadata::METADATA_KEY).map_err(|source| {
            InspectError::Wire {
                path: shown(),
                source,
            }
        })?;
    let sha256 = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((declared, sha256))
}

impl ModelInfo {
    /// [`ModelInfo::new`] from what [`read_model_file`] read.
    pub fn from_declarations(
        path: &Path,
        declared: declarations::Declarations,
        sha256: String,
    ) -> Result<Self, ModelError> {
        let mut info = Self::new(
            path.to_path_buf(),
            declared.metadata,
            declared.inputs,
            declared.outputs,
        )?;
        info.weights_sha256 = Some(sha256);
        Ok(info)
    }

    /// Validates that the metadata describes the graph: `frames [N,T,3,H,W]` in, `logits [N,T,K]`
    /// with K labels out, and one `[N,T,C,H,W]` output per metadata layer.
    pub fn new(
        path: PathBuf,
        metadata_json: Option<String>,
        inputs: Vec<TensorInfo>,
        outputs: Vec<TensorInfo>,
    ) -> Result<Self, ModelError> {
        let shown = path.display().to_string();
        let metadata = metadata_json
            .ok_or(metadata::MetadataError::Missing)
            .and_then(|text| ModelMetadata::from_json(&text))
            .map_err(|source| ModelError::Metadata {
                path: shown.clone(),
                source,
            })?;
        let graph_err = |msg: String| ModelError::Graph {
            path: shown.clone(),
            msg,
        };
        let m = &metadata;
        let t = m.time.steps as i64;
        let frames = inputs
            .iter()
            .find(|i| i.name == INPUT_NAME)
            .ok_or_else(|| graph_err(format!("no input named {INPUT_NAME:?}")))?;
        if inputs.len() != 1 {
            return Err(graph_err(format!(
                "expected exactly one input, found {}",
                inputs.len()
            )));
        }
        let want = [
            t,
            m.input.channels as i64,
            m.input.height as i64,
            m.input.width as i64,
        ];
        if frames.shape.len() != 5 || frames.shape[1..] != want {
            return Err(graph_err(format!(
                "input frames has shape {:?}, metadata implies [N, {}, {}, {}, {}]",
                frames.shape, want[0], want[1], want[2], want[3]
            )));
        }
        let logits = outputs
            .iter()
            .find(|o| o.name == LOGITS_NAME)
            .ok_or_else(|| graph_err(format!("no output named {LOGITS_NAME:?}")))?;
        if logits.shape.len() != 3 || logits.shape[1..] != [t, m.labels.len() as i64] {
            return Err(graph_err(format!(
                "logits has shape {:?}, metadata implies [N, {t}, {}]",
                logits.shape,
                m.labels.len()
            )));
        }
        for layer in &m.layers {
            let out = outputs
                .iter()
                .find(|o| o.name == layer.name)
                .ok_or_else(|| graph_err(format!("layer {:?} has no output", layer.name)))?;
            let want = [
                t,
                layer.channels as i64,
                layer.height as i64,
                layer.width as i64,
            ];
            if out.shape.len() != 5 || out.shape[1..] != want {
                return Err(graph_err(format!(
                    "output {:?} has shape {:?}, metadata implies [N, {}, {}, {}, {}]",
                    layer.name, out.shape, want[0], want[1], want[2], want[3]
                )));
            }
        }
        Ok(Self {
            path,
            metadata,
            inputs,
            outputs,
            weights_sha256: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Names of every output the server can return: `logits` then the layers in metadata order.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(LOGITS_NAME).chain(self.metadata.layers.iter().map(|l| l.name.as_str()))
    }

    /// Shape of one item's slice of an output (the declared shape without the batch axis).
    pub fn item_shape(&self, output: &str) -> Option<Vec<usize>> {
        let m = &self.metadata;
        if output == LOGITS_NAME {
            return Some(vec![m.time.steps, m.labels.len()]);
        }
        m.layer(output)
            .map(|l| vec![m.time.steps, l.channels, l.height, l.width])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors() -> (Vec<TensorInfo>, Vec<TensorInfo>) {
        let ti = |n: &str, s: &[i64]| TensorInfo {
            name: n.into(),
            shape: s.to_vec(),
        };
        (
            vec![ti("frames", &[-1, 4, 3, 8, 8])],
            vec![
                ti("logits", &[-1, 4, 3]),
                ti("conv1", &[-1, 4, 2, 4, 4]),
                ti("conv2", &[-1, 4, 2, 2, 2]),
            ],
        )
    }

    #[test]
    fn accepts_a_graph_that_matches_its_metadata() {
        let (i, o) = tensors();
        let info =
            ModelInfo::new("x.onnx".into(), Some(metadata::tests::sample_json()), i, o).unwrap();
        assert_eq!(
            info.output_names().collect::<Vec<_>>(),
            ["logits", "conv1", "conv2"]
        );
        assert_eq!(info.item_shape("conv2").unwrap(), vec![4, 2, 2, 2]);
        assert!(info.item_shape("conv9").is_none());
    }

    #[test]
    fn rejects_shape_mismatch_and_missing_metadata() {
        let (i, mut o) = tensors();
        o[2].shape = vec![-1, 4, 2, 3, 3];
        let err = ModelInfo::new(
            "x.onnx".into(),
            Some(metadata::tests::sample_json()),
            i.clone(),
            o,
        )
        .unwrap_err();
        assert!(err.to_string().contains("conv2"), "{err}");
        let (_, o) = tensors();
        assert!(ModelInfo::new("x.onnx".into(), None, i, o).is_err());
    }
}
