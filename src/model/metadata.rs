//! The `convrnn` metadata a servable ONNX file carries (`shared/docs/model-format.md`), as Rust types.
//!
//! Parsing is strict about what the server relies on (shapes, time, preprocessing) and lenient
//! about the rest: unknown keys are kept out of the way so newer exports still load.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The metadata key under which the export stores its JSON description.
pub const METADATA_KEY: &str = "convrnn";

/// The `format_version` values this server understands.
pub const SUPPORTED_FORMAT_VERSIONS: &[u32] = &[1];

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelMetadata {
    pub format_version: u32,
    /// The model's name in URLs.
    #[schema(example = "rgc_fmnist")]
    pub name: String,
    #[serde(default)]
    #[schema(example = "rgc_shallow")]
    pub architecture: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub trained_on: Option<serde_json::Value>,
    pub labels: Vec<String>,
    pub input: InputSpec,
    pub time: TimeSpec,
    pub layers: Vec<LayerSpec>,
    pub readout: ReadoutSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputSpec {
    pub channels: usize,
    pub height: u32,
    pub width: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    #[serde(default = "default_resize")]
    #[schema(example = "shorter-side-then-center-crop")]
    pub resize: String,
    #[serde(default = "default_grayscale")]
    #[schema(example = "replicate")]
    pub grayscale: String,
}

fn default_resize() -> String {
    "shorter-side-then-center-crop".into()
}

fn default_grayscale() -> String {
    "replicate".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimeSpec {
    /// Number of unrolled timesteps T.
    pub steps: usize,
    /// Duration of one timestep in milliseconds (step t covers [t*step_ms, (t+1)*step_ms)).
    pub step_ms: f64,
    /// Steps for which the image is shown in the default presentation; blank after.
    pub image_on_steps: usize,
    /// Value of every element of a blank frame, in the normalised space.
    pub blank_value: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LayerSpec {
    pub name: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// First step whose output depends on the image.
    pub first_driven_step: usize,
    #[serde(default)]
    pub cell: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadoutSpec {
    /// `last`, `max_conf` or `threshold`.
    #[schema(example = "last")]
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// First step at which the readout depends on the image; defaults to the last layer's + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_driven_step: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the file has no `{METADATA_KEY}` metadata entry")]
    Missing,
    #[error("the `{METADATA_KEY}` metadata is not valid JSON for the contract: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid metadata: {0}")]
    Invalid(String),
}

impl ModelMetadata {
    pub fn from_json(text: &str) -> Result<Self, MetadataError> {
        let meta: ModelMetadata = serde_json::from_str(text)?;
        meta.validate()?;
        Ok(meta)
    }

    /// Checks the invariants the server depends on; a file that fails them is refused at load.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let bad = |msg: String| Err(MetadataError::Invalid(msg));
        if !SUPPORTED_FORMAT_VERSIONS.contains(&self.format_version) {
            return bad(format!(
                "format_version {} is not supported (supported: {:?})",
                self.format_version, SUPPORTED_FORMAT_VERSIONS
            ));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "name {:?} must be non-empty and use only [A-Za-z0-9._-] (it appears in URLs)",
                self.name
            ));
        }
        if self.labels.is_empty() {
            return bad("labels is empty".into());
        }
        if self.input.channels != 3 {
            return bad(format!(
                "input.channels is {}, expected 3",
                self.input.channels
            ));
        }
        if self.input.height == 0 || self.input.width == 0 {
            return bad("input height and width must be positive".into());
        }
        if self.input.std.iter().any(|s| *s <= 0.0) {
            return bad("input.std must be positive".into());
        }
        if self.time.steps == 0 || self.time.image_on_steps > self.time.steps {
            return bad(format!(
                "time.steps={} and time.image_on_steps={} are inconsistent",
                self.time.steps, self.time.image_on_steps
            ));
        }
        if !self.time.step_ms.is_finite() || self.time.step_ms <= 0.0 {
            return bad("time.step_ms must be positive".into());
        }
        let mut seen = std::collections::HashSet::new();
        for layer in &self.layers {
            if layer.name == "logits" || layer.name == "frames" || !seen.insert(&layer.name) {
                return bad(format!(
                    "layer name {:?} is reserved or repeated",
                    layer.name
                ));
            }
        }
        match self.readout.rule.as_str() {
            "last" => {}
            "max_conf" => {}
            "threshold" => {
                if self.readout.threshold.is_none() {
                    return bad("readout.rule=threshold needs readout.threshold".into());
                }
            }
            other => return bad(format!("unknown readout.rule {other:?}")),
        }
        Ok(())
    }

    pub fn layer(&self, name: &str) -> Option<&LayerSpec> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// First step at which the logits depend on the image (the readout is one edge after the
    /// deepest layer in the biological unroll).
    pub fn readout_first_driven_step(&self) -> usize {
        self.readout.first_driven_step.unwrap_or_else(|| {
            self.layers
                .iter()
                .map(|l| l.first_driven_step + 1)
                .max()
                .unwrap_or(0)
                .min(self.time.steps.saturating_sub(1))
        })
    }

    /// Number of float32 values in one frame (C*H*W).
    pub fn frame_len(&self) -> usize {
        self.input.channels * self.input.height as usize * self.input.width as usize
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_json() -> String {
        serde_json::json!({
            "format_version": 1,
            "name": "tiny",
            "architecture": "test",
            "labels": ["a", "b", "c"],
            "input": {"channels": 3, "height": 8, "width": 8,
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "time": {"steps": 4, "step_ms": 10, "image_on_steps": 3, "blank_value": 0.5},
            "layers": [
                {"name": "conv1", "channels": 2, "height": 4, "width": 4, "first_driven_step": 0},
                {"name": "conv2", "channels": 2, "height": 2, "width": 2, "first_driven_step": 1}
            ],
            "readout": {"rule": "last"}
        })
        .to_string()
    }

    #[test]
    fn parses_the_contract_example() {
        let m = ModelMetadata::from_json(&sample_json()).unwrap();
        assert_eq!(m.name, "tiny");
        assert_eq!(m.frame_len(), 3 * 8 * 8);
        assert_eq!(m.readout_first_driven_step(), 2);
        assert_eq!(m.input.resize, "shorter-side-then-center-crop");
    }

    #[test]
    fn rejects_inconsistent_metadata() {
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["time"]["image_on_steps"] = 9.into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["name"] = "has space".into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["format_version"] = 2.into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["readout"]["rule"] = "vote".into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
    }
}
