//! The one test harness: the real server in-process on 127.0.0.1:0, with real ONNX Runtime and
//! the committed fixture model ([`TestServer::start`]) or with the fixture's description served
//! by a fake backend whose timings a test sets ([`TestServer::fake`]); request helpers; test
//! images; an independent `.npz` reader.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use convrnn_serve::backend::ort::init_runtime;
use convrnn_serve::backend::{Backend, BackendError, Device, OutputTensor, Schedule};
use convrnn_serve::config::ServeArgs;
use convrnn_serve::engine::{BackendFactory, Engine, EngineConfig, Width};
use convrnn_serve::metrics::Metrics;
use convrnn_serve::model::inspect;
use convrnn_serve::model::ModelInfo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub const MODEL: &str = "tiny_convrnn";

/// The flags every test server starts from: the fixture model on CPU with one intra-op thread
/// and a short drain bound, then `configure`; the same `ServeArgs` the binary parses.
pub fn test_args(configure: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.model_dir = fixture_dir();
    args.devices = "cpu".into();
    args.intra_threads = 1;
    args.drain_timeout_ms = 2_000;
    configure(&mut args);
    args
}

pub struct TestServer {
    pub base: String,
    /// The admin listener's base URL, when started with one ([`TestServer::start_with_admin`]).
    pub admin: Option<String>,
    pub client: reqwest::Client,
    /// What a fake server's sessions did ([`TestServer::fake`]); untouched on a real one.
    pub faults: Faults,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A fake backend's timings, devices and the engine's layout ([`TestServer::fake`],
/// [`Fake::engine`]).
#[derive(Default, Clone)]
pub struct Fake {
    /// How long building a session takes.
    pub startup: Duration,
    /// Per batch, on a worker's own session.
    pub delay: Duration,
    /// Per batch, on the all-cores session (`--cpu-thread-pool adaptive`); None: not adaptive.
    pub all_cores_delay: Option<Duration>,
    /// Fake CUDA devices, `cuda:i` taking `device_delays[i]` per batch; empty: one CPU device
    /// taking `delay`.
    pub device_delays: Vec<Duration>,
    /// The engine's warm-up runs (all-blank movies) take no time, so readiness does not wait on
    /// a slow device; otherwise they take the delay like any batch (the CPU batch budget and
    /// the all-cores calibration time them).
    pub free_warm_up: bool,
    pub sessions: usize,
    /// Faults a test arms, and what the fake sessions did.
    pub faults: Faults,
}

/// A fault the next run of any fake session injects, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The run returns an error.
    Error,
    /// The run panics.
    Panic,
}

/// A request batch a fake session started: its device and the outputs it asked for.
type Run = (Device, Vec<String>);

/// Faults armed by a test, devices it holds, the sessions the factory built and the request
/// batches the sessions started, shared with every fake session.
#[derive(Default, Clone)]
pub struct Faults {
    next: Arc<Mutex<Option<Fault>>>,
    sessions_built: Arc<AtomicUsize>,
    /// The device and outputs of each request batch, in the order the batches started.
    runs: Arc<Mutex<Vec<Run>>>,
    /// Devices whose request batches wait, once started, until [`Faults::release`].
    held: Arc<(Mutex<Vec<Device>>, Condvar)>,
}

impl Faults {
    pub fn arm(&self, fault: Fault) {
        *self.next.lock().unwrap() = Some(fault);
    }

    pub fn sessions_built(&self) -> usize {
        self.sessions_built.load(SeqCst)
    }

    /// Batches of requests (not warm-up runs) a session has started running.
    pub fn runs_started(&self) -> usize {
        self.runs.lock().unwrap().len()
    }

    /// The outputs of each request batch started so far, which tells a classification
    /// (`["logits"]`) from an activations request.
    pub fn run_outputs(&self) -> Vec<Vec<String>> {
        let runs = self.runs.lock().unwrap();
        runs.iter().map(|(_, outputs)| outputs.clone()).collect()
    }

    /// The device of each request batch started so far.
    pub fn run_devices(&self) -> Vec<Device> {
        let runs = self.runs.lock().unwrap();
        runs.iter().map(|(device, _)| *device).collect()
    }

