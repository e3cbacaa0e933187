//! Overload, readiness and drain, made deterministic with a slow fake backend behind the real
//! HTTP server and engine (the model description is the real fixture's).

mod common;

use std::time::Duration;

use common::{png, Fake, Fault, Faults, TestServer, MODEL};
use convrnn_serve::config::ServeArgs;

/// The fake backend with `startup` to build a session and `delay` per batch.
async fn start(
    startup: Duration,
    delay: Duration,
    configure: impl FnOnce(&mut ServeArgs),
) -> TestServer {
    TestServer::fake(
        Fake {
            startup,
            delay,
            ..Fake::default()
        },
        configure,
    )
    .await
}

const QUEUE_DEPTH_1: &str = r#"convrnn_queue_depth{model="tiny_convrnn"} 1"#;

/// With one worker and a queue of one slot (`queue_capacity = 1`, `max_batch_size` 1): sends A,
/// which the worker takes, then B, which waits in the slot; both still in flight.
async fn fill_worker_and_queue(
    h: &TestServer,
) -> [tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>; 2] {
    let runs = h.faults.runs_started();
    let a = tokio::spawn(h.classify_png().send());
    h.faults.wait_runs_started(runs + 1).await;
    let b = tokio::spawn(h.classify_png().send());
    h.wait_for_metric(QUEUE_DEPTH_1).await;
    [a, b]
}

/// An activations request for one layer, whose batch the fake tells from a classification's.
fn activations_png(h: &TestServer) -> reqwest::RequestBuilder {
    h.post_raw(
        &format!("/v1/models/{MODEL}/activations?layers=conv1"),
        png(16, 16, 2),
        "image/png",
    )
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() {
    let h = start(Duration::ZERO, Duration::from_millis(600), |a| {
        a.queue_capacity = 1
    })
    .await;
    h.wait_ready().await;
    // A: taken by the only worker (busy 600 ms); B: fills the one queue slot; C: refused.
    let [a, b] = fill_worker_and_queue(&h).await;
    let c = h.classify_png().send().await.unwrap();
    assert_eq!(c.status(), 429);
    assert_eq!(c.headers()["retry-after"], "1");
    // Its body was never read: the connection must not be kept to drain it.
    assert_eq!(c.headers()["connection"], "close");
    let body: serde_json::Value = c.json().await.unwrap();
    assert_eq!(body["code"], "overloaded");
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"convrnn_request_failures_total{model="tiny_convrnn",reason="overloaded"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn retry_after_follows_how_long_the_queue_takes_to_drain() {
    let h = start(Duration::ZERO, Duration::from_millis(1500), |a| {
        a.queue_capacity = 1
    })
    .await;
    h.wait_ready().await;
    // A runs at once (1.5 s). B, sent once A is on the worker, waits in the one slot until A
    // is done: its wait, just under 1.5 s, is the queue's current cost. C takes the slot B left;
    // D is refused and told to come back in 2 s (its ceiling), not the 1 s an idle queue would
    // say.
    let [a, b] = fill_worker_and_queue(&h).await;
    h.faults.wait_runs_started(2).await; // A done, B on the worker
    let c = tokio::spawn(h.classify_png().send());
    h.wait_for_metric(QUEUE_DEPTH_1).await;
    let d = h.classify_png().send().await.unwrap();
    assert_eq!(d.status(), 429);
    assert_eq!(d.headers()["retry-after"], "2");
    let body: serde_json::Value = d.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("retry in 2 s"),
        "{body}"
    );
    for r in [a, b, c] {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test]
async fn requests_past_their_deadline_are_dropped_before_the_device() {
    // A's batch takes 800 ms, past A's deadline (500 ms) and B's; C, sent when B fails, is
    // still within its deadline when A's batch ends.
    let h = start(Duration::ZERO, Duration::from_millis(800), |a| {
        a.request_timeout_ms = 500
    })
    .await;
    h.wait_ready().await;
    let a = tokio::spawn(h.classify_png().send());
    h.faults.wait_runs_started(1).await;
    let b = h.classify_png().send().await.unwrap();
    assert_eq!(b.status(), 504, "B waited behind A past its deadline");
    // C, an activations request, queues behind B: the worker's next batch is B's unless B was
    // dropped from the queue.
    let c = tokio::spawn(activations_png(&h).send());
    assert_eq!(
        a.await.unwrap().unwrap().status(),
        504,
        "A's batch outlasted its deadline"
    );
    h.faults.wait_runs_started(2).await;
    assert_eq!(
        h.faults.run_outputs(),
        [vec!["logits"], vec!["logits", "conv1"]],
        "only A and C reached the device: B was dropped from the queue"
    );
    assert_eq!(c.await.unwrap().unwrap().status(), 504);
    // Counted likewise (the warm-up runs are not).
    h.wait_for_metric(r#"convrnn_device_batches_total{device="cpu",model="tiny_convrnn"} 2"#)
        .await;
}

#[tokio::test]
async fn ready_flips_after_warm_up_and_back_during_drain() {
    let mut h = start(
        Duration::from_millis(800),
        Duration::from_millis(500),
        |a| {
            a.drain_delay_ms = 700;
        },
    )
    .await;
    assert_eq!(
        h.ready_status().await,
        503,
        "not ready while the session warms up"
    );
    let live = h
        .client
        .get(format!("{}/health/live", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    h.wait_ready().await;
    // A request in flight when the signal comes still gets its answer.
    let in_flight = tokio::spawn(h.classify_png().send());
    h.faults.wait_runs_started(1).await;
    let server = h.begin_shutdown();
    // Draining: not ready, while the in-flight request still runs.
    h.wait_ready_status(503).await;
    assert!(!in_flight.is_finished(), "answered before the drain began");
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "in-flight request completed during drain");
    let finished = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(finished
        .expect("server stops after the drain")
        .unwrap()
        .is_ok());
}

/// The value of `convrnn_worker_max_batch_size` for the one worker of the fixture's model.
fn worker_max_batch(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("convrnn_worker_max_batch_size{") && l.contains(MODEL))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("a convrnn_worker_max_batch_size sample")
}

/// Sends `n` classifications at once; the `x-batch-size` of each answer.
async fn concurrent_batch_sizes(h: &TestServer, n: usize) -> Vec<usize> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(h.classify_png().send()))
        .collect();
    let mut sizes = Vec::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        sizes.push(
            r.headers()["x-batch-size"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap(),
        );
    }
    sizes
}

