//! The seam between the engine and an inference runtime: "run this batch of movies and give me
//! these outputs". The engine is written against [`Backend`] so it can be tested with a fake; the
//! real implementation is ONNX Runtime ([`ort`](self::ort)).

pub mod heap;
pub mod ort;

use std::fmt;

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(i32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

/// One output of a batched run, batch-first, so each item's slice is one contiguous block.
#[derive(Debug, Clone)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl OutputTensor {
    /// Elements per batch item.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The slice belonging to batch item `index`.
    pub fn item(&self, index: usize) -> &[f32] {
        let n = self.item_len();
        &self.data[index * n..(index + 1) * n]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("ONNX Runtime library: {0}")]
    Library(String),
    #[error("could not create a session for {model} on {device}: {msg}")]
    Session {
        model: String,
        device: Device,
        msg: String,
    },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the runtime returned an unexpected output: {0}")]
    Output(String),
}

/// What a batch's movies are known to show, so that a backend may run a graph specialised to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every movie shows one image for the model's `image_on_steps`, then blank frames: the
    /// graph of [`crate::model::held`] computes each run of equal frames once.
    Default,
    /// Anything else: the file's own graph.
    Other,
}

/// A loaded model on one device. Owned by exactly one worker thread: ONNX Runtime's `Run` is not
/// meant to be called concurrently on one session from our side, and owning it avoids a lock.
pub trait Backend: Send {
    /// Runs `batch` movies laid out as `[batch, T, C, H, W]` in `frames`, all of which follow
    /// `schedule`, returning the named outputs.
    fn run(
        &mut self,
        frames: &[f32],
        batch: usize,
        schedule: Schedule,
        outputs: &[String],
    ) -> Result<Vec<OutputTensor>, BackendError>;

    fn device(&self) -> Device;

    /// Whether logits-only runs go to a graph of their own, which then needs its own warm-up.
    fn has_logits_graph(&self) -> bool {
        false
    }

    /// Whether default-schedule runs go to a graph of their own ([`Schedule::Default`]).
    fn has_held_graph(&self) -> bool {
        false
    }

    /// Whether movies of any schedule can run, or only default-schedule ones.
    fn runs_other_schedules(&self) -> bool {
        true
    }
}
