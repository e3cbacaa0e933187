//! What an extraction produces, fixed before the first image is read: the rows, the layers and
//! their output shapes, the time axis, pooling, dtype, and what the model was. Every shard of a
//! run computes the same plan and checks it against the one in the output directory.

use serde::{Deserialize, Serialize};

use super::args::{parse_time_bins, Dtype, ExtractArgs, SpatialPool};
use super::stimuli::StimulusEntry;
use super::ExtractError;
use crate::model::metadata::ModelMetadata;
use crate::model::LOGITS_NAME;

/// Identifies the file layout; bumped when a reader would have to change.
pub const FORMAT: &str = "convrnn-extract/1";

/// One entry of the time axis: a single step (`--steps`) or the average of the steps whose start
/// lies in `[start_ms, end_ms)` (`--time-bins`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeBin {
    pub start_ms: f64,
    pub end_ms: f64,
    pub steps: Vec<usize>,
}

/// One output file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerPlan {
    pub name: String,
    /// File name inside the output directory.
    pub file: String,
    /// `[stimuli, time, C(, H, W)]`.
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    /// Axis names of `shape`.
    pub dims: Vec<String>,
    pub region: Option<String>,
    pub channels: usize,
    /// Spatial size in the file (after pooling); absent when space is pooled away.
    pub height: Option<usize>,
    pub width: Option<usize>,
    /// The layer's own map size in the model.
    pub model_height: Option<usize>,
    pub model_width: Option<usize>,
    /// First step whose output depends on the image.
    pub first_driven_step: usize,
}

impl LayerPlan {
    /// Values of one stimulus (one row).
    pub fn row_values(&self) -> usize {
        self.shape[1..].iter().product()
    }

    pub fn row_bytes(&self) -> u64 {
        (self.row_values() * self.dtype.size()) as u64
    }

    /// Values of one time bin of one row.
    pub fn bin_values(&self) -> usize {
        self.shape[2..].iter().product()
    }

    pub fn is_logits(&self) -> bool {
        self.name == LOGITS_NAME
    }
}

/// The model as the plan records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    pub architecture: String,
    /// sha256 of the `.onnx` file: of the file itself in-process, as the server reports it with
    /// --server (null if it does not).
    pub weights_sha256: Option<String>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub model: ModelRecord,
    pub stimulus_ids: Vec<String>,
    pub stimulus_paths: Vec<String>,
    /// `steps` (one entry per step) or `bins` (averaged time bins).
    pub time_axis: String,
    pub time_bins: Vec<TimeBin>,
    /// Duration of one model step in ms.
    pub step_ms: f64,
    pub pool: SpatialPool,
    pub dtype: Dtype,
    /// How images become model input, and the presentation schedule.
    pub preprocessing: serde_json::Value,
    pub layers: Vec<LayerPlan>,
}

impl Plan {
    /// Every step the time axis needs, ascending.
    pub fn needed_steps(&self) -> Vec<usize> {
        let mut steps: Vec<usize> = self
            .time_bins
            .iter()
            .flat_map(|b| b.steps.iter().copied())
            .collect();
        steps.sort_unstable();
        steps.dedup();
        steps
    }

    pub fn rows(&self) -> usize {
        self.stimulus_ids.len()
    }

    /// Bytes of all `.npy` payloads for `rows` rows.
    pub fn bytes_for_rows(&self, rows: usize) -> u64 {
        self.layers
            .iter()
            .map(|l| l.row_bytes() * rows as u64)
            .sum()
    }

    pub fn stimuli(&self) -> impl Iterator<Item = StimulusEntry> + '_ {
        self.stimulus_ids
            .iter()
            .zip(&self.stimulus_paths)
            .map(|(id, p)| StimulusEntry {
                id: id.clone(),
                path: p.into(),
            })
    }
}

fn bad(msg: impl Into<String>) -> ExtractError {
    ExtractError::Usage(msg.into())
}

