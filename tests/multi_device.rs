//! The worker design over several devices, proven on CPU with a fake backend standing in for
//! each GPU (the real fixture's description, the real engine, queue and metrics): every device's
//! workers pull batches from the model's one queue, so both devices get work, a slow or stuck
//! device does not hold up the others, and the metrics tell the devices apart. Also what
//! `--devices cuda:0,1` does where there is no CUDA provider.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture_dir, test_args, wait_until, Fake, Faults, MODEL};
use convrnn_serve::backend::ort::init_runtime;
use convrnn_serve::backend::Device;
use convrnn_serve::engine::{Engine, FrameSource, Stimulus};
use convrnn_serve::metrics::Metrics;

/// An engine over `delays.len()` fake CUDA devices, device `i` taking `delays[i]` per batch
/// (warm-up runs take no time, so readiness does not wait on a slow device); returns once ready.
async fn start(
    delays: Vec<Duration>,
    sessions_per_device: usize,
    max_batch: usize,
) -> (Arc<Engine>, Arc<Metrics>, Faults) {
    let fake = Fake {
        device_delays: delays,
        free_warm_up: true,
        sessions: sessions_per_device,
        ..Fake::default()
    };
    let args = test_args(|a| {
        a.max_batch_size = max_batch;
        a.max_queue_delay_ms = 0;
        a.cpu_batch_budget_ms = 0;
        a.queue_capacity = 1024;
        a.request_timeout_ms = 30_000;
    });
    let (engine, metrics) = fake.engine(&args);
    wait_until("the engine is ready", || engine.is_ready()).await;
    (engine, metrics, fake.faults)
}

fn stimulus(engine: &Engine) -> Stimulus {
    let m = &engine.model(MODEL).unwrap().info.metadata;
    Stimulus {
        frames: vec![Arc::new(vec![0.25; m.frame_len()])],
        schedule: vec![FrameSource::Frame(0); m.time.image_on_steps],
    }
}

/// One request of one image; returns the device that ran it and when it was answered.
async fn classify(engine: &Engine) -> (String, Duration) {
    let started = Instant::now();
    let results = engine
        .infer(MODEL, vec![stimulus(engine)], vec!["logits".into()])
        .await
        .unwrap();
    (results[0].device.clone(), started.elapsed())
}

fn batches_on(metrics: &Metrics, device: &str) -> u64 {
    metrics
        .device_batches
        .with_label_values(&[device, MODEL])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_devices_get_batches_and_the_faster_one_more() {
    // cuda:1 is 4x slower than cuda:0.
    let (engine, metrics, _) = start(
        vec![Duration::from_millis(10), Duration::from_millis(40)],
        1,
        4,
    )
    .await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { classify(&engine).await })
        })
        .collect();
    let mut per_device: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        *per_device.entry(t.await.unwrap().0).or_default() += 1;
    }
    let (fast, slow) = (
        per_device["cuda:0"],
        per_device.get("cuda:1").copied().unwrap_or(0),
    );
    assert_eq!(fast + slow, 64, "{per_device:?}");
    assert!(slow > 0, "cuda:1 never got a batch: {per_device:?}");
    assert!(
        fast > slow,
        "the faster device should take more: {per_device:?}"
    );
    // Per-device metrics: each device's batches counted under its own label (the warm-up runs
    // are not counted), and together they carried every image.
    let (b0, b1) = (
        batches_on(&metrics, "cuda:0"),
        batches_on(&metrics, "cuda:1"),
    );
    assert!(b0 > 0 && b1 > 0, "device_batches cuda:0={b0} cuda:1={b1}");
    assert!(
        b0 + b1 <= 64 && b0 + b1 >= 64 / 4,
        "cuda:0={b0} cuda:1={b1}"
    );
    let busy = |d: &str| metrics.device_busy.with_label_values(&[d, MODEL]).get();
    assert!(
        busy("cuda:1") >= b1 as f64 * 0.040 * 0.9,
        "busy {}",
        busy("cuda:1")
    );
    assert!(
        busy("cuda:0") >= b0 as f64 * 0.010 * 0.9,
        "busy {}",
        busy("cuda:0")
    );
    let text = metrics.render();
    for d in ["cuda:0", "cuda:1"] {
        assert!(
            text.contains(&format!("device=\"{d}\"")),
            "no series for {d} in the exposition"
        );
    }
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_device_does_not_starve_the_other() {
    // cuda:1 is stuck (a device stalled, or far slower): its batches wait until the test lets
    // them go. cuda:0 takes 10 ms a batch.
    let (engine, _metrics, faults) =
        start(vec![Duration::from_millis(10), Duration::ZERO], 1, 1).await;
    faults.hold(Device::Cuda(1));
    // One request at a time (each sent once the one before is on a device), so request i is
    // batch i and every request finds a device idle or only cuda:0 busy: cuda:1 takes at most
    // one, the first it sees, and holds it; all the others must go to cuda:0 meanwhile.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move { classify(&engine).await }));
        faults.wait_runs_started(i + 1).await;
    }
    let devices = faults.run_devices();
    assert_eq!(devices.len(), 30, "one batch a request");
    let on_fast = devices.iter().filter(|d| **d == Device::Cuda(0)).count();
    assert!(on_fast >= 29, "{on_fast} of 30 requests ran on cuda:0");
    // Every request on cuda:0 is answered while cuda:1 still holds its one.
    let mut stuck = Vec::new();
    for (task, device) in tasks.into_iter().zip(devices) {
        if device == Device::Cuda(1) {
            stuck.push(task);
            continue;
        }
        let (answered_by, _) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a request on cuda:0 waited behind the stuck device")
            .unwrap();
        assert_eq!(answered_by, "cuda:0");
    }
    faults.release();
    for task in stuck {
        assert_eq!(task.await.unwrap().0, "cuda:1");
    }
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_device_multiply_the_workers_of_every_device() {
    // 2 devices x 2 sessions, every batch held until all four have started: four requests can
    // only all start if four workers run at once.
    let (engine, _metrics, faults) = start(vec![Duration::ZERO; 2], 2, 1).await;
    faults.hold(Device::Cuda(0));
    faults.hold(Device::Cuda(1));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let r = engine
                    .infer(MODEL, vec![stimulus(&engine)], vec!["logits".into()])
                    .await
                    .unwrap();
                r[0].worker.clone()
            })
        })
        .collect();
    faults.wait_runs_started(4).await;
    faults.release();
    let mut workers = Vec::new();
    for t in tasks {
        workers.push(t.await.unwrap());
    }
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 4, "four distinct workers: {workers:?}");
    assert!(workers.iter().filter(|w| w.starts_with("cuda:1#")).count() == 2);
    engine.shutdown();
}

#[test]
fn devices_cuda_0_1_without_a_cuda_provider_fails_with_one_clear_line() {
    // The test build links the CPU library (and, without `--features cuda`, no CUDA provider at
    // all): the server must refuse at start-up, naming the cause, not fall back to CPU.
    init_runtime(None, Default::default()).unwrap();
    if convrnn_serve::backend::ort::cuda_available() {
        eprintln!("skipped: this ONNX Runtime library has the CUDA provider");
        return;
    }
    let err = convrnn_serve::resolve_devices("cuda:0,1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("CUDA provider"), "{err}");
    assert!(err.contains("cuda:0,1"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_convrnn-serve"))
        .args(["serve", "--listen", "127.0.0.1:0", "--devices", "cuda:0,1"])
        .arg("--model-dir")
        .arg(fixture_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("asks for CUDA") && stderr.contains("no CUDA provider"),
        "{stderr}"
    );
}
