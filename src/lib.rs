//! convrnn-serve: an HTTP service for convolutional recurrent models of the primate visual
//! system (Nayebi et al., NeurIPS 2018), exported to ONNX and run by ONNX Runtime.
//!
//! # Layout
//! - [`config`]: the command line (every flag also an env var).
//! - [`api`]: HTTP only: routes, extractors, errors, the OpenAPI document.
//! - [`engine`]: per-model bounded queues, the batcher, one worker thread per device session.
//! - [`backend`]: the `Backend` trait the engine runs on, and its ONNX Runtime implementation.
//! - [`model`]: the model contract (metadata, tensor shapes, readout rules).
//! - [`presentation`]: what the model sees at each timestep.
//! - [`inspect`]: the `inspect` report; [`image`]: decode, orient, resize and normalise images; [`npz`]: NumPy archives.
//! - [`pool`]: spatial pooling of layer outputs, shared by the HTTP answers and `extract`.
//! - [`gather`]: the selected layers x timesteps of a request's results, as the activations answers hold them.
//! - [`extract`]: `convrnn-serve extract`, features of a whole stimulus set to `.npy` files.
//! - [`metrics`]: the Prometheus registry; [`shutdown`]: signals.
//!
//! Dependencies point one way: api → engine → backend trait ← ort.

pub mod api;
pub mod backend;
pub mod config;
pub mod engine;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod gather;
pub mod image;
pub mod inspect;
pub mod metrics;
pub mod model;
pub mod npz;
pub mod pool;
pub mod presentation;
pub mod quote;
pub mod shutdown;
pub mod thread_plan;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::TcpListener;

use backend::ort as ort_backend;
use backend::{Backend, Device};
use config::ServeArgs;
use engine::{BackendFactory, Engine, EngineConfig, Unavailable, Width};
use metrics::Metrics;
use model::ModelInfo;
use thread_plan::ThreadPlan;

