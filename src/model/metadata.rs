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

/// Visual angle of the input when the metadata gives none: Brain-Score's default for models
/// that do not state theirs.
pub const DEFAULT_VISUAL_DEGREES: f64 = 8.0;

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
    /// Degrees of visual angle the input image spans (optional; see `visual_degrees()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visual_degrees: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InputSpec {
    pub channels: usize,
    pub height: u32,
    pub width: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    #[serde(default)]
    pub resize: ResizePolicy,
    #[serde(default)]
    pub grayscale: GrayscalePolicy,
    /// With `shorter-side-then-center-crop`: the shorter side is scaled to this many pixels
    /// before the centre `width x height` is cut out (ImageNet's 256 then 224); absent: to the
    /// input size itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_shorter_side: Option<u32>,
}

/// How a decoded image is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResizePolicy {
    /// Scale (preserving aspect ratio) so the image just covers `width x height` (for a square
    /// target, the shorter side becomes the target size), then cut out the centre.
    #[default]
    ShorterSideThenCenterCrop,
    /// Scale each axis independently to `width x height` (distorts the aspect ratio).
    Stretch,
}

/// How a one-channel image becomes the model's three channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GrayscalePolicy {
    /// Copy the gray value into R, G and B.
    #[default]
    Replicate,
}

/// The metadata spelling, as `inspect` prints it.
impl std::fmt::Display for ResizePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ShorterSideThenCenterCrop => "shorter-side-then-center-crop",
            Self::Stretch => "stretch",
        })
    }
}

impl std::fmt::Display for GrayscalePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Replicate => "replicate",
        })
    }
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
    /// Later layers whose previous-step output this layer receives as long-range feedback,
    /// in the order their channels are concatenated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback_from: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadoutSpec {
    pub rule: ReadoutRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// First step at which the readout depends on the image; defaults to the last layer's + 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_driven_step: Option<usize>,
    /// First step the `max_conf` and `threshold` rules consider, when it is later than the
    /// first driven step (the authors' decoders start at the number of layers); the export
    /// writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step: Option<usize>,
}

/// Which timestep's logits answer "what is it" ([`crate::model::readout::readout_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadoutRule {
    /// The last step.
    Last,
    /// The most confident step from the readout's first driven step on.
    MaxConf,
    /// The first step whose top probability reaches `threshold`.
    Threshold,
}

impl std::fmt::Display for ReadoutRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Last => "last",
            Self::MaxConf => "max_conf",
            Self::Threshold => "threshold",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("the file has no `{METADATA_KEY}` metadata entry")]
    Missing,
    #[error("the `{METADATA_KEY}` metadata does not fit the contract: {0}")]
    Json(#[from] serde_path_to_error::Error<serde_json::Error>),
    #[error("invalid metadata: {0}")]
    Invalid(String),
}

impl ModelMetadata {
    pub fn from_json(text: &str) -> Result<Self, MetadataError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let meta: ModelMetadata = serde_path_to_error::deserialize(&mut de)?;
        de.end()
            .map_err(|e| MetadataError::Invalid(format!("trailing text after the JSON: {e}")))?;
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
        // The preprocessing every request will run, checked once here.
        crate::image::Preprocess::for_input(&self.input)
            .validate()
            .or_else(|e| bad(format!("input: {e}")))?;
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
        if let Some(v) = self.visual_degrees {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!("visual_degrees must be positive, not {v}"));
            }
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
        for (at, layer) in self.layers.iter().enumerate() {
            for source in &layer.feedback_from {
                match self.layers.iter().position(|l| &l.name == source) {
                    Some(from) if from > at => {}
                    Some(_) => {
                        return bad(format!(
                            "layer {:?}: feedback_from {source:?} is not a later layer",
                            layer.name
                        ))
                    }
                    None => {
                        return bad(format!(
                            "layer {:?}: feedback_from names no layer: {source:?}",
                            layer.name
                        ))
                    }
                }
            }
        }
        if self.readout.rule == ReadoutRule::Threshold && self.readout.threshold.is_none() {
            return bad("readout.rule=threshold needs readout.threshold".into());
        }
        Ok(())
    }

    /// Degrees of visual angle the input spans, [`DEFAULT_VISUAL_DEGREES`] when not given.
    pub fn visual_degrees(&self) -> f64 {
        self.visual_degrees.unwrap_or(DEFAULT_VISUAL_DEGREES)
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
        assert_eq!(m.input.resize, ResizePolicy::ShorterSideThenCenterCrop);
        assert_eq!(m.input.grayscale, GrayscalePolicy::Replicate);
        assert_eq!(m.readout.rule, ReadoutRule::Last);
    }

    #[test]
    fn feedback_edges_are_kept_and_must_come_from_a_later_layer() {
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["layers"][0]["feedback_from"] = serde_json::json!(["conv2"]);
        let m = ModelMetadata::from_json(&v.to_string()).unwrap();
        assert_eq!(m.layers[0].feedback_from, ["conv2"]);
        assert!(m.layers[1].feedback_from.is_empty());
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(
            back["layers"][0]["feedback_from"],
            serde_json::json!(["conv2"])
        );
        assert!(back["layers"][1].get("feedback_from").is_none());
        for (layer, source, says) in [
            (1, "conv1", "is not a later layer"),
            (1, "conv2", "is not a later layer"),
            (0, "conv9", "names no layer"),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
            v["layers"][layer]["feedback_from"] = serde_json::json!([source]);
            let err = ModelMetadata::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says) && err.contains(source), "{err}");
        }
    }

    #[test]
    fn policies_are_parsed_at_load_and_keep_their_spelling() {
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["input"]["resize"] = "stretch".into();
        v["readout"] = serde_json::json!({"rule": "max_conf", "beta": 2.0});
        let m = ModelMetadata::from_json(&v.to_string()).unwrap();
        assert_eq!(m.input.resize, ResizePolicy::Stretch);
        assert_eq!(m.readout.rule, ReadoutRule::MaxConf);
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["input"]["resize"], "stretch");
        assert_eq!(back["input"]["grayscale"], "replicate");
        assert_eq!(back["readout"]["rule"], "max_conf");
        assert_eq!(m.input.resize.to_string(), "stretch");
        // A bad value is a load error naming the field, not a 500 on every request.
        for (field, value) in [("resize", "crop"), ("grayscale", "luma")] {
            let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
            v["input"][field] = value.into();
            let err = ModelMetadata::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains("input.") && err.contains(value), "{err}");
        }
    }

    #[test]
    fn visual_degrees_is_optional_with_a_default() {
        let m = ModelMetadata::from_json(&sample_json()).unwrap();
        assert_eq!(m.visual_degrees(), DEFAULT_VISUAL_DEGREES);
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["visual_degrees"] = 4.5.into();
        assert_eq!(
            ModelMetadata::from_json(&v.to_string())
                .unwrap()
                .visual_degrees(),
            4.5
        );
        for bad in [0.0, -3.0] {
            v["visual_degrees"] = bad.into();
            assert!(ModelMetadata::from_json(&v.to_string()).is_err());
        }
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
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["input"]["channels"] = 1.into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&sample_json()).unwrap();
        v["input"]["width"] = 100_000.into();
        v["input"]["height"] = 100_000.into();
        assert!(ModelMetadata::from_json(&v.to_string()).is_err());
    }
}
