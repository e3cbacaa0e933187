//! `convrnn-serve extract`: time-resolved features of a whole stimulus set, written to one
//! pre-sized `.npy` file per layer (`[stimuli, time, C(, H, W)]`, rows written in place) plus a
//! `manifest.json`, in-process on a model file or through a running server.
//!
//! - [`args`]: the command line; [`stimuli`]: the input listing; [`plan`]: shapes and the time
//!   axis, fixed up front; [`reduce`]: one stimulus's output to one row (pooling, time bins).
//! - [`local`] and [`remote`]: where the features come from (the engine in this process, or
//!   `/v1/models/{m}/activations` of a server); [`npz_read`] parses the server's answers.
//! - [`writer`]: the `.npy` files; [`outdir`]: the plan and the per-shard progress logs that make
//!   `--resume` and `--shard` work; [`manifest`]; [`disk`]: the free-space check.
//! - [`runner`]: batches in flight, progress bar, and the order of writes that makes an
//!   interruption lose at most the batches in flight.

pub mod args;
pub mod disk;
pub mod local;
pub mod manifest;
pub mod npz_read;
pub mod outdir;
pub mod plan;
pub mod reduce;
pub mod remote;
pub mod runner;
pub mod stimuli;
pub mod writer;

pub use args::ExtractArgs;
pub use runner::run;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A bad flag or a selection the model does not have.
    #[error("{0}")]
    Usage(String),
    /// The stimulus list cannot be read.
    #[error("{0}")]
    Input(String),
    /// The output directory holds something else, or cannot be written.
    #[error("{0}")]
    Output(String),
    /// The predicted output does not fit on the disk.
    #[error("{0}")]
    DiskFull(String),
    /// An image failed under --strict.
    #[error("{0}")]
    Image(String),
    /// The model could not be loaded or run.
    #[error("{0}")]
    Model(String),
    /// The server failed or answered something unusable.
    #[error("{0}")]
    Server(String),
    #[error("{0}")]
    Internal(String),
}

/// An I/O error on `path` as an output error, with disk-full spelled out.
pub(crate) fn output_io(path: &std::path::Path, e: std::io::Error) -> ExtractError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        ExtractError::DiskFull(format!(
            "{}: the disk is full; free space and rerun with --resume",
            path.display()
        ))
    } else {
        ExtractError::Output(format!("{}: {e}", path.display()))
    }
}
