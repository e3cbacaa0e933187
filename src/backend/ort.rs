//! ONNX Runtime through the `ort` crate, loaded dynamically from the PyPI wheel's shared library.
//!
//! One [`OrtBackend`] wraps one `ort::Session` pinned to one device. The library is located once
//! per process ([`init_runtime`]); sessions are built by the worker thread that will own them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::{TensorRef, ValueType};

use super::{Backend, BackendError, Device, OutputTensor, Schedule};
use crate::model::held::{hold_image, HeldError};
use crate::model::prune::prune_to_outputs;
use crate::model::{
    declarations::Declarations, metadata::METADATA_KEY, only_logits, ModelInfo, TensorInfo,
    LOGITS_NAME,
};

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static LIBRARY_PATH: OnceLock<PathBuf> = OnceLock::new();

/// Where we look for `libonnxruntime.so` when no path is given, in order. The venv locations let
/// a checkout that ran `scripts/setup.sh` work with no variable set; the `../lib` one is the
/// container layout.
pub fn candidate_library_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        out.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.extend(libraries_in(dir));
            out.extend(libraries_in(&dir.join("../lib")));
        }
    }
    let mut roots = vec![];
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for root in roots {
        let lib = root.join(".venv/lib");
        if let Ok(entries) = std::fs::read_dir(&lib) {
            let mut pythons: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            pythons.sort();
            for py in pythons {
                out.extend(libraries_in(&py.join("site-packages/onnxruntime/capi")));
            }
        }
    }
    out
}

/// `libonnxruntime.so*` files in `dir`, the versioned name first (the wheel ships only that one).
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found
}

/// Process-wide runtime settings; fixed by the first [`init_runtime`] call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `Some(n)`: one intra-op thread pool of `n` threads (0 = one per core) that every session
    /// uses instead of its own. A run then gets every core while it is the only one, and
    /// concurrent runs share the pool instead of oversubscribing the cores with one pool each.
    pub shared_intra_threads: Option<usize>,
}

/// Loads the ONNX Runtime library and creates the process-wide environment (only one is allowed).
/// Idempotent: later calls return the first result's path and keep the first call's options.
pub fn init_runtime(
    explicit: Option<&Path>,
    options: RuntimeOptions,
) -> Result<PathBuf, BackendError> {
    if let Some(p) = LIBRARY_PATH.get() {
        return Ok(p.clone());
    }
    if let Some(p) = explicit.filter(|p| !p.is_file()) {
        return Err(BackendError::Library(format!(
            "--ort-library {}: no such file",
            p.display()
        )));
    }
    let candidates = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => candidate_library_paths(),
    };
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BackendError::Library(
                "libonnxruntime.so not found: run scripts/setup.sh, or pass --ort-library / set \
             CONVRNN_ORT_LIBRARY to the library from the onnxruntime PyPI wheel"
                    .into(),
            )
        })?;
    let builder = ort::init_from(&path)
        .map_err(|e| BackendError::Library(format!("{}: {e}", path.display())))?;
    let mut builder = builder.with_name("convrnn-serve").with_telemetry(false);
    if let Some(threads) = options.shared_intra_threads {
        let lib_err = |e: ort::Error| BackendError::Library(e.to_string());
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(threads)
            .map_err(lib_err)?
            .with_inter_threads(1)
            .map_err(lib_err)?
            // As for per-session pools: spinning steals the cores decoding and HTTP need.
            .with_spin_control(false)
            .map_err(lib_err)?;
        builder = builder.with_global_thread_pool(pool);
    }
    let env = builder
        .build()
        .map_err(|e| BackendError::Library(e.to_string()))?;
    let _ = ENVIRONMENT.set(env);
    let _ = LIBRARY_PATH.set(path.clone());
    Ok(path)
}

fn environment() -> Result<&'static Environment, BackendError> {
    ENVIRONMENT
        .get()
        .ok_or_else(|| BackendError::Library("ONNX Runtime was not initialised".into()))
}

/// Whether this library was built with the CUDA execution provider (the `onnxruntime-gpu` wheel).
pub fn cuda_available() -> bool {
    #[cfg(feature = "cuda")]
    {
        use ort::ep::ExecutionProvider;
        ort::ep::CUDA::is_available().unwrap_or(false)
    }
    #[cfg(not(feature = "cuda"))]
    false
}

