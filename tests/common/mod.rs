//! Starts the real server in-process on 127.0.0.1:0 with real ONNX Runtime and the committed
//! fixture model, and helpers to make test images.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use convrnn_serve::config::ServeArgs;
use tokio::sync::oneshot;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub const MODEL: &str = "tiny_convrnn";

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on the fixture model with `configure` applied to the default flags, and
    /// waits (bounded) until it reports ready.
    pub async fn start(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let server = Self::start_unready(configure).await;
        server.wait_ready().await;
        server
    }

    pub async fn start_unready(configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let mut args = ServeArgs::defaults();
        args.model_dir = fixture_dir();
        args.devices = "cpu".into();
        args.intra_threads = 1;
        configure(&mut args);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(convrnn_serve::run(listener, args, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn wait_ready(&self) {
        for _ in 0..300 {
            if let Ok(r) = self.client.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("server at {} did not become ready in 15 s", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
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
        let shape_text = header
            .split("'shape': (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap();
        let shape: Vec<usize> = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        out.insert(
            name.trim_end_matches(".npy").to_string(),
            (shape, descr, data[10 + header_len..].to_vec()),
        );
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
