//! The binary itself: `inspect`, and `serve` started as a process and stopped with SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_convrnn-serve");

#[test]
fn inspect_prints_metadata_layers_and_shapes() {
    let out = Command::new(BIN)
        .args([
            "inspect",
            common::fixture_dir()
                .join("tiny_convrnn.onnx")
                .to_str()
                .unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "name:         tiny_convrnn",
        "frames [N, 6, 3, 16, 16]",
        "conv2",
        "[-1, 6, 8, 4, 4]",
        "readout:      last",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let committed = Command::new(BIN)
        .args([
            "inspect",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models/rgc_fmnist.onnx"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(committed.stdout).unwrap();
    assert!(
        text.contains("logits-only: 655 of 980 nodes"),
        "inspect should say what classification runs on:\n{text}"
    );
    let bad = Command::new(BIN)
        .args(["inspect", "Cargo.toml"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn serve_starts_answers_and_drains_on_sigterm() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut child = Command::new(BIN)
        .args(["serve", "--devices", "cpu", "--listen", &addr.to_string()])
        .env("CONVRNN_MODEL_DIR", common::fixture_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/health/ready");
    let started = Instant::now();
    loop {
        let ok = Command::new(BIN)
            .args(["healthcheck", "--url", &url])
            .status()
            .unwrap()
            .success();
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready in 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
