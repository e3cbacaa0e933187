//! The inference engine: per-model bounded queues, and device workers that pull batches from
//! them. HTTP knows the engine only through [`Engine::infer`]; the engine knows the runtime only
//! through [`crate::backend::Backend`].
//!
//! Flow: a handler turns images into [`Stimulus`] rows and calls `infer`; each row becomes a
//! queued item with its own reply channel; the first idle worker of that model takes up to
//! `max_batch` rows (waiting at most `max_delay` for the batch to fill), runs the union of the
//! outputs its rows asked for, and answers each row with a view of its slice.

mod all_cores;
pub mod queue;
pub mod request;
pub mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use all_cores::Width;
pub use request::{Frame, FrameSource, ItemResult, ItemTimings, Stimulus};
pub use worker::BackendFactory;

use crate::backend::Device;
use crate::metrics::{reason, Metrics};
use crate::model::ModelInfo;
use all_cores::{AllCoresSession, CpuRuns};
use queue::{BatchQueue, PushError};
use request::WorkItem;
use worker::{Adaptive, WorkerConfig, WorkerStatus};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("model {0:?} is not loaded")]
    UnknownModel(String),
    #[error(
        "the queue of model {model:?} is full ({capacity} images); retry in {retry_after_s} s"
    )]
    Overloaded {
        model: String,
        capacity: usize,
        /// When a retry has a chance: how long the queue currently takes to drain.
        retry_after_s: u64,
    },
    #[error("the request has {images} stimuli but the queue holds at most {capacity}: split it")]
    TooLarge { images: usize, capacity: usize },
    #[error("the request did not finish before its deadline")]
    Timeout,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Backend(String),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub devices: Vec<Device>,
    pub sessions_per_device: usize,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
    pub request_timeout: Duration,
    /// CPU workers may borrow an all-cores session of their model for a batch that would run
    /// alone (`--cpu-thread-pool adaptive`, [`all_cores`]).
    pub cpu_adaptive: bool,
    /// On CPU, how long a batch may take at the batch-1 speed measured at warm-up: caps each CPU
    /// worker's batch below `max_batch` (`--cpu-batch-budget-ms`).
    /// None: every worker batches up to `max_batch`.
    pub cpu_batch_budget: Option<Duration>,
}

/// One served model: its description, its queue, and its workers' state.
pub struct ModelEntry {
    pub info: Arc<ModelInfo>,
    pub devices: Vec<Device>,
    /// Requests admitted at once (reading their body, decoding, queued, on the device): the
    /// queue capacity plus one full batch per worker. Taken before the body is read, so memory
    /// under overload is bounded by this, not by the number of open connections.
    admission: Arc<tokio::sync::Semaphore>,
    queue: Arc<BatchQueue>,
    status: Arc<WorkerStatus>,
    workers: usize,
}

