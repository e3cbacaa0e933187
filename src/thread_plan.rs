//! How the process divides its cores: the async runtime's threads, the worker sessions per
//! device, their intra-op threads, the optional all-cores sessions and the decode permits. Every
//! count the server derives from the core count is decided here, once, at start-up, and logged;
//! docs/performance.md ("Threading") gives the reasoning behind each default.

use crate::backend::Device;
use crate::config::ServeArgs;

/// How CPU sessions get their intra-op threads (`--cpu-thread-pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuThreadPool {
    Adaptive,
    PerSession,
    Shared,
}

impl CpuThreadPool {
    /// Threads of the shared pool, or of each of `cpu_sessions` per-session pools: `requested`,
    /// or for 0 every core (shared) or an equal share of them (per-session: oversubscribing the
    /// cores only adds context switches).
    pub fn intra_threads(self, requested: usize, cores: usize, cpu_sessions: usize) -> usize {
        match (self, requested) {
            (_, n) if n > 0 => n,
            (CpuThreadPool::Shared, _) => cores,
            (CpuThreadPool::PerSession | CpuThreadPool::Adaptive, _) => {
                (cores / cpu_sessions.max(1)).max(1)
            }
        }
    }
}

/// The cores this process may use. `available_parallelism` honours cgroup CPU quotas (a
/// Kubernetes CPU limit), unlike ONNX Runtime's own default of one thread per physical core of
/// the node.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The thread layout of one server process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPlan {
    pub cores: usize,
    /// Worker threads of the async runtime (HTTP, small-image decoding, answers).
    pub http_threads: usize,
    /// Worker threads, each owning a session, per device and model.
    pub sessions_per_device: usize,
    pub pool: CpuThreadPool,
    /// Intra-op threads of each CPU session's own pool; with the shared pool, its size.
    pub intra_threads: usize,
    /// `Some(n)`: one process-wide intra-op pool of `n` threads that every session uses.
    pub shared_pool_threads: Option<usize>,
    /// Each model also keeps an all-cores session that a lone batch may borrow.
    pub all_cores_sessions: bool,
    /// Requests whose images decode on the blocking pool at once.
    pub decode_permits: usize,
}

impl ThreadPlan {
    /// The async runtime's threads: `--http-threads`, or for 0 a quarter of the cores (at least
    /// one), since HTTP work is small next to inference and more threads only take turns with it.
    /// Needed before the runtime (and so before the rest of the plan) exists.
    pub fn http_threads(args: &ServeArgs, cores: usize) -> usize {
        if args.http_threads > 0 {
            args.http_threads
        } else {
            (cores / 4).max(1)
        }
    }

    /// Requests decoding large images at once: one per core, since decoding is CPU-bound.
    /// Needed by the HTTP state, which tests also build around engines with fake backends.
    pub fn decode_permits(cores: usize) -> usize {
        cores.max(1)
    }

    /// The plan for serving `models` models on `devices` with `cores` cores.
    pub fn new(args: &ServeArgs, cores: usize, devices: &[Device], models: usize) -> Self {
        let on_cpu = devices.contains(&Device::Cpu);
        let sessions_per_device = match args.sessions_per_device {
            // On CPU one session per core, at most 4 (each is a copy of the model); on CUDA 2,
            // so one assembles and copies the next batch while the other computes.
            0 if on_cpu => cores.clamp(1, 4),
            0 => 2,
            n => n,
        };
        let cpu_sessions = if on_cpu {
            models.max(1) * sessions_per_device
        } else {
            1
        };
        let pool = args.cpu_thread_pool;
        let intra_threads = pool.intra_threads(args.intra_threads, cores, cpu_sessions);
        Self {
            cores,
            http_threads: Self::http_threads(args, cores),
            sessions_per_device,
            pool,
            intra_threads,
            shared_pool_threads: (pool == CpuThreadPool::Shared)
                .then(|| pool.intra_threads(args.intra_threads, cores, 1)),
            // A worker whose share is already every core has nothing to borrow.
            all_cores_sessions: pool == CpuThreadPool::Adaptive && intra_threads < cores,
            decode_permits: Self::decode_permits(cores),
        }
    }