    /// Request batches on `device` wait, once started, until [`Faults::release`]: a device as
    /// slow as the test wants, without a timing to guess.
    pub fn hold(&self, device: Device) {
        self.held.0.lock().unwrap().push(device);
    }

    /// Lets every held batch finish, and later ones run at once.
    pub fn release(&self) {
        self.held.0.lock().unwrap().clear();
        self.held.1.notify_all();
    }

    fn wait_while_held(&self, device: Device) {
        let (held, released) = &*self.held;
        let mut held = held.lock().unwrap();
        while held.contains(&device) {
            held = released.wait(held).unwrap();
        }
    }

    /// Waits (bounded) until `n` request batches have started: the state a test sets up
    /// before its next step, without guessing how long that takes.
    pub async fn wait_runs_started(&self, n: usize) {
        wait_until(&format!("{n} runs started"), || self.runs_started() >= n).await;
    }
}

/// Polls `done` every 5 ms; panics after 30 s, naming `what`.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Answers zeros of the right shapes after sleeping `delay` per batch, as `device`.
struct FakeBackend {
    info: ModelInfo,
    device: Device,
    delay: Duration,
    free_warm_up: bool,
    faults: Faults,
    /// Runs only default-schedule movies, as the server's all-cores sessions do.
    default_only: bool,
}

impl Backend for FakeBackend {
    fn run(
        &mut self,
        frames: &[f32],
        batch: usize,
        schedule: Schedule,
        outputs: &[String],
    ) -> Result<Vec<OutputTensor>, BackendError> {
        if self.default_only && schedule != Schedule::Default {
            return Err(BackendError::Run("a default-schedule-only session".into()));
        }
        let blank = self.info.metadata.time.blank_value;
        let warm_up = frames.iter().all(|v| *v == blank);
        if !warm_up {
            let run = (self.device, outputs.to_vec());
            self.faults.runs.lock().unwrap().push(run);
            self.faults.wait_while_held(self.device);
        }
        if !(warm_up && self.free_warm_up) {
            std::thread::sleep(self.delay);
        }
        let fault = self.faults.next.lock().unwrap().take();
        match fault {
            Some(Fault::Error) => return Err(BackendError::Run("injected failure".into())),
            Some(Fault::Panic) => panic!("injected panic"),
            None => {}
        }
        Ok(outputs
            .iter()
            .map(|name| {
                let mut shape = vec![batch];
                shape.extend(self.info.item_shape(name).unwrap());
                OutputTensor {
                    name: name.clone(),
                    data: vec![0.0; shape.iter().product()],
                    shape,
                }
            })
            .collect())
    }

    fn device(&self) -> Device {
        self.device
    }

    fn runs_other_schedules(&self) -> bool {
        !self.default_only
    }
}

impl Fake {
    /// The devices the engine runs on: the fake CUDA devices, or the CPU.
    pub fn devices(&self) -> Vec<Device> {
        if self.device_delays.is_empty() {
            vec![Device::Cpu]
        } else {
            (0..self.device_delays.len() as i32)
                .map(Device::Cuda)
                .collect()
        }
    }