impl ModelEntry {
    /// True once every worker of this model has warmed up.
    pub fn is_ready(&self) -> bool {
        self.status.ready.load(Ordering::SeqCst) == self.workers
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// The error for a request this model cannot admit now, with a `Retry-After` derived from
    /// how long its queue currently takes to drain (at least 1 s, HTTP's resolution; at most
    /// `request_timeout`, after which a queued item would have failed anyway).
    fn overloaded(&self, request_timeout: Duration) -> EngineError {
        let ceiling = request_timeout.as_secs_f64().ceil().max(1.0);
        let wait = self.queue.recent_wait().as_secs_f64().ceil();
        EngineError::Overloaded {
            model: self.info.name().to_string(),
            capacity: self.queue.capacity(),
            retry_after_s: wait.clamp(1.0, ceiling) as u64,
        }
    }

    /// The first worker start-up failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.status
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A model file that could not be loaded (`--skip-broken-models`), listed with its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub file: String,
    pub error: String,
}

/// A request's place within its model's admission bound ([`Engine::admit`]); released on drop.
#[derive(Debug)]
pub struct Admission {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

pub struct Engine {
    models: BTreeMap<String, ModelEntry>,
    unavailable: Vec<Unavailable>,
    /// `--skip-broken-models`: a model whose sessions cannot be built is listed as unavailable
    /// and readiness waits only for the others.
    skip_failed: bool,
    config: EngineConfig,
    metrics: Arc<Metrics>,
    draining: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts `sessions_per_device` workers per device for every model. Returns at once; the
    /// workers warm up in the background and [`Engine::is_ready`] turns true when all have.
    pub fn start(
        infos: Vec<ModelInfo>,
        factory: BackendFactory,
        config: EngineConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let mut models = BTreeMap::new();
        let mut threads = Vec::new();
        let model_workers = config.devices.len() * config.sessions_per_device.max(1);
        let cpu_runs = Arc::new(CpuRuns::default());
        for info in infos {
            let all_cores = Arc::new(AllCoresSession::default());
            let mut builds_session = true;
            let info = Arc::new(info);
            let queue = Arc::new(BatchQueue::new(
                config.queue_capacity,
                metrics
                    .failures
                    .with_label_values(&[info.name(), reason::DISCONNECTED]),
            ));
            let status = Arc::new(WorkerStatus::default());
            let mut worker_index = 0;
            for &device in &config.devices {
                for _ in 0..config.sessions_per_device.max(1) {
                    let adaptive = (config.cpu_adaptive && device == Device::Cpu).then(|| {
                        let a = Adaptive {
                            runs: cpu_runs.clone(),
                            session: all_cores.clone(),
                            builds_session,
                        };
                        builds_session = false;
                        a
                    });
                    threads.push(worker::spawn(
                        info.clone(),
                        device,
                        factory.clone(),
                        queue.clone(),
                        status.clone(),
                        metrics.clone(),
                        WorkerConfig {
                            max_batch: config.max_batch,
                            cpu_batch_budget: config.cpu_batch_budget,
                            max_delay: config.max_delay,
                            worker_index,
                            model_workers,
                            adaptive,
                        },
                    )?);
                    worker_index += 1;
                }
            }
            metrics
                .queue_capacity
                .with_label_values(&[info.name()])
                .set(config.queue_capacity as i64);
            metrics.queue_depth.with_label_values(&[info.name()]).set(0);
            for device in &config.devices {
                // Present from the start, so "never" reads 0 rather than absent.
                let labels = [info.name(), &device.to_string()];
                metrics.worker_restarts.with_label_values(&labels).inc_by(0);
                metrics.batch_failures.with_label_values(&labels).inc_by(0);
            }
            if config.cpu_adaptive && config.devices.contains(&Device::Cpu) {
                // Present from the start, so "never lent" reads 0 rather than absent.
                metrics
                    .cpu_all_cores_batches
                    .with_label_values(&[info.name()])
                    .inc_by(0);
            }
            models.insert(
                info.name().to_string(),
                ModelEntry {
                    info,
                    devices: config.devices.clone(),
                    admission: Arc::new(tokio::sync::Semaphore::new(
                        config.queue_capacity + config.max_batch * model_workers,
                    )),
                    queue,
                    status,
                    workers: model_workers,
                },
            );
        }
        Ok(Self {
            models,
            unavailable: Vec::new(),
            skip_failed: false,
            config,
            metrics,
            draining: AtomicBool::new(false),
            threads: Mutex::new(threads),
        })
    }

    /// Lists model files that could not be loaded, for `/v1/models`; with `skip_failed`, a
    /// model whose workers fail to start joins them instead of holding readiness back.
    pub fn with_unavailable(mut self, unavailable: Vec<Unavailable>, skip_failed: bool) -> Self {
        self.unavailable = unavailable;
        self.skip_failed = skip_failed;
        self
    }

    /// Files that could not be read, and (when skipped) models whose sessions failed.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        let failed = self.models.values().filter(|_| self.skip_failed);
        let failed = failed.filter_map(|m| {
            m.failure().map(|error| Unavailable {
                file: m.info.path.display().to_string(),
                error,
            })
        });
        self.unavailable.iter().cloned().chain(failed).collect()
    }

