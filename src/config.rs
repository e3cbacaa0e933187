//! Command-line and environment configuration. Every `serve` flag also reads `CONVRNN_<NAME>`,
//! so the same binary is configured by hand, by Docker `ENV` or by a Kubernetes ConfigMap.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::backend::Device;
pub use crate::thread_plan::CpuThreadPool;

#[derive(Debug, Parser)]
#[command(
    name = "convrnn-serve",
    version,
    about = "Serve ConvRNN models of the primate visual system over HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load every model in --model-dir and serve them over HTTP.
    Serve(Box<ServeArgs>),
    /// Print a model file's metadata, layers and tensor shapes.
    Inspect {
        /// The .onnx file.
        file: PathBuf,
        #[arg(long, env = "CONVRNN_ORT_LIBRARY")]
        ort_library: Option<PathBuf>,
    },
    /// Write the features of a stimulus set to one .npy per layer plus manifest.json, from a
    /// model file in-process or from a running server.
    Extract(Box<crate::extract::ExtractArgs>),
    /// Exit 0 if the server at --url answers ready (for container HEALTHCHECKs without curl).
    Healthcheck {
        /// Default: /health/ready on loopback, on the port of CONVRNN_ADMIN_LISTEN, else of
        /// CONVRNN_LISTEN (8080 if neither is set).
        #[arg(long, env = "CONVRNN_HEALTHCHECK_URL")]
        url: Option<String>,
    },
}

