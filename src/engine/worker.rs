//! A device worker: one OS thread that owns one backend session, warms it up, then pulls
//! batches from its model's queue until the queue closes.
//!
//! A session run that returns an error fails that batch's requests and the worker carries on. A
//! panic (in the runtime or in our own code) is caught: the batch it hit is answered with an
//! error, the worker counts as not ready (so `/health/ready` says so), drops the session and
//! builds and warms a fresh one, retrying with a backoff until it succeeds or the queue closes.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::all_cores::{calibrate, AllCoresSession, CpuRuns, Width};
use super::queue::BatchQueue;
use super::request::{ItemResult, ItemTimings, WorkItem};
use super::EngineError;
use crate::backend::{Backend, BackendError, Device, Schedule};
use crate::metrics::Metrics;
use crate::model::{ModelInfo, LOGITS_NAME};

/// Creates the backend on the worker's own thread (sessions are built where they will live).
pub type BackendFactory =
    Arc<dyn Fn(&ModelInfo, Device, Width) -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

pub(crate) struct WorkerConfig {
    /// `--max-batch-size`; after warm-up, what this worker runs ([`cpu_batch_cap`]).
    pub max_batch: usize,
    pub cpu_batch_budget: Option<Duration>,
    pub max_delay: Duration,
    pub worker_index: usize,
    /// Workers of this model, this one included.
    pub model_workers: usize,
    /// CPU workers under `--cpu-thread-pool adaptive`.
    pub adaptive: Option<Adaptive>,
}

/// What a CPU worker needs to borrow its model's all-cores session ([`super::all_cores`]).
pub(crate) struct Adaptive {
    pub runs: Arc<CpuRuns>,
    pub session: Arc<AllCoresSession>,
    /// True for one worker per model: it builds the all-cores session and calibrates it.
    pub builds_session: bool,
}

/// Shared by a model's workers: how many finished warming up, and the first start-up error.
#[derive(Default)]
pub(crate) struct WorkerStatus {
    pub ready: AtomicUsize,
    pub failed: std::sync::Mutex<Option<String>>,
}

pub(crate) fn spawn(
    info: Arc<ModelInfo>,
    device: Device,
    factory: BackendFactory,
    queue: Arc<BatchQueue>,
    status: Arc<WorkerStatus>,
    metrics: Arc<Metrics>,
    config: WorkerConfig,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("{}-{}-{}", info.name(), device, config.worker_index);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let mut config = config;
            let started = Instant::now();
            let all_cores = config
                .adaptive
                .as_ref()
                .filter(|a| a.builds_session)
                .and_then(|_| spawn_all_cores_build(&name, &info, device, &factory, &config));
            let built = build_warm(
                &factory,
                &info,
                device,
                Width::Share,
                config.max_batch,
                config.cpu_batch_budget,
            );
            let mut backend = match built {
                Ok((backend, max_batch)) => {
                    config.max_batch = max_batch;
                    backend
                }
                Err(e) => {
                    tracing::error!(worker = %name, error = %e, "worker failed to start");
                    // Released before fail_all, which serves the queue until it closes.
                    status
                        .failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| e.to_string());
                    // Nobody will serve this queue from here; fail what arrives rather than
                    // letting it wait for its deadline.
                    fail_all(&queue, &config, &e.to_string());
                    return;
                }
            };
            if let (Some(adaptive), Some(build)) = (&config.adaptive, all_cores) {
                let built = build.join().unwrap_or_else(|_| {
                    Err(BackendError::Run("building the session panicked".into()))
                });
                match built {
                    Ok((all_cores, _)) => install_if_faster(
                        backend.as_mut(),
                        all_cores,
                        adaptive,
                        &info,
                        &status,
                        &metrics,
                        &config,
                    ),
                    Err(e) => tracing::warn!(
                        model = info.name(),
                        error = %e,
                        "no all-cores session: serving on per-worker sessions only"
                    ),
                }
            }
            let labels = [
                info.name(),
                &device.to_string(),
                &config.worker_index.to_string(),
            ];
            metrics
                .warmup
                .with_label_values(&labels)
                .set(started.elapsed().as_secs_f64());
            metrics
                .worker_max_batch
                .with_label_values(&labels)
                .set(config.max_batch as i64);
            status.ready.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                worker = %name,
                secs = started.elapsed().as_secs_f64(),
                max_batch = config.max_batch,
                "worker ready"
            );
            let restarts = metrics
                .worker_restarts
                .with_label_values(&[info.name(), &device.to_string()]);
            let mut backend = Some(backend);
            while let Some(mut session) = backend.take() {
                let exit = panic::catch_unwind(AssertUnwindSafe(|| {
                    run_loop(session.as_mut(), &info, &queue, &status, &metrics, &config)
                }))
                .unwrap_or_else(|payload| {
                    tracing::error!(worker = %name, panic = %panic_message(&*payload), "worker panicked");
                    status.ready.fetch_sub(1, Ordering::SeqCst);
                    Exit::Panicked
                });
                if exit == Exit::Closed {
                    break;
                }
                restarts.inc();
                // The runtime may have been left in any state; its destructor may panic too.
                if panic::catch_unwind(AssertUnwindSafe(move || drop(session))).is_err() {
                    tracing::warn!(worker = %name, "dropping the panicked session panicked");
                }
                backend = rebuild(&name, &factory, &info, device, &queue, &config);
                if backend.is_some() {
                    status.ready.fetch_add(1, Ordering::SeqCst);
                    tracing::info!(worker = %name, "worker restarted with a fresh session");
                }
            }
            tracing::info!(worker = %name, "worker stopped");
        })
}