/// Every `*.onnx` directly inside `dir`, sorted by file name.
pub fn model_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading model directory {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Inspects and validates every model in the directory; names must be unique. A file that
/// cannot be loaded stops everything, or with `skip_broken` is returned with its error instead
/// (as long as one model loads).
pub fn load_models(
    dir: &Path,
    metrics: &Metrics,
    skip_broken: bool,
) -> anyhow::Result<(Vec<ModelInfo>, Vec<Unavailable>)> {
    let files = model_files(dir)?;
    if files.is_empty() {
        bail!("no .onnx files in {}", dir.display());
    }
    let mut infos: Vec<ModelInfo> = Vec::new();
    let mut broken = Vec::new();
    for file in files {
        let started = Instant::now();
        let info = match model::inspect(&file) {
            Ok(info) => info,
            Err(e) if skip_broken => {
                tracing::error!(file = %file.display(), error = %e, "model not loaded; serving the others (--skip-broken-models)");
                broken.push(Unavailable {
                    file: file.display().to_string(),
                    error: e.to_string(),
                });
                continue;
            }
            Err(e) => bail!(
                "cannot load model {}: {e} (--skip-broken-models serves the other models)",
                file.display()
            ),
        };
        if let Some(other) = infos.iter().find(|i| i.name() == info.name()) {
            bail!(
                "{} and {} both call themselves {:?}",
                other.path.display(),
                file.display(),
                info.name()
            );
        }
        metrics
            .model_load
            .with_label_values(&[info.name()])
            .set(started.elapsed().as_secs_f64());
        tracing::info!(model = info.name(), file = %file.display(), "model loaded");
        infos.push(info);
    }
    if infos.is_empty() {
        bail!(
            "no model in {} could be loaded; {}: {}",
            dir.display(),
            broken[0].file,
            broken[0].error
        );
    }
    Ok((infos, broken))
}

/// The devices `--devices` asks for, given what this library and machine offer.
pub fn resolve_devices(spec: &str) -> anyhow::Result<Vec<Device>> {
    let cuda = if ort_backend::cuda_available() {
        ort_backend::visible_cuda_devices()
    } else {
        vec![]
    };
    let devices = config::parse_devices(spec, &cuda).map_err(anyhow::Error::msg)?;
    if devices.iter().any(|d| matches!(d, Device::Cuda(_))) && !ort_backend::cuda_available() {
        bail!(
            "--devices {spec:?} asks for CUDA, but this ONNX Runtime library has no CUDA provider \
             (install onnxruntime-gpu) or the binary lacks the `cuda` feature"
        );
    }
    Ok(devices)
}

/// Builds the engine for `args`: loads models, picks devices, plans the threads, starts workers.
pub fn start_engine(args: &ServeArgs, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Engine>> {
    let cores = thread_plan::available_cores();
    // The shared pool belongs to the runtime, which is created before the models are read; its
    // size does not depend on the number of sessions.
    let runtime = ort_backend::RuntimeOptions {
        shared_intra_threads: ThreadPlan::new(args, cores, &[Device::Cpu], 1).shared_pool_threads,
    };
    let library = ort_backend::init_runtime(args.ort_library.as_deref(), runtime)?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");
    let (infos, unavailable) = load_models(&args.model_dir, &metrics, args.skip_broken_models)?;
    let devices = resolve_devices(&args.devices)?;
    let plan = ThreadPlan::new(args, cores, &devices, infos.len());
    plan.log();
    let share = ort_backend::SessionOptions {
        intra_threads: plan.intra_threads,
        prune_for_logits: args.prune_logits_graph,
        hold_default_schedule: args.hold_default_schedule,
        other_schedules: true,
        cuda: args.cuda_options(),
    };
    let all = ort_backend::SessionOptions {
        intra_threads: cores,
        // Movies of other schedules run on the workers' own sessions: a rare path is not worth
        // a third graph to build and hold here.
        other_schedules: !args.hold_default_schedule,
        ..share.clone()
    };
    let factory: BackendFactory = Arc::new(move |info: &ModelInfo, device: Device, width| {
        let options = match width {
            Width::Share => &share,
            Width::AllCores => &all,
        };
        ort_backend::OrtBackend::new(info, device, options).map(|b| Box::new(b) as Box<dyn Backend>)
    });
    tracing::info!(devices = ?devices.iter().map(|d| d.to_string()).collect::<Vec<_>>(), "starting workers");
    let engine = Engine::start(
        infos,
        factory,
        EngineConfig {
            devices,
            sessions_per_device: plan.sessions_per_device,
            max_batch: args.max_batch_size.max(1),
            cpu_batch_budget: args.cpu_batch_budget(),
            max_delay: args.max_queue_delay(),
            queue_capacity: args.queue_capacity.max(1),
            request_timeout: args.request_timeout(),
            cpu_adaptive: plan.all_cores_sessions,
        },
        metrics,
    )?;
    Ok(Arc::new(
        engine.with_unavailable(unavailable, args.skip_broken_models),
    ))
}

pub fn app_state(
    args: &ServeArgs,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    keys: Option<Arc<api::auth::ApiKeys>>,
) -> api::AppState {
    api::AppState {
        engine,
        metrics,
        decode_permits: Arc::new(tokio::sync::Semaphore::new(ThreadPlan::decode_permits(
            thread_plan::available_cores(),
        ))),
        keys,
        admin_listener: args.admin_listen.is_some(),
        limits: Arc::new(api::Limits {
            max_body_bytes: args.max_body_bytes,
            max_images_per_request: args.max_images_per_request,
            max_json_values: args.max_json_values,
            image: image::Limits {
                max_pixels: args.max_image_pixels,
                max_bytes: args.max_body_bytes,
            },
        }),
    }
}

/// The sockets the server answers on: the API's, and optionally the admin listener for health
/// and metrics (`--admin-listen`). A plain `TcpListener` converts into one with no admin
/// listener; [`run`] then binds `--admin-listen` itself if it is set.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(api: TcpListener) -> Self {
        Self { api, admin: None }
    }
}

/// Connections the admin listener holds at once: a kubelet's probes and a few scrapers.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// The API keys of `--api-key-file` and `CONVRNN_API_KEYS`, if any.
pub fn api_keys(args: &ServeArgs) -> anyhow::Result<Option<Arc<api::auth::ApiKeys>>> {
    let keys = api::auth::ApiKeys::load(
        args.api_key_file.as_deref(),
        args.api_keys.as_ref().map(config::Secret::expose),
    )?;
    Ok(keys.map(Arc::new))
}