/// Number of NVIDIA GPUs the driver exposes, without touching CUDA (works in containers that
/// mount the driver's proc files). `CUDA_VISIBLE_DEVICES` narrows it as CUDA itself would.
pub fn visible_cuda_devices() -> Vec<i32> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let n = v.split(',').filter(|s| !s.trim().is_empty()).count();
        return (0..n as i32).collect();
    }
    let n = std::fs::read_dir("/proc/driver/nvidia/gpus")
        .map(|d| d.count())
        .unwrap_or(0);
    (0..n as i32).collect()
}

/// Session settings that matter for throughput.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Intra-op threads of a CPU session's own pool; 0 = one per core. Ignored when the runtime
    /// was started with a shared pool ([`RuntimeOptions::shared_intra_threads`]).
    pub intra_threads: usize,
    /// Also build a session of the graph pruned to `logits` ([`crate::model::prune`]) and run
    /// requests that want only the logits on it: the same numbers for less work. Costs one more
    /// graph optimisation at start-up and the pruned graph's share of memory.
    pub prune_for_logits: bool,
    /// Run default-schedule movies on the graph specialised to them ([`crate::model::held`]):
    /// the same numbers, each run of equal frames computed once.
    pub hold_default_schedule: bool,
    /// Also keep the file's own graph for movies of other schedules. `false` where only the
    /// default schedule is ever run (`extract`): one session fewer to build and hold.
    pub other_schedules: bool,
    /// How CUDA sessions are set up; ignored on CPU.
    pub cuda: CudaOptions,
}

impl SessionOptions {
    pub fn new(intra_threads: usize) -> Self {
        Self {
            intra_threads,
            prune_for_logits: true,
            hold_default_schedule: true,
            other_schedules: true,
            cuda: CudaOptions::default(),
        }
    }
}

/// CUDA execution provider settings (the `--cuda-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaOptions {
    /// TF32 tensor-core math for float32 convolutions and matrix products (Ampere and newer):
    /// several times the float32 rate for a ~1e-3 relative rounding of the products.
    pub tf32: bool,
    /// Cap on each session's CUDA memory arena, in bytes; 0 = none. A run that needs more fails
    /// with an error for its batch instead of taking memory other sessions count on.
    pub memory_limit: usize,
    /// Try every cuDNN convolution algorithm the first time a shape runs and keep the fastest,
    /// instead of cuDNN's heuristic pick. Warm-up covers batch 1 and the largest batch; other
    /// batch sizes pay the search on their first request.
    pub exhaustive_conv_search: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        // ONNX Runtime's own defaults, except the search (see `exhaustive_conv_search`).
        Self {
            tf32: true,
            memory_limit: 0,
            exhaustive_conv_search: false,
        }
    }
}

/// Where a session's graph comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    /// A graph derived from the file at the path (named in errors).
    Memory(&'a Path, &'a [u8]),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::File(p) | Source::Memory(p, _) => p,
        }
    }
}

fn session_error(model: &Path, device: Device) -> impl Fn(ort::Error) -> BackendError + '_ {
    move |e| BackendError::Session {
        model: model.display().to_string(),
        device,
        msg: e.to_string(),
    }
}

fn build_session(
    source: Source<'_>,
    device: Device,
    options: &SessionOptions,
) -> Result<Session, BackendError> {
    let path = source.path();
    let env = environment()?;
    let err = session_error(path, device);
    // Builder errors carry the builder and are not Send; convert them at once.
    let conv = |e: ort::Error<ort::session::builder::SessionBuilder>| err(ort::Error::from(e));
    let mut builder = Session::builder(env)
        .map_err(&err)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(conv)?;
    match device {
        Device::Cpu => {
            builder = builder
                .with_intra_threads(options.intra_threads.max(1))
                .map_err(conv)?
                .with_inter_threads(1)
                .map_err(conv)?
                // Idle pool threads spinning for work steal the cores that decoding and the HTTP
                // threads need (docs/performance.md, "Threading").
                .with_intra_op_spinning(false)
                .map_err(conv)?;
        }
        Device::Cuda(id) => {
            #[cfg(feature = "cuda")]
            {
                use ort::ep::cuda::ConvAlgorithmSearch;
                let o = options.cuda;
                let mut cuda = ort::ep::CUDA::default()
                    .with_device_id(id)
                    // Exhaustive search re-tunes on every new batch shape, which stalls the first
                    // request of each size; the heuristic is within a few percent on convnets.
                    .with_conv_algorithm_search(if o.exhaustive_conv_search {
                        ConvAlgorithmSearch::Exhaustive
                    } else {
                        ConvAlgorithmSearch::Heuristic
                    })
                    .with_tf32(o.tf32);
                if o.memory_limit > 0 {
                    cuda = cuda.with_memory_limit(o.memory_limit);
                }
                let cuda = cuda
                    .build()
                    // Without this ORT silently falls back to CPU and we would report a GPU we
                    // are not using.
                    .error_on_failure();
                builder = builder.with_execution_providers([cuda]).map_err(conv)?;
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = id;
                return Err(BackendError::Session {
                    model: path.display().to_string(),
                    device,
                    msg: "this binary was built without the `cuda` feature".into(),
                });
            }
        }
    }
    let session = match source {
        Source::File(path) => builder.commit_from_file(path),
        Source::Memory(_, bytes) => builder.commit_from_memory(bytes),
    }
    .map_err(&err)?;
    // What optimising the graph allocated and freed would otherwise stay in this thread's malloc
    // arena while the next session is built beside it (heap.rs): returning it at once keeps the
    // start-up peak near what the sessions hold.
    super::heap::release_freed_memory();
    Ok(session)
}