    /// Resolves once every worker is warm, or with the file and error of the first model whose
    /// workers could not start (whether ONNX Runtime can run a graph is only known when it
    /// builds the sessions).
    pub async fn started(&self) -> Result<(), (&Path, String)> {
        loop {
            if let Some((m, e)) = self
                .models
                .values()
                .find_map(|m| m.failure().map(|e| (m, e)))
            {
                return Err((&m.info.path, e));
            }
            if self.is_ready() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The models that serve: all of them, less those skipped because they failed to start.
    pub fn serving(&self) -> impl Iterator<Item = &ModelEntry> {
        let skip = self.skip_failed;
        self.models
            .values()
            .filter(move |m| !(skip && m.failure().is_some()))
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn model(&self, name: &str) -> Option<&ModelEntry> {
        self.models.get(name)
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.values()
    }

    /// Ready to take traffic: every worker of every serving model warm, and not draining.
    pub fn is_ready(&self) -> bool {
        let mut serving = self.serving().peekable();
        !self.is_draining() && serving.peek().is_some() && serving.all(ModelEntry::is_ready)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Flips readiness to false so load balancers stop sending; queued work still completes.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Takes one of `model`'s admission slots, or the overload error that says when to retry.
    /// Every API takes it before reading a request's body and holds it until the answer is
    /// built, so what requests hold in memory is bounded per model, not per connection.
    pub fn admit(&self, model: &str) -> Result<Admission, EngineError> {
        let entry = self
            .models
            .get(model)
            .ok_or_else(|| EngineError::UnknownModel(model.to_string()))?;
        let permit = entry
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| entry.overloaded(self.config.request_timeout))?;
        Ok(Admission { _permit: permit })
    }

    /// Runs every stimulus through the model and returns one result per stimulus, in order.
    /// Admission is all-or-nothing: a full queue rejects the whole request.
    pub async fn infer(
        &self,
        model: &str,
        stimuli: Vec<Stimulus>,
        outputs: Vec<String>,
    ) -> Result<Vec<ItemResult>, EngineError> {
        let entry = self
            .models
            .get(model)
            .ok_or_else(|| EngineError::UnknownModel(model.to_string()))?;
        if stimuli.len() > entry.queue.capacity() {
            // It could never be admitted, so "retry later" would be a lie.
            return Err(EngineError::TooLarge {
                images: stimuli.len(),
                capacity: entry.queue.capacity(),
            });
        }
        let now = Instant::now();
        let deadline = now + self.config.request_timeout;
        let outputs: Arc<[String]> = Arc::from(outputs);
        let mut receivers = Vec::with_capacity(stimuli.len());
        let items: Vec<WorkItem> = stimuli
            .into_iter()
            .map(|stimulus| {
                let (reply, rx) = oneshot::channel();
                receivers.push(rx);
                WorkItem {
                    stimulus,
                    outputs: outputs.clone(),
                    enqueued: now,
                    deadline,
                    reply,
                }
            })
            .collect();
        if let Err((why, _)) = entry.queue.try_push_all(items) {
            return Err(match why {
                PushError::Full => entry.overloaded(self.config.request_timeout),
                PushError::Closed => EngineError::ShuttingDown,
            });
        }
        self.metrics
            .queue_depth
            .with_label_values(&[model])
            .set(entry.queue.depth() as i64);
        let wait = async {
            let mut results = Vec::with_capacity(receivers.len());
            for rx in receivers {
                // Workers answer every item they take, also when a run panics; a dropped
                // sender means a worker died in our own code between taking and answering.
                results.push(rx.await.map_err(|_| {
                    EngineError::Backend("the worker stopped without answering".into())
                })??);
            }
            Ok(results)
        };
        tokio::time::timeout_at(deadline.into(), wait)
            .await
            .unwrap_or(Err(EngineError::Timeout))
    }

    /// Closes every queue (new requests fail with `ShuttingDown`), lets workers finish what is
    /// queued, and joins them. Blocking: call from `spawn_blocking` in async code.
    pub fn shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for entry in self.models.values() {
            entry.queue.close();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
