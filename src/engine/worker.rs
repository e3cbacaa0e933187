//! A device worker: one OS thread that owns one backend session, warms it up, then pulls
//! batches from its model's queue until the queue closes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::BatchQueue;
use super::request::{ItemResult, ItemTimings, WorkItem};
use super::EngineError;
use crate::backend::{Backend, BackendError, Device};
use crate::metrics::Metrics;
use crate::model::{ModelInfo, LOGITS_NAME};

/// Creates the backend on the worker's own thread (sessions are built where they will live).
pub type BackendFactory =
    Arc<dyn Fn(&ModelInfo, Device) -> Result<Box<dyn Backend>, BackendError> + Send + Sync>;

pub(crate) struct WorkerConfig {
    pub max_batch: usize,
    pub max_delay: Duration,
    pub worker_index: usize,
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
            let started = Instant::now();
            let mut backend = match factory(&info, device).and_then(|mut b| {
                warm_up(b.as_mut(), &info, config.max_batch)?;
                Ok(b)
            }) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(worker = %name, error = %e, "worker failed to start");
                    let mut failed = status.failed.lock().unwrap_or_else(|p| p.into_inner());
                    failed.get_or_insert_with(|| e.to_string());
                    // Nobody will serve this queue from here; fail what arrives rather than
                    // letting it wait for its deadline.
                    fail_all(&queue, &config, &e.to_string());
                    return;
                }
            };
            metrics
                .warmup
                .with_label_values(&[
                    info.name(),
                    &device.to_string(),
                    &config.worker_index.to_string(),
                ])
                .set(started.elapsed().as_secs_f64());
            status.ready.fetch_add(1, Ordering::SeqCst);
            tracing::info!(worker = %name, secs = started.elapsed().as_secs_f64(), "worker ready");
            run_loop(backend.as_mut(), &info, &queue, &metrics, &config);
            tracing::info!(worker = %name, "worker stopped");
        })
}

/// Runs the largest batch once (allocates the arenas and, on CUDA, picks the conv algorithms) and
/// a single item (the other common shape), so the first real requests see steady-state latency.
fn warm_up(
    backend: &mut dyn Backend,
    info: &ModelInfo,
    max_batch: usize,
) -> Result<(), BackendError> {
    let m = &info.metadata;
    let movie_len = m.time.steps * m.frame_len();
    let outputs: Vec<String> = info.output_names().map(str::to_string).collect();
    for batch in [max_batch, 1] {
        let frames = vec![m.time.blank_value; movie_len * batch];
        backend.run(&frames, batch, &outputs)?;
    }
    Ok(())
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

fn run_loop(
    backend: &mut dyn Backend,
    info: &ModelInfo,
    queue: &BatchQueue,
    metrics: &Metrics,
    config: &WorkerConfig,
) {
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
        frames.clear();
        frames.resize(movie_len * n, 0.0);
        for (i, item) in batch.iter().enumerate() {
            item.stimulus.write_movie(
                &mut frames[i * movie_len..(i + 1) * movie_len],
                frame_len,
                m.time.blank_value,
            );
        }
        let outputs = union_of_outputs(&batch);
        let started = Instant::now();
        let result = backend.run(&frames, n, &outputs);
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
                for item in batch {
                    let _ = item.reply.send(Err(EngineError::Backend(e.to_string())));
                }
            }
        }
    }
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