/// Serves until `shutdown` resolves, then drains: readiness turns 503 at once, the listener
/// closes after `--drain-delay-ms`, in-flight requests get up to `--drain-timeout-ms`, and the
/// workers finish what is queued.
pub async fn run(
    listeners: impl Into<Listeners>,
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut listeners = listeners.into();
    if let (None, Some(addr)) = (&listeners.admin, args.admin_listen) {
        listeners.admin = Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("--admin-listen {addr}"))?,
        );
    }
    // Before the models load, so a bad key file fails at once.
    api_keys(&args)?;
    let metrics = Arc::new(Metrics::new());
    let engine = {
        let args = args.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_blocking(move || start_engine(&args, metrics)).await??
    };
    if args.skip_broken_models {
        return serve(listeners, args, engine, metrics, shutdown).await;
    }
    let starting = engine.clone();
    let failure = async move {
        let failed = match starting.started().await {
            Err((file, error)) => anyhow::anyhow!(
                "cannot load model {}: {error} (--skip-broken-models serves the other models)",
                file.display()
            ),
            // Serving goes on; only a start-up failure ends it here.
            Ok(()) => std::future::pending().await,
        };
        // The other workers may still be building their sessions: let them finish (and log
        // their own failures) so that this error is the last line.
        let _ = tokio::task::spawn_blocking(move || starting.shutdown()).await;
        failed
    };
    tokio::select! {
        served = serve(listeners, args, engine, metrics, shutdown) => served,
        error = failure => Err(error),
    }
}

/// Serves an already started engine (tests use this with a fake backend); see [`run`].
pub async fn serve(
    listeners: impl Into<Listeners>,
    args: ServeArgs,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Listeners {
        api: listener,
        admin,
    } = listeners.into();
    let keys = api_keys(&args)?;
    if let Some(keys) = &keys {
        tracing::info!(keys = keys.len(), "API keys required on /v1 and /v2");
    }
    let key_watch = keys.clone().map(|keys| {
        tokio::spawn(keys.watch(args.api_keys.as_ref().map(|s| s.expose().to_string())))
    });
    let state = app_state(&args, engine.clone(), metrics.clone(), keys);
    let header_timeout = Duration::from_millis(args.header_timeout_ms);
    let (admin_stop, admin_task) = match admin {
        Some(admin) => {
            tracing::info!(addr = %admin.local_addr()?, "admin listener: health and metrics");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let limits = api::connections::ConnectionLimits {
                max_connections: ADMIN_MAX_CONNECTIONS,
                header_timeout,
            };
            let task = tokio::spawn(api::connections::serve(
                admin,
                api::admin_router(state.clone()),
                limits,
                None,
                async move {
                    let _ = stopped.await;
                },
            ));
            (Some(stop), Some(task))
        }
        None => (None, None),
    };
    let app = api::router(state);
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_engine = engine.clone();
    let drain_delay = Duration::from_millis(args.drain_delay_ms);
    let graceful = async move {
        shutdown.await;
        drain_engine.begin_drain();
        tracing::info!("draining: readiness is now 503");
        tokio::time::sleep(drain_delay).await;
        let _ = drained_tx.send(());
    };
    let limits = api::connections::ConnectionLimits {
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        header_timeout,
    };
    let server = api::connections::serve(listener, app, limits, Some(metrics), graceful);
    let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    let bounded = async move {
        // Only after the shutdown signal does the drain bound start counting.
        let _ = drained_rx.await;
        tokio::time::sleep(drain_timeout).await;
    };
    tokio::select! {
        () = server => {}
        _ = bounded => tracing::warn!("drain timeout reached; abandoning open connections"),
    }
    let stopping = engine.clone();
    tokio::task::spawn_blocking(move || stopping.shutdown()).await?;
    // Probes keep their answers (503, draining) until the very end.
    if let (Some(stop), Some(task)) = (admin_stop, admin_task) {
        let _ = stop.send(());
        if tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .is_err()
        {
            tracing::warn!("admin listener did not close within 1 s");
        }
    }
    if let Some(watch) = key_watch {
        watch.abort();
    }
    tracing::info!("stopped");
    Ok(())
}