/// One worker, `--max-batch-size 8`, each run `run_ms` whatever its size, `--cpu-batch-budget-ms
/// budget_ms`; returns once it is ready.
async fn start_budgeted(run_ms: u64, budget_ms: u64) -> TestServer {
    let h = start(Duration::ZERO, Duration::from_millis(run_ms), |a| {
        a.max_batch_size = 8;
        a.cpu_batch_budget_ms = budget_ms;
    })
    .await;
    h.wait_ready().await;
    h
}

#[tokio::test]
async fn a_cpu_worker_batches_only_what_its_batch_budget_allows() {
    // Every run takes 150 ms whatever its size: a 200 ms budget allows one image per batch.
    let h = start_budgeted(150, 200).await;
    assert_eq!(worker_max_batch(&h.metrics().await), 1.0);
    assert_eq!(concurrent_batch_sizes(&h, 4).await, vec![1; 4]);

    // 45 ms a run: four fit (three if a loaded machine oversleeps both timed runs), and the
    // batches the queue forms stay within the cap.
    let h = start_budgeted(45, 200).await;
    let cap = worker_max_batch(&h.metrics().await);
    assert!((3.0..=4.0).contains(&cap), "{cap}");
    let sizes = concurrent_batch_sizes(&h, 12).await;
    assert!(
        sizes.iter().all(|&b| b as f64 <= cap),
        "{sizes:?} within {cap}"
    );
    assert!(
        sizes.iter().any(|&b| b > 1),
        "queued requests share a batch: {sizes:?}"
    );

    // Without a budget the same worker batches up to --max-batch-size.
    let h = start_budgeted(150, 0).await;
    assert_eq!(worker_max_batch(&h.metrics().await), 8.0);
    let sizes = concurrent_batch_sizes(&h, 4).await;
    assert!(
        sizes.iter().any(|&b| b > 1),
        "queued requests share a batch: {sizes:?}"
    );
}