/// Why a worker's run loop returned.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// The queue closed and is empty: the engine is shutting down.
    Closed,
    /// A panic: the session must be replaced (the worker no longer counts as ready).
    Panicked,
}

/// The text of a panic's payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Builds and warms a fresh session after a panic, retrying with a growing pause (a device that
/// has just failed may need time); `None` once the queue has closed (shutdown).
fn rebuild(
    name: &str,
    factory: &BackendFactory,
    info: &ModelInfo,
    device: Device,
    queue: &BatchQueue,
    config: &WorkerConfig,
) -> Option<Box<dyn Backend>> {
    let mut pause = Duration::from_millis(100);
    while !queue.is_closed() {
        let built = panic::catch_unwind(AssertUnwindSafe(|| {
            build_warm(factory, info, device, Width::Share, config.max_batch, None)
        }));
        let error = match built {
            Ok(Ok((backend, _))) => return Some(backend),
            Ok(Err(e)) => e.to_string(),
            Err(payload) => format!("panicked: {}", panic_message(&*payload)),
        };
        tracing::error!(worker = %name, error = %error, retry_in_ms = pause.as_millis() as u64, "rebuilding the session failed");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(10));
    }
    None
}

/// Runs a single item and then the largest batch the worker will run, for every output and for
/// the logits alone (which may have a session of their own, the pruned graph), so the first real
/// requests find the arenas allocated (and, on CUDA, the conv algorithms picked). Returns that
/// largest batch: `max_batch`, or on CPU what `budget` allows ([`cpu_batch_cap`]).
fn warm_up(
    backend: &mut dyn Backend,
    info: &ModelInfo,
    max_batch: usize,
    budget: Option<Duration>,
) -> Result<usize, BackendError> {
    let m = &info.metadata;
    let movie_len = m.time.steps * m.frame_len();
    let all: Vec<String> = info.output_names().map(str::to_string).collect();
    let logits = vec![LOGITS_NAME.to_string()];
    let on_cpu = backend.device() == Device::Cpu;
    // The logits-only runs are warmed only where they have a graph of their own; otherwise they
    // are one more whole-graph run (1.4 s for rgc_intermediate on a core).
    let separate_logits = backend.has_logits_graph();
    // Blank frames are a default-schedule movie, so they warm the held graph where there is one,
    // and the file's own graph needs a run of its own.
    let other_graph = backend.has_held_graph() && backend.runs_other_schedules();
    let mut run_as = |outputs: &[String], batch: usize, schedule: Schedule| {
        let frames = vec![m.time.blank_value; movie_len * batch];
        let started = Instant::now();
        backend.run(&frames, batch, schedule, outputs)?;
        Ok::<_, BackendError>(started.elapsed())
    };
    if other_graph {
        run_as(&all, 1, Schedule::Other)?;
    }
    let mut run = |outputs: &[String], batch: usize| run_as(outputs, batch, Schedule::Default);
    // Timed on the whole graph: a batch may be an activation batch, the costlier kind.
    let mut single = run(&all, 1)?;
    if separate_logits {
        run(&logits, 1)?;
    }
    let cap = match budget {
        Some(budget) if max_batch > 1 && on_cpu => {
            if single < budget {
                // The first run also allocated the arena; a second one decides.
                single = single.min(run(&all, 1)?);
            }
            cpu_batch_cap(single, budget, max_batch)
        }
        _ => max_batch,
    };
    if cap > 1 {
        run(&all, cap)?;
        if separate_logits {
            run(&logits, cap)?;
        }
    }
    Ok(cap)
}

