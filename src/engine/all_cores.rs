//! Adaptive CPU threading (`--cpu-thread-pool adaptive`): each CPU worker owns a session on its
//! share of the cores, and each model also gets one session on *every* core, which a worker
//! borrows for a batch that would otherwise run alone.
//!
//! Why: on a CPU, latency at low load wants all cores on one request, while saturated throughput
//! wants one narrow session per core (no hand-offs between pool threads). No fixed layout gives
//! both (docs/performance.md, "Threading"); choosing per batch does. Whether the all-cores
//! session is faster at all is timed at start-up: for tiny models the pool's hand-offs cost more
//! than the extra core gives, and the session is dropped again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError, Schedule};
use crate::model::{ModelInfo, LOGITS_NAME};

/// Which threads a session is built for: the worker's share of the cores, or all of them (the
/// model's all-cores session). Ignored for CUDA sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Share,
    AllCores,
}

/// CPU runs in progress over every model and worker of the engine.
#[derive(Default)]
pub(crate) struct CpuRuns(AtomicUsize);

impl CpuRuns {
    /// Marks a run as started until the guard drops; the guard says whether it started alone.
    pub fn start(&self) -> CpuRun<'_> {
        let before = self.0.fetch_add(1, Ordering::SeqCst);
        CpuRun {
            runs: self,
            alone: before == 0,
        }
    }
}

pub(crate) struct CpuRun<'a> {
    runs: &'a CpuRuns,
    pub alone: bool,
}

impl Drop for CpuRun<'_> {
    fn drop(&mut self) {
        self.runs.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A model's all-cores session, shared by its CPU workers. Empty until the first CPU worker has
/// built and calibrated it, and for good if calibration found it no faster.
#[derive(Default)]
pub(crate) struct AllCoresSession(Mutex<Option<Box<dyn Backend>>>);

impl AllCoresSession {
    pub fn install(&self, backend: Box<dyn Backend>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(backend);
    }

    /// Drops the session (after it panicked); later batches run on the workers' own sessions.
    pub fn remove(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// The session, if there is one and no other worker holds it.
    pub fn try_borrow(&self) -> Option<MutexGuard<'_, Option<Box<dyn Backend>>>> {
        let guard = match self.0.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        guard.is_some().then_some(guard)
    }
}

/// Batch-1 times of a worker's own session and of the all-cores one, best of a few interleaved
/// runs (interleaved so that whatever else the machine does hits both alike).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Calibration {
    pub share: Duration,
    pub all_cores: Duration,
}

impl Calibration {
    /// Keep the all-cores session only if it is clearly faster: a marginal gain is not worth its
    /// memory, and a wrong "yes" on a noisy start-up would slow every lone request down.
    pub fn keep_all_cores(&self) -> bool {
        self.all_cores.as_secs_f64() < 0.85 * self.share.as_secs_f64()
    }
}

pub(crate) fn calibrate(
    share: &mut dyn Backend,
    all_cores: &mut dyn Backend,
    info: &ModelInfo,
) -> Result<Calibration, BackendError> {
    let m = &info.metadata;
    let frames = vec![m.time.blank_value; m.time.steps * m.frame_len()];
    let outputs = [LOGITS_NAME.to_string()];
    let time = |b: &mut dyn Backend| -> Result<Duration, BackendError> {
        let started = Instant::now();
        // Blank frames are a default-schedule movie: the kind most batches are.
        b.run(&frames, 1, Schedule::Default, &outputs)?;
        Ok(started.elapsed())
    };
    let first = time(share)?;
    let mut best = Calibration {
        share: first,
        all_cores: time(all_cores)?,
    };
    // Slow models get fewer rounds: two runs of a second each already tell them apart.
    let rounds = if first > Duration::from_millis(100) {
        2
    } else {
        6
    };
    for _ in 1..rounds {
        best.share = best.share.min(time(share)?);
        best.all_cores = best.all_cores.min(time(all_cores)?);
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_concurrent_run_is_alone() {
        let runs = CpuRuns::default();
        let a = runs.start();
        assert!(a.alone);
        {
            let b = runs.start();
            assert!(!b.alone);
        }
        assert!(!runs.start().alone, "a is still running");
        drop(a);
        assert!(runs.start().alone);
    }

    #[test]
    fn keeps_the_all_cores_session_only_when_clearly_faster() {
        let c = |share, all| Calibration {
            share: Duration::from_millis(share),
            all_cores: Duration::from_millis(all),
        };
        assert!(c(1000, 620).keep_all_cores());
        assert!(!c(1000, 900).keep_all_cores());
        assert!(!c(2, 3).keep_all_cores());
    }

    #[test]
    fn an_empty_or_busy_session_is_not_lent() {
        let s = AllCoresSession::default();
        assert!(s.try_borrow().is_none(), "nothing installed");
        struct Nop;
        impl Backend for Nop {
            fn run(
                &mut self,
                _: &[f32],
                _: usize,
                _: crate::backend::Schedule,
                _: &[String],
            ) -> Result<Vec<crate::backend::OutputTensor>, BackendError> {
                Ok(vec![])
            }
            fn device(&self) -> crate::backend::Device {
                crate::backend::Device::Cpu
            }
        }
        s.install(Box::new(Nop));
        let held = s.try_borrow();
        assert!(held.is_some());
        assert!(s.try_borrow().is_none(), "another worker holds it");
        drop(held);
        assert!(s.try_borrow().is_some());
    }
}
