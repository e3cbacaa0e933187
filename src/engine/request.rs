//! What travels through the engine: a stimulus (the movie one batch row will show the model),
//! the outputs its request wants, and the reply channel.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::EngineError;
use crate::backend::OutputTensor;
use crate::model::only_logits;

/// One preprocessed frame, `C*H*W` values in the model's normalised space.
pub type Frame = Arc<Vec<f32>>;

/// What the model sees at one timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSource {
    /// `Stimulus::frames[i]`.
    Frame(usize),
    /// Every element equals the model's `blank_value`.
    Blank,
}

/// One row of a batch: the distinct frames and, per timestep, which of them is shown.
/// Keeping frames once (not T copies) bounds queued memory at one image per stimulus.
#[derive(Debug, Clone)]
pub struct Stimulus {
    pub frames: Vec<Frame>,
    pub schedule: Vec<FrameSource>,
}

impl Stimulus {
    /// Writes the movie `[T, C, H, W]` into `out` (which has exactly that length).
    pub fn write_movie(&self, out: &mut [f32], frame_len: usize, blank_value: f32) {
        for (t, source) in self.schedule.iter().enumerate() {
            let dst = &mut out[t * frame_len..(t + 1) * frame_len];
            match source {
                FrameSource::Frame(i) => dst.copy_from_slice(&self.frames[*i]),
                FrameSource::Blank => dst.fill(blank_value),
            }
        }
    }
}

/// Timings of one item, reported back to the client in headers and to metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ItemTimings {
    pub queue_secs: f64,
    pub inference_secs: f64,
    pub batch_size: usize,
}

/// A finished item: a view into the batch's outputs, shared without copying.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub outputs: Arc<Vec<OutputTensor>>,
    pub index: usize,
    pub timings: ItemTimings,
    pub device: String,
    /// Which worker ran it (`device#index`), so spreading over sessions is observable.
    pub worker: String,
}

impl ItemResult {
    /// This item's slice of the named output (`[T, ...]` flattened).
    pub fn output(&self, name: &str) -> Option<&[f32]> {
        self.outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.item(self.index))
    }
}

pub(crate) struct WorkItem {
    pub stimulus: Stimulus,
    pub outputs: Arc<[String]>,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<ItemResult, EngineError>>,
}

impl WorkItem {
    /// Whether this item wants nothing but the logits, which a backend may compute on a graph
    /// pruned to them (`model::prune`); batches never mix the two kinds.
    pub fn logits_only(&self) -> bool {
        only_logits(&self.outputs)
    }
}