/// The largest batch, at most `max_batch`, whose run fits in `budget` when one image takes
/// `single`. On CPU a batch costs about its size times one image (the cores are busy either
/// way), so batching only spreads the fixed cost of a run: it pays on a small model and gives
/// nothing on a paper-sized one, where a big batch only multiplies the latency and the memory
/// ONNX Runtime keeps for the largest batch it has run (docs/performance.md, "Batching").
pub(crate) fn cpu_batch_cap(single: Duration, budget: Duration, max_batch: usize) -> usize {
    let fits = budget.as_secs_f64() / single.as_secs_f64().max(1e-9);
    (fits.floor() as usize).clamp(1, max_batch.max(1))
}

/// A warmed-up backend and the largest batch it was warmed with.
type BuiltBackend = Result<(Box<dyn Backend>, usize), BackendError>;

fn build_warm(
    factory: &BackendFactory,
    info: &ModelInfo,
    device: Device,
    width: Width,
    max_batch: usize,
    budget: Option<Duration>,
) -> BuiltBackend {
    let mut backend = factory(info, device, width)?;
    let max_batch = warm_up(backend.as_mut(), info, max_batch, budget)?;
    Ok((backend, max_batch))
}

/// Builds the model's all-cores session on a thread of its own, beside the worker's own session
/// rather than after it: start-up time is what a Kubernetes startup probe waits for.
fn spawn_all_cores_build(
    name: &str,
    info: &Arc<ModelInfo>,
    device: Device,
    factory: &BackendFactory,
    config: &WorkerConfig,
) -> Option<std::thread::JoinHandle<BuiltBackend>> {
    let (info, factory) = (info.clone(), factory.clone());
    let (max_batch, budget) = (config.max_batch, config.cpu_batch_budget);
    std::thread::Builder::new()
        .name(format!("{name}-all-cores"))
        .spawn(move || build_warm(&factory, &info, device, Width::AllCores, max_batch, budget))
        .inspect_err(|e| tracing::warn!(error = %e, "no thread for the all-cores session"))
        .ok()
}

