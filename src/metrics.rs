//! Every Prometheus metric the server exports, in one place, with one registry per server
//! instance (so tests that start several servers in one process do not share counters).
//!
//! Names carry the `convrnn_` prefix; durations are in seconds and end in `_seconds`.

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Failure reasons, as label values: keep in step with the docs and the dashboards.
pub mod reason {
    pub const VALIDATION: &str = "validation";
    pub const OVERLOADED: &str = "overloaded";
    pub const TIMEOUT: &str = "timeout";
    pub const DISCONNECTED: &str = "disconnected";
    pub const BACKEND: &str = "backend";
    pub const UNAUTHORIZED: &str = "unauthorized";
}

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by matched route, model (or "-") and status code.
    pub requests: IntCounterVec,
    /// Failed requests (or queued items, for timeouts/disconnects seen by workers) by reason.
    pub failures: IntCounterVec,
    /// Batches whose session run failed or panicked, by model and device.
    pub batch_failures: IntCounterVec,
    /// Workers restarted with a fresh session after a panic, by model and device.
    pub worker_restarts: IntCounterVec,
    /// Whole-request latency by route.
    pub request_duration: HistogramVec,
    /// Time an item waited in the queue before its batch started.
    pub queue_duration: HistogramVec,
    /// Time of one batched run on a device.
    pub inference_duration: HistogramVec,
    /// Items per batch.
    pub batch_size: HistogramVec,
    /// Items waiting per model: the autoscaling signal.
    pub queue_depth: IntGaugeVec,
    /// Queue capacity per model, so dashboards can show depth as a fraction.
    pub queue_capacity: IntGaugeVec,
    /// Seconds each device spent running batches.
    pub device_busy: prometheus::CounterVec,
    /// Batches run per device.
    pub device_batches: IntCounterVec,
    /// Seconds to inspect and load each model.
    pub model_load: GaugeVec,
    /// Batches a CPU worker ran on its model's all-cores session (`--cpu-thread-pool adaptive`).
    pub cpu_all_cores_batches: IntCounterVec,
    /// Batches whose movies all follow the default schedule, which run on the held graph where
    /// the model has one; the rest run on the file's own graph.
    pub default_schedule_batches: IntCounterVec,
    /// Start-up batch-1 times of a worker's own session and of the all-cores one.
    pub cpu_calibration: GaugeVec,
    /// Seconds each worker took to warm up.
    pub warmup: GaugeVec,
    /// Largest batch each worker runs: `--max-batch-size`, or less on CPU where
    /// `--cpu-batch-budget-ms` caps it from the measured batch-1 time.
    pub worker_max_batch: IntGaugeVec,
    /// Open HTTP connections (at most `--max-connections`).
    pub http_connections: IntGauge,
    /// Connections closed because no complete request head arrived within `--header-timeout-ms`
    /// of opening or of their last answer (idle keep-alive, or a client stalling mid-head).
    pub http_header_timeouts: IntCounter,
    /// Always 1; labels carry the build.
    pub build_info: IntGaugeVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let device_busy = prometheus::CounterVec::new(
            Opts::new(
                "convrnn_device_busy_seconds_total",
                "Seconds each device spent running batches",
            ),
            &["device", "model"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(device_busy.clone()))
            .expect("unique metric");
        let http_connections = IntGauge::new("convrnn_http_connections", "Open HTTP connections")
            .expect("valid metric");
        let http_header_timeouts = IntCounter::new(
            "convrnn_http_header_timeouts_total",
            "Connections closed for sending no complete request head within --header-timeout-ms",
        )
        .expect("valid metric");
        for metric in [
            Box::new(http_connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_header_timeouts.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        let m = Self {
            requests: counter(
                "convrnn_requests_total",
                "HTTP requests by route, model and status",
                &["route", "model", "status"],
            ),
            failures: counter(
                "convrnn_request_failures_total",
                "Failed requests by model and reason",
                &["model", "reason"],
            ),
            batch_failures: counter(
                "convrnn_batch_failures_total",
                "Batches whose session run failed or panicked, by model and device",
                &["model", "device"],
            ),
            worker_restarts: counter(
                "convrnn_worker_restarts_total",
                "Workers restarted with a fresh session after a panic, by model and device",
                &["model", "device"],
            ),
            request_duration: histogram(
                "convrnn_request_duration_seconds",
                "Whole-request latency by route",
                &["route"],
                LATENCY_BUCKETS.to_vec(),
            ),
            queue_duration: histogram(
                "convrnn_queue_duration_seconds",
                "Time items waited in the queue",
                &["model"],
                LATENCY_BUCKETS.to_vec(),
            ),
            inference_duration: histogram(
                "convrnn_inference_duration_seconds",
                "Time of one batched run",
                &["model", "device"],
                LATENCY_BUCKETS.to_vec(),
            ),
            batch_size: histogram(
                "convrnn_batch_size",
                "Items per batch",
                &["model"],
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
            ),
            queue_depth: int_gauge(
                "convrnn_queue_depth",
                "Items waiting in the queue per model",
                &["model"],
            ),
            queue_capacity: int_gauge(
                "convrnn_queue_capacity",
                "Queue capacity per model",
                &["model"],
            ),
            device_busy,
            device_batches: counter(
                "convrnn_device_batches_total",
                "Batches run per device",
                &["device", "model"],
            ),
            cpu_all_cores_batches: counter(
                "convrnn_cpu_all_cores_batches_total",
                "Batches run on the model's all-cores CPU session because they would have run alone",
                &["model"],
            ),
            default_schedule_batches: counter(
                "convrnn_default_schedule_batches_total",
                "Batches of default-schedule movies only, run on the graph that computes each run of equal frames once",
                &["model"],
            ),
            cpu_calibration: gauge(
                "convrnn_cpu_calibration_seconds",
                "Batch-1 time at start-up of a worker's own CPU session (share) and of the all-cores one",
                &["model", "session"],
            ),
            model_load: gauge(
                "convrnn_model_load_seconds",
                "Seconds to inspect and validate each model",
                &["model"],
            ),
            warmup: gauge(
                "convrnn_warmup_seconds",
                "Seconds each worker took to build its session and warm up",
                &["model", "device", "worker"],
            ),
            worker_max_batch: int_gauge(
                "convrnn_worker_max_batch_size",
                "Largest batch each worker runs (--max-batch-size, capped on CPU by --cpu-batch-budget-ms)",
                &["model", "device", "worker"],
            ),
            http_connections,
            http_header_timeouts,
            build_info: int_gauge(
                "convrnn_build_info",
                "Build information",
                &["version", "cuda"],
            ),
            registry,
        };
        m.build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                if cfg!(feature = "cuda") {
                    "true"
                } else {
                    "false"
                },
            ])
            .set(1);
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