    /// One log line with every number, so an operator sees how the cores were divided.
    pub fn log(&self) {
        tracing::info!(
            cores = self.cores,
            http_threads = self.http_threads,
            sessions_per_device = self.sessions_per_device,
            pool = ?self.pool,
            intra_threads = self.intra_threads,
            shared_pool_threads = ?self.shared_pool_threads,
            all_cores_sessions = self.all_cores_sessions,
            decode_permits = self.decode_permits,
            "thread plan"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(configure: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut a = ServeArgs::defaults();
        configure(&mut a);
        a
    }

    #[test]
    fn http_threads_default_to_a_quarter_of_the_cores() {
        let d = args(|_| {});
        assert_eq!(ThreadPlan::http_threads(&d, 1), 1);
        assert_eq!(ThreadPlan::http_threads(&d, 2), 1);
        assert_eq!(ThreadPlan::http_threads(&d, 8), 2);
        assert_eq!(ThreadPlan::http_threads(&d, 64), 16);
        assert_eq!(
            ThreadPlan::http_threads(&args(|a| a.http_threads = 3), 2),
            3
        );
    }

    #[test]
    fn intra_threads_per_pool() {
        use CpuThreadPool::*;
        assert_eq!(Shared.intra_threads(0, 8, 4), 8);
        assert_eq!(PerSession.intra_threads(0, 8, 4), 2);
        assert_eq!(PerSession.intra_threads(0, 2, 4), 1);
        assert_eq!(PerSession.intra_threads(3, 8, 4), 3);
        assert_eq!(Shared.intra_threads(3, 8, 4), 3);
        assert_eq!(Adaptive.intra_threads(0, 8, 4), 2);
        assert_eq!(Adaptive.intra_threads(0, 2, 2), 1);
    }

    #[test]
    fn automatic_sessions_per_device() {
        let d = args(|_| {});
        let sessions = |a: &ServeArgs, devices: &[Device], cores| {
            ThreadPlan::new(a, cores, devices, 1).sessions_per_device
        };
        assert_eq!(sessions(&d, &[Device::Cpu], 2), 2);
        assert_eq!(sessions(&d, &[Device::Cpu], 1), 1);
        assert_eq!(sessions(&d, &[Device::Cpu], 32), 4);
        assert_eq!(sessions(&d, &[Device::Cuda(0), Device::Cuda(1)], 32), 2);
        let three = args(|a| a.sessions_per_device = 3);
        assert_eq!(sessions(&three, &[Device::Cpu], 2), 3);
    }

    #[test]
    fn the_default_plan_on_two_cores() {
        // Two models on a 2-core CPU: 2 sessions each, 4 CPU sessions share 2 cores, so each
        // gets one thread and an all-cores session is worth keeping.
        let plan = ThreadPlan::new(&args(|_| {}), 2, &[Device::Cpu], 2);
        assert_eq!(
            plan,
            ThreadPlan {
                cores: 2,
                http_threads: 1,
                sessions_per_device: 2,
                pool: CpuThreadPool::Adaptive,
                intra_threads: 1,
                shared_pool_threads: None,
                all_cores_sessions: true,
                decode_permits: 2,
            }
        );
    }

    #[test]
    fn shared_pool_and_single_session_plans() {
        let shared = ThreadPlan::new(
            &args(|a| a.cpu_thread_pool = CpuThreadPool::Shared),
            8,
            &[Device::Cpu],
            1,
        );
        assert_eq!(shared.shared_pool_threads, Some(8));
        assert!(!shared.all_cores_sessions);
        // One session per model already has every core: nothing to borrow.
        let alone = ThreadPlan::new(&args(|a| a.sessions_per_device = 1), 4, &[Device::Cpu], 1);
        assert_eq!(alone.intra_threads, 4);
        assert!(!alone.all_cores_sessions);
        // On CUDA only, the CPU-side share is not split between sessions.
        let gpu = ThreadPlan::new(&args(|_| {}), 16, &[Device::Cuda(0)], 3);
        assert_eq!(gpu.sessions_per_device, 2);
        assert_eq!(gpu.intra_threads, 16);
    }
}
