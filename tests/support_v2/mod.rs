//! A small in-process server for the KServe, OpenAPI and metrics tests: the real router and
//! engine on 127.0.0.1:0 with the fixture model, stopped when dropped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use convrnn_serve::config::ServeArgs;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const MODEL: &str = "tiny_convrnn";

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Fixture-model defaults; `tweak` changes what a test needs.
pub fn args(tweak: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
    let mut args = ServeArgs::defaults();
    args.model_dir = fixtures();
    args.devices = "cpu".into();
    args.intra_threads = 1;
    args.drain_timeout_ms = 2_000;
    tweak(&mut args);
    args
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut ServeArgs)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(convrnn_serve::run(listener, args(tweak), async move {
            let _ = stopped.await;
        }));
        let server = TestServer {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self.client.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server at {} not ready in 60 s",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A small PNG whose pixels vary (so resizing and normalisation matter).
pub fn gradient_png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8 ^ seed,
            (y * 255 / h.max(1)) as u8,
            ((x + y) as u8).wrapping_mul(7).wrapping_add(seed),
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}