/// Once the model's other workers are warm (so their start-up does not skew the timing), times the
/// all-cores session against this worker's own and installs it only if it is clearly faster.
fn install_if_faster(
    own: &mut dyn Backend,
    mut all_cores: Box<dyn Backend>,
    adaptive: &Adaptive,
    info: &ModelInfo,
    status: &WorkerStatus,
    metrics: &Metrics,
    config: &WorkerConfig,
) {
    let model = info.name();
    let others = config.model_workers.saturating_sub(1);
    let waiting_since = Instant::now();
    while status.ready.load(Ordering::SeqCst) < others
        && waiting_since.elapsed() < Duration::from_secs(300)
        && status
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    match calibrate(own, all_cores.as_mut(), info) {
        Ok(c) => {
            for (session, t) in [("share", c.share), ("all_cores", c.all_cores)] {
                metrics
                    .cpu_calibration
                    .with_label_values(&[model, session])
                    .set(t.as_secs_f64());
            }
            let keep = c.keep_all_cores();
            tracing::info!(
                model,
                share_ms = c.share.as_secs_f64() * 1e3,
                all_cores_ms = c.all_cores.as_secs_f64() * 1e3,
                keep,
                "calibrated the all-cores session (batch 1)"
            );
            if keep {
                adaptive.session.install(all_cores);
            }
        }
        Err(e) => tracing::warn!(model, error = %e, "all-cores calibration failed"),
    }
}

fn fail_all(queue: &BatchQueue, config: &WorkerConfig, msg: &str) {
    while let Some(batch) = queue.next_batch(config.max_batch, Duration::ZERO) {
        for item in batch {
            let _ = item.reply.send(Err(EngineError::Backend(format!(
                "worker unavailable: {msg}"
            ))));
        }
    }
}