/// The heading of the flags that tune performance: `-h` leaves them out, `--help` shows them.
const TUNING: &str = "Tuning (shown by --help, not -h)";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory whose `*.onnx` files are served (each under its metadata `name`).
    #[arg(long, env = "CONVRNN_MODEL_DIR", default_value = "models")]
    pub model_dir: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "CONVRNN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that serves only health (`/health/*`, `/v2/health/*`) and `/metrics`, so
    /// probes and scrapes never wait behind client connections at --max-connections and need
    /// no API key. When set, `/metrics` is served there only. Unset: all on --listen.
    #[arg(long, env = "CONVRNN_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// File of API keys, one a line (blank lines and `#` comments skipped). When set (or
    /// CONVRNN_API_KEYS), `/v1` and `/v2` need `Authorization: Bearer KEY`; health, metrics,
    /// `/docs` and `/openapi.json` stay open. Re-read when it changes (checked every second) and
    /// on SIGHUP, so keys rotate without a restart.
    #[arg(long, env = "CONVRNN_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// API keys, comma-separated, added to those of --api-key-file. Set it in the environment:
    /// a command line is visible to every user of the machine.
    #[arg(long, env = "CONVRNN_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<Secret>,

    /// Serve the models that load and list the others with their error in `/v1/models`,
    /// instead of refusing to start when any model file cannot be loaded.
    #[arg(long, env = "CONVRNN_SKIP_BROKEN_MODELS")]
    pub skip_broken_models: bool,

    /// `auto` (every visible CUDA device if the library has the CUDA provider, else CPU), `cpu`,
    /// or `cuda:0,1,...`.
    #[arg(long, env = "CONVRNN_DEVICES", default_value = "auto")]
    pub devices: String,

    /// Sessions (worker threads) per device and model; 0 = automatic: on CPU one per core (at
    /// most 4, each a copy of the model), on CUDA 2 (one assembles and copies the next batch
    /// while the other computes). On CPU they split the cores.
    #[arg(long, env = "CONVRNN_SESSIONS_PER_DEVICE", default_value_t = 0)]
    pub sessions_per_device: usize,

    /// Largest batch a worker runs at once (images, i.e. movies).
    #[arg(long, env = "CONVRNN_MAX_BATCH_SIZE", default_value_t = 8)]
    pub max_batch_size: usize,

    /// On CPU, the longest a batch may take at the batch-1 speed each worker measures at warm-up:
    /// a CPU worker runs at most budget / (batch-1 time) images at once (at least 1, at most
    /// --max-batch-size), since on CPU a big batch of a large model only multiplies latency and
    /// memory. 0 = always --max-batch-size. Not applied on CUDA
    #[arg(long, env = "CONVRNN_CPU_BATCH_BUDGET_MS", default_value_t = 200, help_heading = TUNING, hide_short_help = true)]
    pub cpu_batch_budget_ms: u64,

    /// How long an idle worker waits for a batch to fill after its first item arrived. The
    /// default 0 batches whatever queued while the devices were busy: no added latency at low
    /// load, full batches under load. Raise it only if requests arrive in bursts slower than a run.
    #[arg(long, env = "CONVRNN_MAX_QUEUE_DELAY_MS", default_value_t = 0)]
    pub max_queue_delay_ms: u64,

    /// Images that may wait per model; beyond it requests get 429. Bounds memory under overload.
    #[arg(long, env = "CONVRNN_QUEUE_CAPACITY", default_value_t = 256)]
    pub queue_capacity: usize,

    /// Deadline of a request from arrival; queued work past it is dropped before the device.
    #[arg(long, env = "CONVRNN_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Largest request body accepted (bytes).
    #[arg(long, env = "CONVRNN_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest decoded image (width x height), checked from the header before decoding: a
    /// small PNG can claim gigapixels.
    #[arg(long, env = "CONVRNN_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Most images in one request.
    #[arg(long, env = "CONVRNN_MAX_IMAGES_PER_REQUEST", default_value_t = 64)]
    pub max_images_per_request: usize,

    /// Largest activation answer returned as JSON (number of values); larger answers need
    /// `Accept: application/x-npz`.
    #[arg(long, env = "CONVRNN_MAX_JSON_VALUES", default_value_t = 2_000_000)]
    pub max_json_values: usize,

    /// Open HTTP connections at most; further clients wait in the kernel's accept backlog until
    /// one closes. Bounds what connections that have not been admitted yet can hold (each at
    /// most a 64 KiB request head).
    #[arg(long, env = "CONVRNN_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// A connection that has not sent a complete request head this long after it opened or
    /// after its last answer is closed: idle keep-alive connections and stalled clients alike.
    /// Keep it above the idle timeout of a load balancer in front (60 s on AWS ALB), or the
    /// balancer may send a request on a connection the server is closing.
    #[arg(long, env = "CONVRNN_HEADER_TIMEOUT_MS", default_value_t = 75_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,

    /// Threads of the async runtime that serves HTTP (0 = one per four cores, at least one).
    /// They parse requests, decode small images and write answers, a small cost next to
    /// inference; more of them only take turns with the inference threads on the same cores.
    /// Large images are decoded on a separate blocking pool whatever this is.
    #[arg(long, env = "CONVRNN_HTTP_THREADS", default_value_t = 0, help_heading = TUNING, hide_short_help = true)]
    pub http_threads: usize,

    /// Intra-op threads: of the shared pool (0 = one per core), or of each CPU worker's session
    /// with `adaptive` and `per-session` (0 = cores / CPU sessions).
    #[arg(long, env = "CONVRNN_INTRA_THREADS", default_value_t = 0, help_heading = TUNING, hide_short_help = true)]
    pub intra_threads: usize,

    /// `adaptive`: each CPU session runs on its share of the cores, and each model also keeps a
    /// session on every core that a batch uses when it would run alone, if that measured faster
    /// at start-up (low-load latency of all cores, saturated throughput of one core per session;
    /// one more copy of the model in memory). `per-session`: each session only on its share.
    /// `shared`: every session of every model on one pool of all cores; concurrent runs split it.
    #[arg(long, env = "CONVRNN_CPU_THREAD_POOL", value_enum, default_value_t = CpuThreadPool::Adaptive, help_heading = TUNING, hide_short_help = true)]
    pub cpu_thread_pool: CpuThreadPool,

    /// Run requests that want only the logits (classification) on a second session whose graph
    /// is cut down to what the logits depend on: ONNX Runtime otherwise computes every layer at
    /// every step for the activation outputs. Same results, faster classification, one more
    /// session per worker to build and hold. `false` serves everything from the whole graph.
    #[arg(long, env = "CONVRNN_PRUNE_LOGITS_GRAPH", default_value_t = true, action = clap::ArgAction::Set, help_heading = TUNING, hide_short_help = true)]
    pub prune_logits_graph: bool,

    /// Run movies of the default presentation (one image for `image_on_steps`, then blank) on a
    /// graph that computes each run of equal frames once, so a layer that only sees the image
    /// computes it once instead of once per step. Same results; a second session per worker (the
    /// file's own graph stays for other presentations). `false` runs everything on the file's
    /// graph.
    #[arg(long, env = "CONVRNN_HOLD_DEFAULT_SCHEDULE", default_value_t = true, action = clap::ArgAction::Set, help_heading = TUNING, hide_short_help = true)]
    pub hold_default_schedule: bool,

    /// CUDA: TF32 tensor-core math for float32 convolutions and matrix products (Ampere and
    /// newer): much faster, with products rounded to ~1e-3 relative. `false`: full float32.
    #[arg(long, env = "CONVRNN_CUDA_TF32", default_value_t = true, action = clap::ArgAction::Set, help_heading = TUNING, hide_short_help = true)]
    pub cuda_tf32: bool,

    /// CUDA: cap on each session's GPU memory arena in MiB (0 = none). With several sessions or
    /// processes on one GPU, a batch that would need more fails with a 500 for its requests
    /// instead of exhausting the GPU for the others.
    #[arg(long, env = "CONVRNN_CUDA_MEMORY_LIMIT_MB", default_value_t = 0, help_heading = TUNING, hide_short_help = true)]
    pub cuda_memory_limit_mb: u64,

    /// CUDA: `heuristic` (cuDNN picks each convolution's algorithm) or `exhaustive` (times them
    /// all the first time a batch size runs and keeps the fastest: a slow first request per size).
    #[arg(long, env = "CONVRNN_CUDA_CONV_SEARCH", value_enum, default_value_t = CudaConvSearch::Heuristic, help_heading = TUNING, hide_short_help = true)]
    pub cuda_conv_search: CudaConvSearch,

    /// On SIGTERM/SIGINT: milliseconds readiness reports 503 before the listener closes (lets
    /// load balancers notice), then in-flight requests get up to --drain-timeout-ms to finish.
    #[arg(long, env = "CONVRNN_DRAIN_DELAY_MS", default_value_t = 0)]
    pub drain_delay_ms: u64,

    /// Bound on waiting for in-flight requests at shutdown.
    #[arg(long, env = "CONVRNN_DRAIN_TIMEOUT_MS", default_value_t = 20_000)]
    pub drain_timeout_ms: u64,

    /// Path to libonnxruntime.so (default: found beside the binary or in ./.venv).
    #[arg(long, env = "CONVRNN_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "CONVRNN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// A value that must not appear in logs or `Debug` output (API keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How cuDNN picks convolution algorithms (`--cuda-conv-search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CudaConvSearch {
    Heuristic,
    Exhaustive,
}

