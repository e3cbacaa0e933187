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

/// Runs `serve` on `model_dir` with `extra` flags and expects it to refuse to start: returns
/// its stderr's last line, after checking it is the one-line error and the exit status is 1.
fn serve_refuses(model_dir: &std::path::Path, extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--devices", "cpu", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("CONVRNN_MODEL_DIR", model_dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve {extra:?} on {} did not exit", model_dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.starts_with("convrnn-serve: error: "), "{stderr}");
    assert!(
        !stderr.contains("Caused by"),
        "one line, not a chain: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    last
}

/// A fresh directory under the target dir for one test's model files.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = bytes[*pos];
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    value
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The fixture ONNX file with its `convrnn` metadata entry (ModelProto field 14, a key/value
/// pair) passed through `edit`: `None` drops it. Walks the protobuf's top level by hand.
fn fixture_with_metadata(edit: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let bytes = std::fs::read(common::fixture_dir().join("tiny_convrnn.onnx")).unwrap();
    let (mut pos, mut out, mut seen) = (0, Vec::new(), false);
    while pos < bytes.len() {
        let start = pos;
        let key = read_varint(&bytes, &mut pos);
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                read_varint(&bytes, &mut pos);
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = read_varint(&bytes, &mut pos) as usize;
                let body = &bytes[pos..pos + len];
                pos += len;
                if field == 14 {
                    // StringStringEntryProto: key = 1, value = 2.
                    let (mut p, mut k, mut v) = (0, String::new(), String::new());
                    while p < body.len() {
                        let tag = read_varint(body, &mut p);
                        let n = read_varint(body, &mut p) as usize;
                        let s = String::from_utf8(body[p..p + n].to_vec()).unwrap();
                        p += n;
                        if tag >> 3 == 1 {
                            k = s
                        } else {
                            v = s
                        }
                    }
                    if k == "convrnn" {
                        seen = true;
                        if let Some(v) = edit(&v) {
                            let mut entry = vec![0x0a];
                            write_varint(&mut entry, k.len() as u64);
                            entry.extend_from_slice(k.as_bytes());
                            entry.push(0x12);
                            write_varint(&mut entry, v.len() as u64);
                            entry.extend_from_slice(v.as_bytes());
                            out.push(0x72);
                            write_varint(&mut out, entry.len() as u64);
                            out.extend_from_slice(&entry);
                        }
                        continue;
                    }
                }
            }
            other => panic!("wire type {other} at {start}"),
        }
        out.extend_from_slice(&bytes[start..pos]);
    }
    assert!(seen, "the fixture has convrnn metadata");
    out
}

/// The fixture with every `Conv` node turned into an operator no runtime has (same length, so
/// the protobuf stays valid; names that contain `Conv` change consistently).
fn with_unknown_op(fixture: &[u8]) -> Vec<u8> {
    let mut bytes = fixture.to_vec();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        if &bytes[i..i + 4] == b"Conv" {
            bytes[i..i + 4].copy_from_slice(b"Cxnv");
        }
        i += 1;
    }
    bytes
}

#[test]
fn a_model_file_that_cannot_be_loaded_stops_start_up_with_one_line_naming_it() {
    let fixture = std::fs::read(common::fixture_dir().join("tiny_convrnn.onnx")).unwrap();
    let contradicting = fixture_with_metadata(|json| {
        let mut m: serde_json::Value = serde_json::from_str(json).unwrap();
        m["time"]["steps"] = serde_json::json!(m["time"]["steps"].as_u64().unwrap() + 3);
        Some(m.to_string())
    });
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "truncated",
            fixture[..fixture.len() / 2].to_vec(),
            "not a valid ONNX protobuf",
        ),
        (
            "not_onnx",
            b"GIF89a not a model".to_vec(),
            "not a valid ONNX protobuf",
        ),
        ("no_metadata", fixture_with_metadata(|_| None), "convrnn"),
        ("contradicting", contradicting, "contract"),
        // Read fine, but ONNX Runtime cannot build a session of it: found by the workers.
        (
            "unknown_op",
            with_unknown_op(&fixture),
            "could not create a session",
        ),
    ];
    for (name, bytes, reason) in cases {
        let dir = scratch_dir(&format!("broken-{name}"));
        std::fs::write(dir.join(format!("{name}.onnx")), bytes).unwrap();
        let line = serve_refuses(&dir, &[]);
        assert!(line.contains(&format!("{name}.onnx")), "{name}: {line}");
        assert!(line.contains(reason), "{name}: {line}");
        assert!(line.contains("--skip-broken-models"), "{name}: {line}");
    }
}