#[tokio::test]
async fn requests_whose_client_left_never_reach_the_device() {
    let h = start(Duration::ZERO, Duration::from_millis(500), |_| {}).await;
    h.wait_ready().await;
    let a = tokio::spawn(h.classify_png().send());
    h.faults.wait_runs_started(1).await;
    // B gives up while A still holds the worker; its connection closes.
    let b = h
        .classify_png()
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(b.is_err(), "client timed out");
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    // C, an activations request, queues behind B: the worker's next batch is B's unless B was
    // dropped from the queue.
    assert_eq!(activations_png(&h).send().await.unwrap().status(), 200);
    assert_eq!(
        h.faults.run_outputs(),
        [vec!["logits"], vec!["logits", "conv1"]],
        "only A and C reached the device"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"convrnn_device_batches_total{device="cpu",model="tiny_convrnn"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"convrnn_request_failures_total{model="tiny_convrnn",reason="disconnected"} 1"#
        ),
        "{metrics}"
    );
}

fn inference_ms(r: &reqwest::Response) -> f64 {
    r.headers()["x-inference-time-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

const ALL_CORES_BATCHES: &str = r#"convrnn_cpu_all_cores_batches_total{model="tiny_convrnn"}"#;

/// Two adaptive CPU workers whose own sessions take `share_ms` per batch and whose model's
/// all-cores session takes `all_cores_ms`; returns once ready.
async fn start_adaptive(share_ms: u64, all_cores_ms: u64) -> TestServer {
    let h = TestServer::fake(
        Fake {
            delay: Duration::from_millis(share_ms),
            all_cores_delay: Some(Duration::from_millis(all_cores_ms)),
            sessions: 2,
            ..Fake::default()
        },
        |_| {},
    )
    .await;
    h.wait_ready().await;
    h
}

#[tokio::test]
async fn adaptive_workers_run_lone_batches_on_all_cores_and_concurrent_ones_on_their_share() {
    let h = start_adaptive(300, 60).await;
    let metrics = h.metrics().await;
    let calibrated = |s: &str| {
        metric(
            &metrics,
            &format!(r#"convrnn_cpu_calibration_seconds{{model="tiny_convrnn",session="{s}"}}"#),
        )
    };
    assert!(calibrated("share") >= 0.3 && calibrated("all_cores") < 0.3);

    let alone = h.classify_png().send().await.unwrap();
    assert_eq!(alone.status(), 200);
    assert!(inference_ms(&alone) < 250.0, "ran on the all-cores session");
    assert_eq!(metric(&h.metrics().await, ALL_CORES_BATCHES), 1.0);

    // Four at once: whichever batch starts while another runs, or with work still queued, stays
    // on its worker's share, so at most the first can be lent the all-cores session.
    let burst: Vec<_> = (0..4)
        .map(|_| tokio::spawn(h.classify_png().send()))
        .collect();
    let mut on_share = 0;
    for r in burst {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        on_share += usize::from(inference_ms(&r) >= 250.0);
    }
    assert!(on_share >= 3, "{on_share} of 4 ran on their worker's share");
    assert!(metric(&h.metrics().await, ALL_CORES_BATCHES) <= 2.0);
}

#[tokio::test]
async fn a_lone_batch_of_another_schedule_stays_on_its_workers_session() {
    // The all-cores session holds only the graph for default-schedule movies.
    let h = start_adaptive(300, 60).await;
    let flash = h
        .post_raw(
            "/v1/models/tiny_convrnn/classify?presentation=flash&on_steps=1",
            common::png(16, 16, 1),
            "image/png",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(flash.status(), 200);
    assert!(inference_ms(&flash) >= 250.0, "ran on its worker's share");
    assert_eq!(metric(&h.metrics().await, ALL_CORES_BATCHES), 0.0);
    let default = h.classify_png().send().await.unwrap();
    assert_eq!(default.status(), 200);
    assert_eq!(metric(&h.metrics().await, ALL_CORES_BATCHES), 1.0);
}

#[tokio::test]
async fn an_all_cores_session_that_is_not_faster_is_dropped() {
    let h = start_adaptive(50, 60).await;
    let alone = h.classify_png().send().await.unwrap();
    assert_eq!(alone.status(), 200);
    assert_eq!(metric(&h.metrics().await, ALL_CORES_BATCHES), 0.0);
}

/// Connects and sends the first part of a request head, never the blank line that ends it.
async fn stalled_head(base: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /v1/models/tiny_convrnn/classify HTTP/1.1\r\nHost: x\r\nX-Pad: aaaa")
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn a_connection_that_stalls_in_its_request_head_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let h = start(Duration::ZERO, Duration::ZERO, |a| {
        a.header_timeout_ms = 300
    })
    .await;
    h.wait_ready().await;
    let mut stalled = stalled_head(&h.base).await;
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept the stalled connection open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    // The harness client's keep-alive connection (from `wait_ready`) sat idle as long, and was
    // closed the same way; the client reconnects for the next request.
    let ok = h.classify_png().send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("convrnn_http_header_timeouts_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let h = start(Duration::ZERO, Duration::ZERO, |a| a.max_connections = 2).await;
    h.wait_ready().await; // its connection is kept alive: one of the two slots
    let held = stalled_head(&h.base).await; // the second
    let other = reqwest::Client::new(); // a new connection, the third
    let url = format!("{}/health/live", h.base);
    let waiting = tokio::spawn(async move { other.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!waiting.is_finished(), "a third connection was served");
    let metrics = h.metrics().await; // on the harness client's open connection
    assert!(metrics.contains("convrnn_http_connections 2"), "{metrics}");
    drop(held);
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_head_over_the_cap_is_refused_with_431() {
    let h = start(Duration::ZERO, Duration::ZERO, |_| {}).await;
    h.wait_ready().await;
    let r = h
        .client
        .get(format!("{}/health/live", h.base))
        .header("x-pad", "a".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let ok = h.classify_png().send().await.unwrap();
    assert_eq!(ok.status(), 200, "the server carries on");
}

#[tokio::test]
async fn a_v2_request_without_an_admission_slot_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(Duration::ZERO, Duration::from_millis(1500), |a| {
        a.queue_capacity = 1
    })
    .await;
    h.wait_ready().await;
    // Slots: queue capacity 1 + one batch of 1 for the one worker. A runs, B waits: both taken.
    let [a, b] = fill_worker_and_queue(&h).await;
    // A head announcing a 1 MB body that never comes: only a refusal before the body answers.
    let mut c = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
        .await
        .unwrap();
    c.write_all(
        b"POST /v2/models/tiny_convrnn/infer HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"inputs\": [",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(1), c.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after:"), "{head}");
    for r in [a, b] {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
}

#[tokio::test]
async fn a_body_that_does_not_arrive_within_the_request_timeout_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start(Duration::ZERO, Duration::ZERO, |a| {
        a.request_timeout_ms = 400
    })
    .await;
    h.wait_ready().await;
    for (path, content_type) in [
        ("/v1/models/tiny_convrnn/classify", "image/png"),
        ("/v2/models/tiny_convrnn/infer", "application/json"),
    ] {
        let mut c = tokio::net::TcpStream::connect(h.base.trim_start_matches("http://"))
            .await
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\n0123456789"
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut answer))
            .await
            .expect("answered while the body trickles")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("connection: close"), "{path}: {answer}");
        assert!(started.elapsed() >= Duration::from_millis(350), "{path}");
    }
    // Their admission slots are free again.
    assert_eq!(h.classify_png().send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn several_sessions_share_the_work() {
    // Each batch holds its worker for 600 ms, so while the first request runs the second can
    // only be taken by the other worker, however the machine schedules them.
    let h = TestServer::fake(
        Fake {
            delay: Duration::from_millis(600),
            sessions: 2,
            ..Fake::default()
        },
        |_| {},
    )
    .await;
    h.wait_ready().await;
    let first = tokio::spawn(h.classify_png().send());
    h.faults.wait_runs_started(1).await;
    let second = tokio::spawn(h.classify_png().send());
    let mut workers = std::collections::HashSet::new();
    for r in [first, second] {
        let r = r.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        workers.insert(r.headers()["x-worker"].to_str().unwrap().to_string());
    }
    assert_eq!(
        workers,
        std::collections::HashSet::from(["cpu#0".to_string(), "cpu#1".to_string()])
    );
}

#[tokio::test]
async fn sigterm_under_load_answers_every_admitted_request() {
    // Two workers, 40 ms a batch of up to 4: 48 requests keep them busy for ~250 ms.
    let mut h = TestServer::fake(
        Fake {
            delay: Duration::from_millis(40),
            sessions: 2,
            ..Fake::default()
        },
        |a| {
            a.max_batch_size = 4;
            a.drain_delay_ms = 300;
            a.drain_timeout_ms = 5_000;
        },
    )
    .await;
    h.wait_ready().await;
    let load: Vec<_> = (0..48)
        .map(|_| tokio::spawn(h.classify_png().send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let signalled = std::time::Instant::now();
    let server = h.begin_shutdown();
    // Readiness fails during the drain delay, while the load is still being answered.
    h.wait_ready_status(503).await;
    // Sent during the drain delay, on a new connection: still served (the listener stays open
    // so load balancers can catch up) or refused with 503, never lost.
    let late = reqwest::Client::new()
        .post(h.url(&format!("/v1/models/{MODEL}/classify")))
        .header("content-type", "image/png")
        .body(png(16, 16, 2))
        .send()
        .await
        .unwrap()
        .status();
    assert!(late == 200 || late == 503, "{late}");
    let (mut ok, mut other) = (0, vec![]);
    for r in load {
        match r.await.unwrap() {
            Ok(r) if r.status() == 200 => ok += 1,
            Ok(r) => other.push(r.status().to_string()),
            Err(e) => other.push(e.to_string()),
        }
    }
    assert_eq!(ok, 48, "lost or failed: {other:?}");
    let finished = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server exits after the drain");
    assert!(finished.unwrap().is_ok());
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_millis(300 + 5_000),
        "exit within the grace period (drain delay + drain timeout): {took:?}"
    );
}

/// Serves with one worker whose fake sessions take `startup` to build; returns once ready.
async fn start_faulty(startup: Duration, faults: &Faults) -> TestServer {
    let h = TestServer::fake(
        Fake {
            startup,
            delay: Duration::from_millis(20),
            faults: faults.clone(),
            ..Fake::default()
        },
        |_| {},
    )
    .await;
    h.wait_ready().await;
    h
}

#[tokio::test]
async fn a_failed_session_run_answers_500_backend_and_the_worker_carries_on() {
    let faults = Faults::default();
    let h = start_faulty(Duration::ZERO, &faults).await;
    faults.arm(Fault::Error);
    let r = h.classify_png().send().await.unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "backend", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("injected failure"),
        "{body}"
    );
    assert_eq!(h.classify_png().send().await.unwrap().status(), 200);
    assert_eq!(
        h.ready_status().await,
        200,
        "an error is no reason to restart"
    );
    assert_eq!(faults.sessions_built(), 1);
    let metrics = h.metrics().await;
    for series in [
        r#"convrnn_request_failures_total{model="tiny_convrnn",reason="backend"} 1"#,
        r#"convrnn_batch_failures_total{device="cpu",model="tiny_convrnn"} 1"#,
        r#"convrnn_worker_restarts_total{device="cpu",model="tiny_convrnn"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
}

#[tokio::test]
async fn a_panicking_session_run_is_answered_and_the_worker_restarts_with_a_fresh_session() {
    let faults = Faults::default();
    // Building a session takes 600 ms: long enough to see the restart from outside.
    let h = start_faulty(Duration::from_millis(600), &faults).await;
    assert_eq!(faults.sessions_built(), 1);
    faults.arm(Fault::Panic);
    let r = tokio::time::timeout(Duration::from_secs(5), h.classify_png().send())
        .await
        .expect("the batch a panic hit is answered, not left hanging")
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "backend", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("injected panic"),
        "{body}"
    );
    assert_eq!(
        h.ready_status().await,
        503,
        "not ready while the model's only worker rebuilds its session"
    );
    let model: serde_json::Value = h
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(model["ready"], false, "{model}");
    // A request that arrives meanwhile waits in the queue for the fresh session.
    let waiting = h.classify_png().send().await.unwrap();
    assert_eq!(waiting.status(), 200);
    h.wait_ready().await;
    assert_eq!(faults.sessions_built(), 2, "a fresh session was built");
    let metrics = h.metrics().await;
    for series in [
        r#"convrnn_worker_restarts_total{device="cpu",model="tiny_convrnn"} 1"#,
        r#"convrnn_batch_failures_total{device="cpu",model="tiny_convrnn"} 1"#,
        r#"convrnn_request_failures_total{model="tiny_convrnn",reason="backend"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    assert_eq!(h.classify_png().send().await.unwrap().status(), 200);
}