impl ServeArgs {
    /// `--cpu-batch-budget-ms`, None when 0 (off).
    pub fn cpu_batch_budget(&self) -> Option<Duration> {
        (self.cpu_batch_budget_ms > 0).then(|| Duration::from_millis(self.cpu_batch_budget_ms))
    }

    pub fn max_queue_delay(&self) -> Duration {
        Duration::from_millis(self.max_queue_delay_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The `--cuda-*` flags as session settings.
    pub fn cuda_options(&self) -> crate::backend::ort::CudaOptions {
        crate::backend::ort::CudaOptions {
            tf32: self.cuda_tf32,
            memory_limit: usize::try_from(self.cuda_memory_limit_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            exhaustive_conv_search: self.cuda_conv_search == CudaConvSearch::Exhaustive,
        }
    }

    /// Defaults for tests and embedding: everything as the CLI would set it.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: ServeArgs,
        }
        Wrapper::parse_from(["convrnn-serve"]).args
    }
}

/// Parses `--devices`. `auto` needs to know what the runtime offers, so it takes the visible
/// CUDA devices (empty when the CUDA provider is unavailable).
pub fn parse_devices(spec: &str, cuda_devices: &[i32]) -> Result<Vec<Device>, String> {
    let spec = spec.trim();
    match spec {
        "auto" => Ok(if cuda_devices.is_empty() {
            vec![Device::Cpu]
        } else {
            cuda_devices.iter().map(|&i| Device::Cuda(i)).collect()
        }),
        "cpu" => Ok(vec![Device::Cpu]),
        s if s.starts_with("cuda") => {
            let ids = s.trim_start_matches("cuda").trim_start_matches(':');
            if ids.is_empty() {
                return Ok(vec![Device::Cuda(0)]);
            }
            ids.split(',')
                .map(|id| {
                    id.trim()
                        .parse::<i32>()
                        .map(Device::Cuda)
                        .map_err(|_| format!("bad CUDA device id {id:?} in --devices {spec:?}"))
                })
                .collect()
        }
        other => Err(format!(
            "--devices {other:?}: expected auto, cpu, or cuda:0,1,..."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        assert_eq!(parse_devices("auto", &[]).unwrap(), vec![Device::Cpu]);
        assert_eq!(
            parse_devices("auto", &[0, 1]).unwrap(),
            vec![Device::Cuda(0), Device::Cuda(1)]
        );
        assert_eq!(
            parse_devices("cuda:0,2", &[]).unwrap(),
            vec![Device::Cuda(0), Device::Cuda(2)]
        );
        assert!(parse_devices("tpu", &[]).is_err());
        assert!(parse_devices("cuda:x", &[]).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut a = ServeArgs::defaults();
        a.api_keys = Some(Secret("hunter2".into()));
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn cuda_flags_become_session_settings() {
        let mut a = ServeArgs::defaults();
        let d = a.cuda_options();
        assert!(d.tf32 && d.memory_limit == 0 && !d.exhaustive_conv_search);
        assert_eq!(d, crate::backend::ort::CudaOptions::default());
        a.cuda_tf32 = false;
        a.cuda_memory_limit_mb = 512;
        a.cuda_conv_search = CudaConvSearch::Exhaustive;
        let o = a.cuda_options();
        assert!(!o.tf32 && o.exhaustive_conv_search);
        assert_eq!(o.memory_limit, 512 << 20);
        a.cuda_memory_limit_mb = u64::MAX;
        assert_eq!(
            a.cuda_options().memory_limit,
            usize::MAX,
            "saturates, never wraps"
        );
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let d = ServeArgs::defaults();
        assert_eq!(d.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(d.max_batch_size, 8);
        assert_eq!(d.cpu_batch_budget(), Some(Duration::from_millis(200)));
        assert_eq!(d.cpu_thread_pool, CpuThreadPool::Adaptive);
    }
}