/// Runs batches until the queue closes, or until a session run panics: that batch is answered
/// with an error and the caller replaces the session.
fn run_loop(
    backend: &mut dyn Backend,
    info: &ModelInfo,
    queue: &BatchQueue,
    status: &WorkerStatus,
    metrics: &Metrics,
    config: &WorkerConfig,
) -> Exit {
    let m = &info.metadata;
    let frame_len = m.frame_len();
    let movie_len = m.time.steps * frame_len;
    let model = info.name();
    let device = backend.device().to_string();
    let worker = format!("{device}#{}", config.worker_index);
    // Reused across batches: the input buffer for the largest batch.
    let mut frames = Vec::with_capacity(movie_len * config.max_batch);
    while let Some(batch) = queue.next_batch(config.max_batch, config.max_delay) {
        metrics
            .queue_depth
            .with_label_values(&[model])
            .set(queue.depth() as i64);
        let n = batch.len();
        // No clear(): write_movie overwrites every value, and zero-filling first would write the
        // whole input twice (10 MB a request on rgc_intermediate; ~0.08 ms on a 2-core VM).
        frames.resize(movie_len * n, 0.0);
        for (i, item) in batch.iter().enumerate() {
            item.stimulus.write_movie(
                &mut frames[i * movie_len..(i + 1) * movie_len],
                frame_len,
                m.time.blank_value,
            );
        }
        let outputs = union_of_outputs(&batch);
        let schedule = if batch.iter().all(|item| {
            item.stimulus
                .follows_default_schedule(m.time.steps, m.time.image_on_steps)
        }) {
            metrics
                .default_schedule_batches
                .with_label_values(&[model])
                .inc();
            Schedule::Default
        } else {
            Schedule::Other
        };
        let started = Instant::now();
        let mut on_all_cores = false;
        let run = panic::catch_unwind(AssertUnwindSafe(|| match &config.adaptive {
            None => backend.run(&frames, n, schedule, &outputs),
            Some(adaptive) => {
                let run = adaptive.runs.start();
                // Alone now and nothing waiting that another worker would start on next.
                let mut all_cores = (run.alone && queue.depth() == 0)
                    .then(|| adaptive.session.try_borrow())
                    .flatten()
                    .filter(|s| {
                        s.as_ref().is_some_and(|b| {
                            schedule == Schedule::Default || b.runs_other_schedules()
                        })
                    });
                match all_cores.as_mut().and_then(|s| s.as_mut()) {
                    Some(session) => {
                        metrics
                            .cpu_all_cores_batches
                            .with_label_values(&[model])
                            .inc();
                        on_all_cores = true;
                        session.run(&frames, n, schedule, &outputs)
                    }
                    None => backend.run(&frames, n, schedule, &outputs),
                }
            }
        }));
        let result = match run {
            Ok(result) => result,
            Err(payload) => {
                let msg = panic_message(&*payload);
                tracing::error!(model, device, panic = %msg, on_all_cores, "session run panicked; restarting the worker");
                metrics
                    .batch_failures
                    .with_label_values(&[model, &device])
                    .inc();
                // Not ready before the answers go out, so a client that reads readiness next
                // sees the restart.
                status.ready.fetch_sub(1, Ordering::SeqCst);
                if let (true, Some(adaptive)) = (on_all_cores, &config.adaptive) {
                    // Shared by the model's workers: nobody borrows a session in that state.
                    adaptive.session.remove();
                }
                for item in batch {
                    let _ = item.reply.send(Err(EngineError::Backend(format!(
                        "the session panicked ({msg}); its worker is restarting"
                    ))));
                }
                return Exit::Panicked;
            }
        };
        let inference_secs = started.elapsed().as_secs_f64();
        metrics
            .inference_duration
            .with_label_values(&[model, &device])
            .observe(inference_secs);
        metrics
            .device_busy
            .with_label_values(&[&device, model])
            .inc_by(inference_secs);
        metrics
            .device_batches
            .with_label_values(&[&device, model])
            .inc();
        metrics
            .batch_size
            .with_label_values(&[model])
            .observe(n as f64);
        match result {
            Ok(outputs) => {
                let outputs = Arc::new(outputs);
                for (index, item) in batch.into_iter().enumerate() {
                    let queue_secs = started.duration_since(item.enqueued).as_secs_f64();
                    metrics
                        .queue_duration
                        .with_label_values(&[model])
                        .observe(queue_secs);
                    let _ = item.reply.send(Ok(ItemResult {
                        outputs: outputs.clone(),
                        index,
                        timings: ItemTimings {
                            queue_secs,
                            inference_secs,
                            batch_size: n,
                        },
                        device: device.clone(),
                        worker: worker.clone(),
                    }));
                }
            }
            Err(e) => {
                tracing::error!(model, device, error = %e, "batch failed");
                metrics
                    .batch_failures
                    .with_label_values(&[model, &device])
                    .inc();
                for item in batch {
                    let _ = item.reply.send(Err(EngineError::Backend(e.to_string())));
                }
            }
        }
    }
    Exit::Closed
}

/// The outputs a batch must compute: every output any of its items asked for, logits first.
fn union_of_outputs(batch: &[WorkItem]) -> Vec<String> {
    let mut names: Vec<String> = vec![LOGITS_NAME.to_string()];
    for item in batch {
        for name in item.outputs.iter() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::cpu_batch_cap;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn cpu_batch_cap_fits_the_budget_within_the_flag() {
        // rgc_fmnist on one core of a slow machine: 5 ms an image, the flag decides.
        assert_eq!(cpu_batch_cap(ms(5), ms(200), 8), 8);
        assert_eq!(cpu_batch_cap(ms(5), ms(200), 64), 40);
        // A medium model: as many as fit.
        assert_eq!(cpu_batch_cap(ms(60), ms(200), 8), 3);
        assert_eq!(cpu_batch_cap(ms(100), ms(200), 8), 2);
        // rgc_intermediate: over a second an image, one at a time.
        assert_eq!(cpu_batch_cap(ms(1200), ms(200), 8), 1);
        // Degenerate inputs stay in range.
        assert_eq!(cpu_batch_cap(Duration::ZERO, ms(200), 8), 8);
        assert_eq!(cpu_batch_cap(ms(5), ms(200), 0), 1);
    }
}
