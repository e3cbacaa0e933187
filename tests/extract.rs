//! `convrnn-serve extract` as a user runs it: the binary on the committed models and PNGs made
//! here, in-process and against the real server (tests/common), with resume after a crash,
//! shards, corrupt images and a disk too small.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_convrnn-serve");

fn tiny() -> String {
    common::fixture_dir()
        .join("tiny_convrnn.onnx")
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("convrnn-extract-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `count` PNGs of assorted sizes in `dir/images`, plus one corrupt file if asked.
fn images(dir: &Path, count: u8, corrupt_at: Option<u8>) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..count {
        let path = images.join(format!("img{i:02}.png"));
        if Some(i) == corrupt_at {
            std::fs::write(path, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
        } else {
            let side = 12 + u32::from(i % 5) * 7;
            std::fs::write(path, common::png(side, side + u32::from(i % 3), i * 17)).unwrap();
        }
    }
    images
}

fn extract(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("extract")
        .args(["--devices", "cpu", "--quiet"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "extract failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// A `.npy` file read by hand: shape, descr, payload.
type Npy = (Vec<usize>, String, Vec<u8>);

fn npy(path: &Path) -> Npy {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(
        (10 + header_len) % 64,
        0,
        "payload aligned for memory mapping"
    );
    common::read_npy(&bytes)
}

/// Every `.npy` of the extraction, by file name.
fn arrays(dir: &Path) -> Vec<(String, Npy)> {
    let m = manifest(dir);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = l["file"].as_str().unwrap().to_string();
            let a = npy(&dir.join(&file));
            (file, a)
        })
        .collect()
}

/// The manifest without what legitimately differs between runs of one plan.
fn comparable(dir: &Path) -> Value {
    let mut m = manifest(dir);
    let o = m.as_object_mut().unwrap();
    for k in ["command", "source"] {
        o.remove(k);
    }
    for f in o["failures"].as_array_mut().unwrap() {
        f.as_object_mut().unwrap().remove("error");
    }
    m
}

fn assert_same_extraction(a: &Path, b: &Path) {
    assert_eq!(comparable(a), comparable(b));
    let (xa, xb) = (arrays(a), arrays(b));
    assert!(!xa.is_empty());
    for ((name, x), (_, y)) in xa.iter().zip(&xb) {
        assert_eq!(x.0, y.0, "{name} shape");
        assert!(
            x.2 == y.2,
            "{name}: {} and {} differ",
            a.display(),
            b.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_server_give_the_same_numbers() {
    let dir = scratch("modes");
    let imgs = images(&dir, 9, Some(4));
    let server = common::TestServer::start(|_| {}).await;
    let base = server.base.clone();
    let runs: [&[&str]; 3] = [
        &[
            "--pool",
            "avg2",
            "--time-bins",
            "0:20,20:60",
            "--layers",
            "conv2,conv3,logits",
        ],
        &[
            "--pool",
            "mean",
            "--steps",
            "1:5",
            "--regions",
            "V4,pIT",
            "--dtype",
            "f16",
        ],
        &["--pool", "none", "--concurrency", "2"],
    ];
    for (i, opts) in runs.iter().enumerate() {
        let local = dir.join(format!("local{i}"));
        let remote = dir.join(format!("remote{i}"));
        let imgs = imgs.display().to_string();
        let (local_s, remote_s) = (local.display().to_string(), remote.display().to_string());
        let (base, opts, model) = (base.clone(), opts.to_vec(), tiny());
        let opts: Vec<String> = opts.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let o: Vec<&str> = opts.iter().map(String::as_str).collect();
            let mut a = vec![
                "--model",
                model.as_str(),
                "--images",
                &imgs,
                "--out",
                &local_s,
                "--batch",
                "3",
            ];
            a.extend(&o);
            ok(extract(&a));
            let mut b = vec![
                "--server",
                &base,
                "--model",
                "tiny_convrnn",
                "--images",
                &imgs,
                "--out",
                &remote_s,
                "--batch",
                "3",
            ];
            b.extend(&o);
            ok(extract(&b));
        })
        .await
        .unwrap();
        assert_same_extraction(&local, &remote);
        let m = manifest(&local);
        assert_eq!(m["complete"], true);
        assert_eq!(m["stimulus_ids"][4], "img04");
        assert_eq!(
            m["failures"].as_array().unwrap().len(),
            1,
            "{}",
            m["failures"]
        );
        assert_eq!(m["failures"][0]["row"], 4);
        assert_eq!(manifest(&remote)["failures"][0]["stimulus_id"], "img04");
        assert_eq!(m["model"]["weights_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(
            m["model"]["weights_sha256"],
            manifest(&remote)["model"]["weights_sha256"],
            "the server reports the hash of the same file"
        );
    }
    // Shapes, regions and time bins as asked.
    let m = manifest(&dir.join("local0"));
    assert_eq!(m["layers"][0]["shape"], serde_json::json!([9, 2, 8, 2, 2]));
    assert_eq!(
        m["layers"][1]["shape"],
        serde_json::json!([9, 2, 8, 2, 2]),
        "a 2x2 map stays 2x2"
    );
    assert_eq!(m["layers"][2]["shape"], serde_json::json!([9, 2, 10]));
    assert_eq!(
        m["time_bins"][1],
        serde_json::json!({"start_ms": 20.0, "end_ms": 60.0, "steps": [2, 3, 4, 5]})
    );
    let m = manifest(&dir.join("local1"));
    let names: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conv2", "conv3"]);
    assert_eq!(m["layers"][0]["region"], "V4");
    assert_eq!(npy(&dir.join("local1/conv2.npy")).1, "<f2");

    // Unpooled rows are exactly what the activations endpoint answers for the image.
    let (shape, _, payload) = npy(&dir.join("local2/conv3.npy"));
    assert_eq!(shape, vec![9, 6, 8, 2, 2]);
    let row = shape[1..].iter().product::<usize>();
    let values = common::f32s(&payload);
    let bytes = std::fs::read(imgs.join("img07.png")).unwrap();
    let answer = server
        .client
        .post(server.url("/v1/models/tiny_convrnn/activations?layers=conv3"))
        .header("content-type", "image/png")
        .header("accept", "application/x-npz")
        .body(bytes)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let npz = common::read_npz(&answer);
    assert_eq!(common::f32s(&npz["conv3"].2), values[7 * row..8 * row]);
    assert!(
        values[4 * row..5 * row].iter().all(|v| v.is_nan()),
        "the corrupt image's row is NaN"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_after_a_crash_loses_nothing() {
    let dir = scratch("resume");
    let imgs = images(&dir, 11, None).display().to_string();
    let whole = dir.join("whole").display().to_string();
    let resumed = dir.join("resumed").display().to_string();
    let model = tiny();
    let common_args = [
        "--model",
        model.as_str(),
        "--images",
        &imgs,
        "--batch",
        "2",
        "--pool",
        "max",
    ];
    ok(extract(&[&common_args[..], &["--out", &whole]].concat()));
    let crashed = extract(
        &[
            &common_args[..],
            &[
                "--out",
                &resumed,
                "--abort-after-batches",
                "2",
                "--concurrency",
                "1",
            ],
        ]
        .concat(),
    );
    assert!(!crashed.status.success(), "the run aborted");
    assert!(!Path::new(&resumed).join("manifest.json").exists());
    let log =
        std::fs::read_to_string(Path::new(&resumed).join(".extract/shard-0-of-1.jsonl")).unwrap();
    assert_eq!(
        log.lines().count(),
        2,
        "two batches recorded before the crash"
    );
    let again = extract(&[&common_args[..], &["--out", &resumed]].concat());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let out = ok(extract(
        &[&common_args[..], &["--out", &resumed, "--resume"]].concat(),
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrote 7 rows"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same_extraction(Path::new(&whole), Path::new(&resumed));
    // Other settings in the same directory are refused.
    let other = extract(
        &[
            &common_args[..],
            &["--out", &resumed, "--resume", "--steps", "0:2"],
        ]
        .concat(),
    );
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("other settings"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn three_shards_at_once_give_the_files_of_one_run() {
    let dir = scratch("shards");
    let imgs = images(&dir, 10, Some(8));
    let csv = dir.join("stimuli.csv");
    let mut text = String::from("stimulus_id,image_file_name\n");
    for i in (0..10).rev() {
        text.push_str(&format!("stim_{i},images/img{i:02}.png\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let _ = imgs;
    let csv = csv.display().to_string();
    let one = dir.join("one").display().to_string();
    let sharded = dir.join("sharded").display().to_string();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rgc_fmnist.onnx");
    let args = [
        "--model",
        model,
        "--images",
        &csv,
        "--batch",
        "2",
        "--time-bins",
        "0:30,30:80",
        "--pool",
        "avg3",
    ];
    ok(extract(&[&args[..], &["--out", &one]].concat()));
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(BIN)
                .args(["extract", "--devices", "cpu", "--quiet", "--resume"])
                .args(args)
                .args(["--out", &sharded, "--shard", &format!("{i}/3")])
                .output()
        })
        .collect();
    for c in children {
        ok(c.unwrap());
    }
    assert_same_extraction(Path::new(&one), Path::new(&sharded));
    let m = manifest(Path::new(&one));
    assert_eq!(m["stimulus_ids"][0], "stim_9", "CSV order");
    assert_eq!(m["failures"][0]["stimulus_id"], "stim_8");
    assert_eq!(
        m["layers"][0]["shape"],
        serde_json::json!([10, 2, 16, 3, 3])
    );
    assert_eq!(
        m["layers"][3]["shape"],
        serde_json::json!([10, 2, 64, 2, 2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strict_stops_at_a_corrupt_image() {
    let dir = scratch("strict");
    let imgs = images(&dir, 4, Some(2)).display().to_string();
    let out = dir.join("out").display().to_string();
    let model = tiny();
    let failed = extract(&[
        "--model", &model, "--images", &imgs, "--out", &out, "--strict", "--pool", "mean",
    ]);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("img02") && err.contains("--strict"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_a_run_that_would_fill_the_disk() {
    let dir = scratch("disk");
    let imgs = images(&dir, 3, None).display().to_string();
    let out = dir.join("out");
    let model = tiny();
    let o = out.display().to_string();
    let refused = extract(&[
        "--model",
        &model,
        "--images",
        &imgs,
        "--out",
        &o,
        "--assume-free-bytes",
        "1000",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    // 3 x (6 x 4x8x8 + 6 x 8x4x4 + 6 x 8x2x2) floats = 3 x 2496 x 4 bytes.
    assert!(
        err.contains("would write 30.0 kB") && err.contains("only 1.0 kB is free"),
        "{err}"
    );
    assert!(!out.join("conv1.npy").exists(), "nothing written");
    ok(extract(&[
        "--model",
        &model,
        "--images",
        &imgs,
        "--out",
        &o,
        "--assume-free-bytes",
        "29952",
        "--resume",
    ]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server whose worker takes `delay_ms` a batch (the engine runs one image a batch here) and
/// whose requests expire after `deadline_ms`.
async fn slow_server(delay_ms: u64, deadline_ms: u64) -> common::TestServer {
    let fake = common::Fake {
        delay: std::time::Duration::from_millis(delay_ms),
        sessions: 1,
        ..common::Fake::default()
    };
    let server = common::TestServer::fake(fake, |a| {
        a.request_timeout_ms = deadline_ms;
        a.max_batch_size = 3;
    })
    .await;
    server.wait_ready().await;
    server
}

/// `extract --server` from `server` in batches of `batch` with `concurrency` requests at once.
async fn extract_from(
    server: &common::TestServer,
    imgs: &str,
    out: &str,
    batch: usize,
    concurrency: usize,
) -> Output {
    let (base, imgs, out) = (server.base.clone(), imgs.to_string(), out.to_string());
    let (batch, concurrency) = (batch.to_string(), concurrency.to_string());
    tokio::task::spawn_blocking(move || {
        extract(&[
            "--server",
            &base,
            "--model",
            "tiny_convrnn",
            "--images",
            &imgs,
            "--out",
            &out,
            "--batch",
            &batch,
            "--concurrency",
            &concurrency,
        ])
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_slow_server_gets_fewer_requests_at_once_instead_of_endless_504s() {
    // Each image takes 300 ms on one worker and requests expire at 1 s: of four requests of one
    // image sent at once the fourth cannot finish in time, three can.
    let server = slow_server(300, 1000).await;
    let dir = scratch("deadline");
    let imgs = images(&dir, 8, None).display().to_string();
    let out = dir.join("out").display().to_string();
    let run = extract_from(&server, &imgs, &out, 1, 4).await;
    let run = ok(run);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("request deadline passed") && stderr.contains("at a time from now on"),
        "{stderr}"
    );
    let m = manifest(&dir.join("out"));
    assert_eq!(m["complete"], true);
    assert!(
        m["failures"].as_array().unwrap().is_empty(),
        "{}",
        m["failures"]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_batch_that_outlasts_the_deadline_alone_stops_the_run_with_advice() {
    let server = slow_server(700, 300).await;
    let dir = scratch("deadline-alone");
    let imgs = images(&dir, 3, None).display().to_string();
    let out = dir.join("out").display().to_string();
    let started = std::time::Instant::now();
    let run = extract_from(&server, &imgs, &out, 3, 1).await;
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("outlasts the server's request deadline")
            && stderr.contains("--request-timeout-ms"),
        "{stderr}"
    );
    // Three deadline answers and their back-off, not the ten minutes an overloaded server gets.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    server.stop().await;
}