    /// The real engine over fake sessions for the fixture's description, configured from
    /// `args` as the binary configures it; does not wait for the warm-up.
    pub fn engine(&self, args: &ServeArgs) -> (Arc<Engine>, Arc<Metrics>) {
        init_runtime(None, Default::default()).unwrap();
        let info = inspect(&fixture_dir().join("tiny_convrnn.onnx")).unwrap();
        let fake = self.clone();
        let factory: BackendFactory = Arc::new(move |info: &ModelInfo, device, width| {
            std::thread::sleep(fake.startup);
            fake.faults.sessions_built.fetch_add(1, SeqCst);
            let delay = match (device, width) {
                (Device::Cuda(i), _) => fake.device_delays[i as usize],
                (_, Width::AllCores) => fake.all_cores_delay.unwrap_or(fake.delay),
                (_, Width::Share) => fake.delay,
            };
            Ok(Box::new(FakeBackend {
                info: info.clone(),
                device,
                delay,
                free_warm_up: fake.free_warm_up,
                faults: fake.faults.clone(),
                default_only: width == Width::AllCores,
            }) as Box<dyn Backend>)
        });
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::start(
            vec![info],
            factory,
            EngineConfig {
                devices: self.devices(),
                sessions_per_device: self.sessions.max(1),
                max_batch: args.max_batch_size,
                cpu_batch_budget: args.cpu_batch_budget(),
                max_delay: args.max_queue_delay(),
                queue_capacity: args.queue_capacity,
                request_timeout: args.request_timeout(),
                cpu_adaptive: self.all_cores_delay.is_some(),
            },
            metrics.clone(),
        )
        .unwrap();
        (Arc::new(engine), metrics)
    }
}

impl TestServer {
    /// Starts a server on the fixture model with `configure` applied to [`test_args`], and
    /// waits (bounded) until it reports ready.
    pub async fn start(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let server = Self::start_unready(configure).await;
        server.wait_ready().await;
        server
    }

    pub async fn start_unready(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        Self::start_on(false, configure).await
    }

    /// As [`TestServer::start`], with health and metrics on a second listener
    /// (`--admin-listen`), whose base URL is `admin`.
    pub async fn start_with_admin(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let server = Self::start_on(true, configure).await;
        server.wait_ready().await;
        server
    }

    async fn start_on(with_admin: bool, configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = test_args(configure);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let admin = if with_admin {
            let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
            args.admin_listen = Some(admin.local_addr().unwrap());
            Some(admin)
        } else {
            None
        };
        let admin_base = admin
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let listeners = convrnn_serve::Listeners {
            api: listener,
            admin,
        };
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(convrnn_serve::run(listeners, args, async move {
            let _ = rx.await;
        }));
        let mut server = Self::new(base, tx, handle);
        server.admin = admin_base;
        server
    }

    /// Serves the fixture's description with a fake backend (`fake`'s timings) behind the real
    /// engine and HTTP server; one image a batch unless `configure` says otherwise. Returns at
    /// once: the workers warm up for `fake.startup`.
    pub async fn fake(fake: Fake, configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let args = test_args(|a| {
            a.max_batch_size = 1;
            a.max_queue_delay_ms = 0;
            a.drain_timeout_ms = 20_000;
            configure(a);
        });
        let (engine, metrics) = fake.engine(&args);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(convrnn_serve::serve(
            listener,
            args,
            engine,
            metrics,
            async move {
                let _ = rx.await;
            },
        ));
        let mut server = Self::new(base, tx, handle);
        server.faults = fake.faults;
        server
    }

    fn new(
        base: String,
        shutdown: oneshot::Sender<()>,
        handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            base,
            admin: None,
            client: reqwest::Client::new(),
            faults: Faults::default(),
            shutdown: Some(shutdown),
            handle: Some(handle),
        }
    }

    /// Waits until `/health/ready` answers 200; panics after 60 s (a debug build on a loaded
    /// 2-core machine can take that long to warm up).
    pub async fn wait_ready(&self) {
        self.wait_ready_status(200).await
    }

