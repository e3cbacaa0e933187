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
    /// Writes the movie `[T, C, H, W]` into `out` (which has exactly that length), every value of
    /// it: the worker reuses its input buffer without clearing it. Steps past the schedule are
    /// blank.
    pub fn write_movie(&self, out: &mut [f32], frame_len: usize, blank_value: f32) {
        for (t, dst) in out.chunks_mut(frame_len).enumerate() {
            match self.schedule.get(t) {
                Some(FrameSource::Frame(i)) => dst.copy_from_slice(&self.frames[*i]),
                Some(FrameSource::Blank) | None => dst.fill(blank_value),
            }
        }
    }

    /// Whether this movie is one image for the first `image_on_steps` of `steps` steps and blank
    /// after: the default schedule, which runs on a graph specialised to it
    /// ([`crate::backend::Schedule::Default`]).
    pub fn follows_default_schedule(&self, steps: usize, image_on_steps: usize) -> bool {
        !self.frames.is_empty()
            && (0..steps).all(|t| match self.schedule.get(t) {
                Some(FrameSource::Frame(0)) => t < image_on_steps,
                Some(FrameSource::Frame(_)) => false,
                Some(FrameSource::Blank) | None => t >= image_on_steps,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The worker reuses its input buffer between batches without clearing it, so every value
    /// must be written, whatever was there before.
    #[test]
    fn write_movie_overwrites_a_dirty_buffer() {
        let frame_len = 3;
        let stimulus = Stimulus {
            frames: vec![Arc::new(vec![1.0, 2.0, 3.0]), Arc::new(vec![4.0, 5.0, 6.0])],
            schedule: vec![
                FrameSource::Frame(1),
                FrameSource::Blank,
                FrameSource::Frame(0),
            ],
        };
        let mut out = vec![f32::NAN; 4 * frame_len];
        stimulus.write_movie(&mut out, frame_len, -0.5);
        assert_eq!(
            out,
            [4.0, 5.0, 6.0, -0.5, -0.5, -0.5, 1.0, 2.0, 3.0, -0.5, -0.5, -0.5],
            "steps past the schedule are blank"
        );
    }

    #[test]
    fn the_default_schedule_is_recognised_however_it_is_spelled() {
        let frame = || Arc::new(vec![0.0; 3]);
        let movie = |frames: usize, schedule: &[FrameSource]| Stimulus {
            frames: (0..frames).map(|_| frame()).collect(),
            schedule: schedule.to_vec(),
        };
        use FrameSource::{Blank, Frame};
        // 4 steps, image on for 2.
        let default = |s: &Stimulus| s.follows_default_schedule(4, 2);
        assert!(default(&movie(1, &[Frame(0), Frame(0)])));
        assert!(default(&movie(1, &[Frame(0), Frame(0), Blank, Blank])));
        assert!(default(&movie(2, &[Frame(0), Frame(0)])), "an unused frame");
        assert!(!default(&movie(1, &[Frame(0)])), "on for 1 step");
        assert!(
            !default(&movie(1, &[Frame(0), Frame(0), Frame(0)])),
            "on for 3"
        );
        assert!(!default(&movie(2, &[Frame(0), Frame(1)])), "a second image");
        assert!(!default(&movie(1, &[Blank, Frame(0)])), "shown late");
        assert!(!default(&movie(0, &[Blank, Blank])), "no image");
        assert!(!default(&movie(0, &[])), "no image");
        assert!(!default(&movie(2, &[Frame(1), Frame(1)])), "not frame 0");
    }
}