/// The layers `--layers` or `--regions` select, in metadata order for regions.
pub fn select_layers(
    args: &ExtractArgs,
    meta: &ModelMetadata,
) -> Result<Vec<String>, ExtractError> {
    if let Some(regions) = &args.regions {
        let mut out = Vec::new();
        for region in regions.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let matching: Vec<&str> = meta
                .layers
                .iter()
                .filter(|l| {
                    l.region
                        .as_deref()
                        .is_some_and(|r| r.eq_ignore_ascii_case(region))
                })
                .map(|l| l.name.as_str())
                .collect();
            if matching.is_empty() {
                let mut known: Vec<&str> = meta
                    .layers
                    .iter()
                    .filter_map(|l| l.region.as_deref())
                    .collect();
                known.dedup();
                return Err(bad(format!(
                    "--regions: model {:?} maps no layer to {region:?} (its regions: {})",
                    meta.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            out.extend(matching.into_iter().map(String::from));
        }
        // Keep metadata order and drop repeats.
        let ordered: Vec<String> = meta
            .layers
            .iter()
            .map(|l| l.name.clone())
            .filter(|n| out.contains(n))
            .collect();
        return Ok(ordered);
    }
    crate::api::selection::parse_layers(args.layers.as_deref(), meta)
        .map_err(|e| bad(format!("--layers: {e}")))
}

/// The time axis from `--steps` or `--time-bins`.
pub fn time_bins(
    args: &ExtractArgs,
    meta: &ModelMetadata,
) -> Result<(String, Vec<TimeBin>), ExtractError> {
    let t = &meta.time;
    if let Some(spec) = &args.time_bins {
        let bins = parse_time_bins(spec).map_err(bad)?;
        let out = bins
            .into_iter()
            .map(|(a, b)| {
                let steps: Vec<usize> = (0..t.steps)
                    .filter(|&s| {
                        let start = s as f64 * t.step_ms;
                        start >= a && start < b
                    })
                    .collect();
                if steps.is_empty() {
                    return Err(bad(format!(
                        "--time-bins: {a}:{b} ms holds no step (steps start every {} ms from 0 to {} ms)",
                        t.step_ms,
                        (t.steps - 1) as f64 * t.step_ms
                    )));
                }
                Ok(TimeBin { start_ms: a, end_ms: b, steps })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(("bins".into(), out));
    }
    let steps = crate::api::selection::parse_steps(args.steps.as_deref().unwrap_or("all"), t.steps)
        .map_err(|e| bad(format!("--steps: {e}")))?;
    let bins = steps
        .into_iter()
        .map(|s| TimeBin {
            start_ms: s as f64 * t.step_ms,
            end_ms: (s + 1) as f64 * t.step_ms,
            steps: vec![s],
        })
        .collect();
    Ok(("steps".into(), bins))
}

/// The output shape of one layer: `[rows, bins, ...]`.
fn layer_plan(
    name: &str,
    meta: &ModelMetadata,
    rows: usize,
    bins: usize,
    pool: SpatialPool,
    dtype: Dtype,
) -> Result<LayerPlan, ExtractError> {
    let mut dims = vec!["stimulus".to_string(), "time".to_string()];
    if name == LOGITS_NAME {
        dims.push("class".into());
        return Ok(LayerPlan {
            name: name.into(),
            file: format!("{name}.npy"),
            shape: vec![rows, bins, meta.labels.len()],
            dtype,
            dims,
            region: None,
            channels: meta.labels.len(),
            height: None,
            width: None,
            model_height: None,
            model_width: None,
            first_driven_step: meta.readout_first_driven_step(),
        });
    }
    let l = meta
        .layer(name)
        .ok_or_else(|| bad(format!("no layer {name:?}")))?;
    let (h, w) = match pool {
        SpatialPool::None => (Some(l.height), Some(l.width)),
        SpatialPool::Mean | SpatialPool::Max => (None, None),
        SpatialPool::Avg(k) => {
            let (gh, gw) = crate::pool::avg_grid(l.height, l.width, k);
            (Some(gh), Some(gw))
        }
    };
    dims.push("channel".into());
    let mut shape = vec![rows, bins, l.channels];
    if let (Some(h), Some(w)) = (h, w) {
        shape.extend([h, w]);
        dims.extend(["y".to_string(), "x".to_string()]);
    }
    Ok(LayerPlan {
        name: name.into(),
        file: format!("{name}.npy"),
        shape,
        dtype,
        dims,
        region: l.region.clone(),
        channels: l.channels,
        height: h,
        width: w,
        model_height: Some(l.height),
        model_width: Some(l.width),
        first_driven_step: l.first_driven_step,
    })
}

/// Builds the plan for `stimuli` on a model described by `meta`.
pub fn build(
    args: &ExtractArgs,
    meta: &ModelMetadata,
    weights_sha256: Option<String>,
    stimuli: &[StimulusEntry],
) -> Result<Plan, ExtractError> {
    let layers = select_layers(args, meta)?;
    if layers.is_empty() {
        return Err(bad("no layers selected"));
    }
    let (time_axis, bins) = time_bins(args, meta)?;
    let layers = layers
        .iter()
        .map(|n| layer_plan(n, meta, stimuli.len(), bins.len(), args.pool, args.dtype))
        .collect::<Result<Vec<_>, _>>()?;
    let input = &meta.input;
    let preprocessing = serde_json::json!({
        "channels": input.channels,
        "height": input.height,
        "width": input.width,
        "mean": input.mean,
        "std": input.std,
        "resize": input.resize,
        "resize_filter": crate::image::RESIZE_FILTER_DOC,
        "grayscale": input.grayscale,
        "exif_orientation": "applied",
        "presentation": {
            "kind": "default",
            "image_on_steps": meta.time.image_on_steps,
            "steps": meta.time.steps,
            "step_ms": meta.time.step_ms,
            "blank_value": meta.time.blank_value,
        },
    });
    Ok(Plan {
        format: FORMAT.into(),
        model: ModelRecord {
            name: meta.name.clone(),
            architecture: meta.architecture.clone(),
            weights_sha256,
            metadata: serde_json::to_value(meta)
                .map_err(|e| ExtractError::Internal(e.to_string()))?,
        },
        stimulus_ids: stimuli.iter().map(|s| s.id.clone()).collect(),
        stimulus_paths: stimuli
            .iter()
            .map(|s| s.path.display().to_string())
            .collect(),
        time_axis,
        time_bins: bins,
        step_ms: meta.time.step_ms,
        pool: args.pool,
        dtype: args.dtype,
        preprocessing,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn meta() -> ModelMetadata {
        let mut v: serde_json::Value =
            serde_json::from_str(&crate::model::metadata::tests::sample_json()).unwrap();
        v["layers"][1]["region"] = "V4".into();
        ModelMetadata::from_json(&v.to_string()).unwrap()
    }

    fn args(extra: &[&str]) -> ExtractArgs {
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            a: ExtractArgs,
        }
        let base = ["x", "--model", "m", "--images", "i", "--out", "o"];
        W::parse_from(base.iter().chain(extra)).a
    }

    fn plan(extra: &[&str]) -> Result<Plan, ExtractError> {
        let stimuli = vec![
            StimulusEntry {
                id: "s".into(),
                path: "s.png".into()
            };
            3
        ];
        build(&args(extra), &meta(), None, &stimuli)
    }

    #[test]
    fn shapes_regions_and_bins() {
        let p = plan(&["--pool", "avg2", "--time-bins", "0:15,15:40"]).unwrap();
        assert_eq!(p.layers[0].shape, vec![3, 2, 2, 2, 2]);
        assert_eq!(p.layers[1].shape, vec![3, 2, 2, 2, 2]);
        assert_eq!(p.time_bins[0].steps, vec![0, 1]);
        assert_eq!(p.time_bins[1].steps, vec![2, 3]);
        assert_eq!(p.needed_steps(), vec![0, 1, 2, 3]);
        let p = plan(&[
            "--regions",
            "v4",
            "--steps",
            "3,1",
            "--pool",
            "max",
            "--dtype",
            "f16",
        ])
        .unwrap();
        assert_eq!(p.layers.len(), 1);
        assert_eq!(
            (p.layers[0].name.as_str(), p.layers[0].shape.clone()),
            ("conv2", vec![3, 2, 2])
        );
        assert_eq!(p.layers[0].row_bytes(), 2 * 2 * 2);
        assert_eq!(
            (p.time_bins[0].start_ms, p.time_bins[0].end_ms),
            (30.0, 40.0)
        );
        assert_eq!(p.needed_steps(), vec![1, 3]);
        let p = plan(&["--layers", "logits", "--pool", "mean"]).unwrap();
        assert_eq!(p.layers[0].shape, vec![3, 4, 3]);
        assert_eq!(p.bytes_for_rows(2), 2 * 4 * 3 * 4);
    }

    #[test]
    fn selections_the_model_lacks_are_refused() {
        for (extra, needle) in [
            (
                &["--regions", "IT"][..],
                "maps no layer to \"IT\" (its regions: V4)",
            ),
            (&["--layers", "conv9"][..], "conv9"),
            (&["--time-bins", "100:200"][..], "holds no step"),
            (&["--steps", "7"][..], "out of range"),
        ] {
            let err = plan(extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    }
}
