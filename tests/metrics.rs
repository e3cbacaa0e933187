//! `/metrics` after real traffic: the figures move as they should. Requests by route, model and
//! status; failures by reason; queue, inference and request histograms; batch sizes; queue
//! depth per model; per-device busy time and batches; model load and warm-up; build info.

mod common;

use std::collections::BTreeMap;

use common::{png, TestServer, MODEL};
use serde_json::json;

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (enough of it for our own output).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                // Our label values hold no `",` sequence, so splitting on it is safe.
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// Sum of the samples of `name` whose labels include `labels`; None if there are none.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }
}

async fn scrape(s: &TestServer) -> Scrape {
    let r = s.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    Scrape(parse(&r.text().await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_move_with_traffic() {
    // A 2-image queue, and a batcher that waits 500 ms for batches to fill: a request can be
    // made to find the queue full.
    // No CPU batch budget: the cap it derives from a timed warm-up run depends on how busy the
    // machine is (tests/overload_and_lifecycle.rs tests it with a fake backend's fixed timings).
    let s = TestServer::start(|a| {
        a.queue_capacity = 2;
        a.max_queue_delay_ms = 500;
        a.cpu_batch_budget_ms = 0;
    })
    .await;
    let m = MODEL;
    let before = scrape(&s).await;

    // Present from the start: per-model queue gauges, load and warm-up times, build info.
    assert_eq!(
        before.find("convrnn_queue_depth", &[("model", m)]),
        Some(0.0)
    );
    assert_eq!(
        before.find("convrnn_queue_capacity", &[("model", m)]),
        Some(2.0)
    );
    assert!(before.get("convrnn_model_load_seconds", &[("model", m)]) > 0.0);
    assert!(before.get("convrnn_warmup_seconds", &[("model", m), ("device", "cpu")]) > 0.0);
    // Without a budget every worker batches up to the flag's 8.
    assert_eq!(
        before.get(
            "convrnn_worker_max_batch_size",
            &[("model", m), ("device", "cpu"), ("worker", "0")]
        ),
        8.0
    );
    assert_eq!(
        before.find(
            "convrnn_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    let classify = format!("/v1/models/{m}/classify");
    let png = png(24, 20, 5);
    // 1. Success: one image through /v1.
    let r = s
        .client
        .post(s.url(&classify))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 2. Validation failure (400).
    let r = s
        .client
        .post(s.url(&format!("{classify}?top_k=0")))
        .header("content-type", "image/png")
        .body(png.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // 3. Unknown model (404): counted as a request, not as a model failure.
    assert_eq!(s.get("/v1/models/nope").await.status(), 404);
    // 4. Overload (429): a 2-row KServe request fills the queue while the batcher waits; a
    //    second one arrives meanwhile.
    let frames = vec![0.5f32; 2 * 6 * 3 * 16 * 16];
    let body = json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [2, 6, 3, 16, 16], "data": frames}],
                      "outputs": [{"name": "logits"}]});
    let infer = s.url(&format!("/v2/models/{m}/infer"));
    let first = {
        let client = s.client.clone();
        let infer = infer.clone();
        let body = serde_json::to_vec(&body).unwrap();
        tokio::spawn(async move { client.post(infer).body(body).send().await.unwrap().status() })
    };
    s.wait_for_metric(&format!(r#"convrnn_queue_depth{{model="{m}"}} 2"#))
        .await;
    let r = s
        .client
        .post(&infer)
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(first.await.unwrap(), 200);

    let after = scrape(&s).await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);

    // Requests by route, model and status.
    let req = "convrnn_requests_total";
    let route_c = "/v1/models/{model}/classify";
    let route_i = "/v2/models/{model}/infer";
    assert_eq!(
        delta(req, &[("route", route_c), ("model", m), ("status", "200")]),
        1.0
    );
    assert_eq!(
        delta(req, &[("route", route_c), ("model", m), ("status", "400")]),
        1.0
    );
    assert_eq!(
        delta(
            req,
            &[
                ("route", "/v1/models/{model}"),
                ("model", "-"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        delta(req, &[("route", route_i), ("model", m), ("status", "200")]),
        1.0
    );
    assert_eq!(
        delta(req, &[("route", route_i), ("model", m), ("status", "429")]),
        1.0
    );

    // Failures by reason: exactly one of each, and nothing for the unknown model.
    let fail = "convrnn_request_failures_total";
    assert_eq!(delta(fail, &[("model", m), ("reason", "validation")]), 1.0);
    assert_eq!(delta(fail, &[("model", m), ("reason", "overloaded")]), 1.0);
    assert_eq!(delta(fail, &[("model", m), ("reason", "timeout")]), 0.0);
    assert_eq!(delta(fail, &[("model", m), ("reason", "backend")]), 0.0);
    assert_eq!(after.find(fail, &[("model", "nope")]), None);

    // Whole-request latency by route: both classify requests, both infer requests.
    let total = "convrnn_request_duration_seconds_count";
    assert_eq!(delta(total, &[("route", route_c)]), 2.0);
    assert_eq!(delta(total, &[("route", route_i)]), 2.0);
    assert!(
        delta(
            "convrnn_request_duration_seconds_sum",
            &[("route", route_i)]
        ) >= 0.4
    );

    // Three items reached the device (1 classify image + 2 KServe rows): one queue observation
    // each; the KServe pair waited about the 500 ms batching delay.
    assert_eq!(
        delta("convrnn_queue_duration_seconds_count", &[("model", m)]),
        3.0
    );
    assert!(delta("convrnn_queue_duration_seconds_sum", &[("model", m)]) >= 0.8);
    // Batches: two (the 429 never ran); sizes sum to the items; inference timed per batch;
    // the device's batch counter and busy time moved with them.
    let batches = delta("convrnn_batch_size_count", &[("model", m)]);
    assert_eq!(batches, 2.0);
    assert_eq!(delta("convrnn_batch_size_sum", &[("model", m)]), 3.0);
    assert_eq!(
        delta(
            "convrnn_inference_duration_seconds_count",
            &[("model", m), ("device", "cpu")]
        ),
        batches
    );
    assert_eq!(
        delta(
            "convrnn_device_batches_total",
            &[("device", "cpu"), ("model", m)]
        ),
        batches
    );
    assert!(
        delta(
            "convrnn_device_busy_seconds_total",
            &[("device", "cpu"), ("model", m)]
        ) > 0.0
    );
    // Histogram buckets are cumulative: the +Inf bucket equals the count.
    assert_eq!(
        after.get("convrnn_batch_size_bucket", &[("model", m), ("le", "+Inf")]),
        after.get("convrnn_batch_size_count", &[("model", m)])
    );
    // The queue drained.
    assert_eq!(
        after.find("convrnn_queue_depth", &[("model", m)]),
        Some(0.0)
    );
    s.stop().await;
}