fn tensor_infos(outlets: &[ort::value::Outlet]) -> Vec<TensorInfo> {
    outlets
        .iter()
        .map(|o| TensorInfo {
            name: o.name().to_string(),
            shape: match o.dtype() {
                ValueType::Tensor { shape, .. } => shape.iter().copied().collect(),
                _ => vec![],
            },
        })
        .collect()
}

/// The file's declarations as ONNX Runtime reads them, from a CPU session built unoptimised (as
/// fast as it gets): `convrnn-serve inspect` checks an export with it, and the tests check that
/// [`crate::model::inspect`]'s own reading agrees. Serving does not build this session; it
/// finds out whether the runtime can run a file when it builds the real ones.
pub fn session_declarations(path: &Path) -> Result<Declarations, BackendError> {
    let env = environment()?;
    let err = session_error(path, Device::Cpu);
    let conv = |e: ort::Error<ort::session::builder::SessionBuilder>| err(ort::Error::from(e));
    let session = Session::builder(env)
        .map_err(&err)?
        .with_optimization_level(GraphOptimizationLevel::Disable)
        .map_err(conv)?
        .with_intra_threads(1)
        .map_err(conv)?
        .commit_from_file(path)
        .map_err(&err)?;
    let metadata = session.metadata().map_err(&err)?.custom(METADATA_KEY);
    Ok(Declarations {
        metadata,
        inputs: tensor_infos(session.inputs()),
        outputs: tensor_infos(session.outputs()),
    })
}

pub struct OrtBackend {
    /// The file's graph, for movies of any schedule; `None` when only default-schedule movies
    /// were asked for and the held graph runs them.
    session: Option<Session>,
    /// The file's graph pruned to `logits`, for runs that want nothing else; `None` when pruning
    /// was off, impossible or removed nothing, or when the held graph takes those runs.
    logits_session: Option<Session>,
    /// The graph specialised to the default schedule, whole and pruned to `logits`.
    held: Option<Session>,
    held_logits: Option<Session>,
    device: Device,
    input_shape: [usize; 4],
}

impl OrtBackend {
    pub fn new(
        info: &ModelInfo,
        device: Device,
        options: &SessionOptions,
    ) -> Result<Self, BackendError> {
        let m = &info.metadata;
        let path = &info.path;
        let (mut held, mut held_logits) = (None, None);
        if options.hold_default_schedule {
            if let Some(bytes) = held_graph(info, device)? {
                held = Some(build_session(
                    Source::Memory(path, &bytes),
                    device,
                    options,
                )?);
                if options.prune_for_logits {
                    held_logits = build_logits_session(path, &bytes, device, options)?;
                }
            }
        }
        // Classification with another schedule runs on the whole graph when the held one
        // exists: one session fewer to build and hold for a rarely used path.
        let (session, logits_session) = if options.other_schedules || held.is_none() {
            let session = build_session(Source::File(path), device, options)?;
            let logits = if options.prune_for_logits && held.is_none() {
                let bytes = read_file(path, device)?;
                build_logits_session(path, &bytes, device, options)?
            } else {
                None
            };
            (Some(session), logits)
        } else {
            (None, None)
        };
        Ok(Self {
            session,
            logits_session,
            held,
            held_logits,
            device,
            input_shape: [
                m.time.steps,
                m.input.channels,
                m.input.height as usize,
                m.input.width as usize,
            ],
        })
    }