    /// Waits until `/health/ready` answers `status`; panics after 60 s.
    pub async fn wait_ready_status(&self, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ready_status().await != status {
            assert!(
                Instant::now() < deadline,
                "server at {} did not answer {status} to /health/ready in 60 s",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.admin.as_ref().expect("an admin listener"),
            path
        )
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// `/health/ready`'s status (on the admin listener if there is one); 0 while the listener
    /// does not answer yet.
    pub async fn ready_status(&self) -> u16 {
        let url = format!("{}/health/ready", self.admin.as_ref().unwrap_or(&self.base));
        match self.client.get(url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// The Prometheus text at `/metrics` (on the admin listener if there is one).
    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.admin.as_ref().unwrap_or(&self.base));
        let r = self.client.get(url).send().await.expect("GET /metrics");
        r.text().await.unwrap()
    }

    /// Waits (bounded) until the Prometheus text holds the line `sample` (series and value),
    /// e.g. `convrnn_queue_depth{model="tiny_convrnn"} 1`.
    pub async fn wait_for_metric(&self, sample: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == sample) {
                return;
            }
            assert!(Instant::now() < deadline, "no {sample} within 30 s: {text}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `POST path` with `body` as a raw body of type `content_type`, not yet sent.
    pub fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
    }

    /// A classify request for the fixture model with one PNG, not yet sent.
    pub fn classify_png(&self) -> reqwest::RequestBuilder {
        self.post_raw(
            &format!("/v1/models/{MODEL}/classify"),
            png(16, 16, 1),
            "image/png",
        )
    }

    /// Sends the shutdown signal; returns the server task so a test can await the drain.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.handle.take().expect("server still running")
    }

    pub async fn stop(mut self) {
        let handle = self.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("server stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

impl Drop for TestServer {
    /// A test that panicked or returned early still stops its server.
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The app's router on the fixture with real ONNX Runtime, `configure` applied to
/// [`test_args`], and no socket: for tests of what a request is answered, not of connections or
/// drains. Its workers warm up in the background; requests wait in the queue meanwhile.
pub fn router(configure: impl FnOnce(&mut ServeArgs)) -> TestRouter {
    let args = test_args(configure);
    let metrics = Arc::new(Metrics::new());
    let engine = convrnn_serve::start_engine(&args, metrics.clone()).unwrap();
    let keys = convrnn_serve::api_keys(&args).unwrap();
    let state = convrnn_serve::app_state(&args, engine.clone(), metrics, keys);
    TestRouter {
        app: convrnn_serve::api::router(state),
        engine,
    }
}

/// The router of [`router`] and its engine, whose workers it stops when dropped: a process
/// that exits while they still hold ONNX Runtime sessions can crash in the runtime's teardown.
pub struct TestRouter {
    pub app: axum::Router,
    engine: Arc<Engine>,
}

impl TestRouter {
    /// Sends `method path` with an empty body, without a socket: the status, the headers and
    /// the body.
    pub async fn call(&self, method: &str, path: &str) -> (u16, HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status.as_u16(), parts.headers, body.to_vec())
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.engine.shutdown();
    }
}

/// A PNG of `w`x`h` with a deterministic pattern seeded by `seed`, so images differ.
pub fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(7).wrapping_add(seed),
            (y as u8)
                .wrapping_mul(13)
                .wrapping_add(seed.wrapping_mul(3)),
            ((x + y) as u8).wrapping_mul(5) ^ seed,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::load_from_memory(&png(w, h, seed)).unwrap().to_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A valid PNG header that claims `w`x`h` pixels, followed by a tiny IDAT: decoding it would
/// need gigabytes, so the server must refuse it from the header.
pub fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A `.npy` read by hand: (shape, descr, little-endian payload bytes).
pub fn read_npy(data: &[u8]) -> (Vec<usize>, String, Vec<u8>) {
    assert_eq!(&data[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([data[8], data[9]]) as usize;
    let header = std::str::from_utf8(&data[10..10 + header_len]).unwrap();
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    let shape = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (shape, descr, data[10 + header_len..].to_vec())
}

/// A parsed `.npz`: name → (shape, little-endian payload bytes), read by hand so the test does
/// not trust the writer it is testing.
pub fn read_npz(bytes: &[u8]) -> std::collections::BTreeMap<String, (Vec<usize>, String, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    let mut pos = 0;
    while pos + 30 <= bytes.len() && bytes[pos..pos + 4] == [0x50, 0x4b, 0x03, 0x04] {
        let u16at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]) as usize;
        let u32at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) as usize;
        let method = u16at(pos + 8);
        assert_eq!(method, 0, "entries are stored");
        let size = u32at(pos + 18);
        let name_len = u16at(pos + 26);
        let extra_len = u16at(pos + 28);
        let name = String::from_utf8(bytes[pos + 30..pos + 30 + name_len].to_vec()).unwrap();
        let data = &bytes[pos + 30 + name_len + extra_len..pos + 30 + name_len + extra_len + size];
        out.insert(name.trim_end_matches(".npy").to_string(), read_npy(data));
        pos += 30 + name_len + extra_len + size;
    }
    out
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}