#[test]
fn a_missing_or_wrong_onnx_runtime_library_is_one_line() {
    let line = serve_refuses(
        &common::fixture_dir(),
        &["--ort-library", "/nonexistent/libonnxruntime.so"],
    );
    assert!(
        line.contains("--ort-library /nonexistent/libonnxruntime.so: no such file"),
        "{line}"
    );
    let not_a_library = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let line = serve_refuses(&common::fixture_dir(), &["--ort-library", not_a_library]);
    assert!(line.contains("ONNX Runtime library"), "{line}");
    assert!(line.contains("Cargo.toml"), "{line}");
}

/// A plain HTTP/1.1 request on a new connection: (status, headers and body as text); status 0
/// when nothing listens there yet.
fn http(addr: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{request}").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// Starts `serve` with `extra` flags and environment; returns the child, its address and a
/// reader of its stderr, once ready.
fn serve_ready(
    model_dir: &std::path::Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String, std::path::PathBuf) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-{}.log", addr.replace(':', "-")));
    let child = Command::new(BIN)
        .args(["serve", "--devices", "cpu", "--listen", &addr])
        .args(extra)
        .env("CONVRNN_MODEL_DIR", model_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(
        &addr,
        "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .0 != 200
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not ready in 30 s: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr, log)
}

fn stop(mut child: std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn with_skip_broken_models_the_others_serve_and_the_broken_one_is_listed() {
    let dir = scratch_dir("skip-broken");
    std::fs::copy(
        common::fixture_dir().join("tiny_convrnn.onnx"),
        dir.join("tiny_convrnn.onnx"),
    )
    .unwrap();
    std::fs::write(dir.join("broken.onnx"), b"not a model").unwrap();
    let unknown_op = fixture_with_metadata(|json| {
        let mut m: serde_json::Value = serde_json::from_str(json).unwrap();
        m["name"] = serde_json::json!("unknown_op");
        Some(m.to_string())
    });
    std::fs::write(dir.join("unknown_op.onnx"), with_unknown_op(&unknown_op)).unwrap();
    let (child, addr, _) = serve_ready(&dir, &["--skip-broken-models"], &[]);
    let (status, answer) = http(
        &addr,
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    stop(child);
    assert_eq!(status, 200, "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["models"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["models"][0]["name"], "tiny_convrnn");
    let unavailable = body["unavailable"].as_array().unwrap();
    assert_eq!(unavailable.len(), 2, "{body}");
    assert!(
        unavailable[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.onnx"),
        "{body}"
    );
    assert!(!unavailable[0]["error"].as_str().unwrap().is_empty());
    // Its file read fine; its sessions could not be built, and readiness did not wait for it.
    assert!(
        unavailable[1]["file"]
            .as_str()
            .unwrap()
            .ends_with("unknown_op.onnx"),
        "{body}"
    );
    let error = unavailable[1]["error"].as_str().unwrap();
    assert!(error.contains("could not create a session"), "{error}");
}

#[test]
fn api_keys_are_never_logged_and_request_ids_are_in_the_log_lines() {
    let (child, addr, log) = serve_ready(
        &common::fixture_dir(),
        &[],
        &[
            ("CONVRNN_API_KEYS", "sekrit-key-1"),
            ("RUST_LOG", "debug,ort=warn,hyper=warn"),
        ],
    );
    let (status, _) = http(
        &addr,
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer wrong-key-2\r\nx-request-id: cli-req-401\r\n\r\n",
    );
    assert_eq!(status, 401);
    let (status, answer) = http(
        &addr,
        "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Authorization: Bearer sekrit-key-1\r\nx-request-id: cli-req-200\r\n\r\n",
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("x-request-id: cli-req-200"), "{answer}");
    stop(child);
    let text = std::fs::read_to_string(log).unwrap();
    for id in ["cli-req-401", "cli-req-200"] {
        assert!(text.contains(id), "no log line carries {id}:\n{text}");
    }
    assert!(!text.contains("sekrit-key-1"), "a key was logged:\n{text}");
    assert!(
        !text.contains("wrong-key-2"),
        "a presented key was logged:\n{text}"
    );
}