    /// Whether logits-only runs use a pruned graph.
    pub fn prunes_logits(&self) -> bool {
        self.logits_session.is_some() || self.held_logits.is_some()
    }
}

fn read_file(path: &Path, device: Device) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| BackendError::Session {
        model: path.display().to_string(),
        device,
        msg: e.to_string(),
    })
}

/// The file's graph specialised to the default schedule, if that changes anything. A graph the
/// rewrite does not understand is served whole (logged).
fn held_graph(info: &ModelInfo, device: Device) -> Result<Option<Vec<u8>>, BackendError> {
    let path = &info.path;
    let bytes = read_file(path, device)?;
    let time = &info.metadata.time;
    match hold_image(&bytes, time.steps, time.image_on_steps) {
        Ok(held) => {
            tracing::debug!(
                model = %path.display(),
                %device,
                steps_redirected = held.steps_redirected,
                nodes_merged = held.nodes_merged,
                "default-schedule runs use the graph that reads each run of equal frames once"
            );
            Ok(Some(held.bytes))
        }
        Err(HeldError::Unchanged) => Ok(None),
        Err(e) => {
            tracing::warn!(model = %path.display(), error = %e, "every schedule runs on the file's own graph");
            Ok(None)
        }
    }
}

/// The session for logits-only runs of the graph in `bytes` (the file's or the held one), if
/// pruning removes anything. A graph the pruner cannot read is served whole (logged); a pruned
/// graph ONNX Runtime rejects is an error, as it would be for the whole one.
fn build_logits_session(
    path: &Path,
    bytes: &[u8],
    device: Device,
    options: &SessionOptions,
) -> Result<Option<Session>, BackendError> {
    let pruned = match prune_to_outputs(bytes, &[LOGITS_NAME]) {
        Ok(p) if p.nodes_after < p.nodes_before => p,
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::warn!(model = %path.display(), error = %e, "logits run on the whole graph");
            return Ok(None);
        }
    };
    tracing::debug!(
        model = %path.display(),
        %device,
        nodes = pruned.nodes_after,
        of = pruned.nodes_before,
        "logits-only runs use the graph pruned to logits"
    );
    build_session(Source::Memory(path, &pruned.bytes), device, options).map(Some)
}

impl Backend for OrtBackend {
    fn run(
        &mut self,
        frames: &[f32],
        batch: usize,
        schedule: Schedule,
        outputs: &[String],
    ) -> Result<Vec<OutputTensor>, BackendError> {
        let [t, c, h, w] = self.input_shape;
        let shape = [batch, t, c, h, w];
        if frames.len() != shape.iter().product::<usize>() {
            return Err(BackendError::Run(format!(
                "frames has {} values, expected {shape:?}",
                frames.len()
            )));
        }
        let input = TensorRef::from_array_view((shape, frames))
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let selector = outputs
            .iter()
            .fold(OutputSelector::no_default(), |s, name| s.with(name.clone()));
        let run_options = RunOptions::new()
            .map_err(|e| BackendError::Run(e.to_string()))?
            .with_outputs(selector);
        let logits = only_logits(outputs);
        let (whole, pruned) = match (schedule, self.held.is_some()) {
            (Schedule::Default, true) => (&mut self.held, &mut self.held_logits),
            _ => (&mut self.session, &mut self.logits_session),
        };
        let session = match pruned {
            Some(pruned) if logits => pruned,
            _ => whole.as_mut().ok_or_else(|| {
                BackendError::Run("this session runs only default-schedule movies".into())
            })?,
        };
        let results = session
            .run_with_options(ort::inputs!["frames" => input], &run_options)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        // SessionOutputs borrows the session: copy out before the next run.
        outputs
            .iter()
            .map(|name| {
                let value = results
                    .get(name.as_str())
                    .ok_or_else(|| BackendError::Output(format!("missing output {name:?}")))?;
                let (shape, data) = value
                    .try_extract_tensor::<f32>()
                    .map_err(|e| BackendError::Output(format!("{name}: {e}")))?;
                Ok(OutputTensor {
                    name: name.clone(),
                    shape: shape.iter().map(|d| *d as usize).collect(),
                    data: data.to_vec(),
                })
            })
            .collect()
    }

    fn device(&self) -> Device {
        self.device
    }

    fn has_logits_graph(&self) -> bool {
        self.prunes_logits()
    }

    fn has_held_graph(&self) -> bool {
        self.held.is_some()
    }

    fn runs_other_schedules(&self) -> bool {
        self.session.is_some()
    }
}
