//! End-to-end tests of the /v1 API: the real server on an ephemeral port, real ONNX Runtime, the
//! committed fixture model.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{f32s, fixture_dir, huge_png_header, jpeg, png, read_npz, TestServer, MODEL};
use convrnn_serve::backend::ort::{init_runtime, OrtBackend, SessionOptions};
use convrnn_serve::backend::{Backend, Device, Schedule};
use convrnn_serve::model::inspect;
use convrnn_serve::presentation::Presentation;
use serde_json::Value;

fn classify_url(s: &TestServer, q: &str) -> String {
    s.url(&format!("/v1/models/{MODEL}/classify{q}"))
}

fn activations_url(s: &TestServer, q: &str) -> String {
    s.url(&format!("/v1/models/{MODEL}/activations{q}"))
}

async fn post_image(s: &TestServer, url: &str, body: Vec<u8>, ct: &str) -> reqwest::Response {
    s.client
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// What ONNX Runtime itself says for this image under the default presentation: every output,
/// `[T, ...]` flattened, computed without the server.
fn reference_outputs(image: &[u8]) -> Vec<(String, Vec<f32>)> {
    init_runtime(None, Default::default()).unwrap();
    let info = inspect(&fixture_dir().join("tiny_convrnn.onnx")).unwrap();
    let m = &info.metadata;
    let spec = convrnn_serve::image::Preprocess::for_input(&info.metadata.input);
    let frame = convrnn_serve::image::preprocess(image, &spec, &Default::default()).unwrap();
    let stimuli = Presentation::Default
        .stimuli(vec![Arc::new(frame)], None, &m.time)
        .unwrap();
    let mut movie = vec![0.0; m.time.steps * m.frame_len()];
    stimuli[0].write_movie(&mut movie, m.frame_len(), m.time.blank_value);
    // The file's own graph: the server runs default-schedule movies on the held one.
    let options = SessionOptions {
        hold_default_schedule: false,
        ..SessionOptions::new(1)
    };
    let mut backend = OrtBackend::new(&info, Device::Cpu, &options).unwrap();
    let names: Vec<String> = info.output_names().map(String::from).collect();
    backend
        .run(&movie, 1, Schedule::Other, &names)
        .unwrap()
        .into_iter()
        .map(|o| (o.name, o.data))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test]
async fn model_listing_and_description() {
    let s = TestServer::start(|_| {}).await;
    let list: Value = s
        .client
        .get(s.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["models"][0]["name"], MODEL);
    let m: Value = s
        .client
        .get(s.url(&format!("/v1/models/{MODEL}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["labels"].as_array().unwrap().len(), 10);
    assert_eq!(m["time"]["steps"], 6);
    assert_eq!(m["layers"][1]["name"], "conv2");
    assert_eq!(m["devices"][0], "cpu");
    assert_eq!(m["ready"], true);
    // The fixture's metadata has no visual_degrees: the contract's default.
    assert_eq!(m["visual_degrees"], 8.0);
    let missing = s.client.get(s.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "model_not_found");
    s.stop().await;
}

#[tokio::test]
async fn a_model_with_feedback_lists_its_feedback_edges_and_serves() {
    let s = TestServer::start(|a| a.model_dir = fixture_dir().join("feedback")).await;
    let m: Value = s
        .get("/v1/models/tiny_feedback")
        .await
        .json()
        .await
        .unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers[1]["name"], "conv2");
    assert_eq!(layers[1]["feedback_from"], serde_json::json!(["conv3"]));
    // Layers without feedback leave the field out rather than sending an empty list.
    assert!(layers[0].get("feedback_from").is_none());
    assert!(layers[2].get("feedback_from").is_none());
    let answer = post_image(
        &s,
        &s.url("/v1/models/tiny_feedback/classify?per_timestep=true"),
        png(16, 16, 3),
        "image/png",
    )
    .await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(
        answer["results"][0]["per_timestep"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    s.stop().await;
}

#[tokio::test]
async fn classify_answers_the_same_for_raw_multipart_and_json() {
    let s = TestServer::start(|_| {}).await;
    let image = png(40, 30, 7);
    let raw: Value = post_image(
        &s,
        &classify_url(&s, "?top_k=3&per_timestep=true"),
        image.clone(),
        "image/png",
    )
    .await
    .json()
    .await
    .unwrap();
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image.clone())
                .file_name("a.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .part(
            "options",
            reqwest::multipart::Part::text(r#"{"top_k": 3, "per_timestep": true}"#)
                .mime_str("application/json")
                .unwrap(),
        );
    let multipart: Value = s
        .client
        .post(classify_url(&s, ""))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let json_body = serde_json::json!({
        "images": [base64::engine::general_purpose::STANDARD.encode(&image)],
        "options": {"top_k": 3, "per_timestep": true}
    });
    let json: Value = s
        .client
        .post(classify_url(&s, ""))
        .json(&json_body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw, multipart);
    assert_eq!(raw, json);
    let result = &raw["results"][0];
    let top: Vec<f64> = result["top_k"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["probability"].as_f64().unwrap())
        .collect();
    assert_eq!(top.len(), 3);
    assert!(top.windows(2).all(|w| w[0] >= w[1]), "sorted: {top:?}");
    let per_t = result["per_timestep"].as_array().unwrap();
    assert_eq!(per_t.len(), 6);
    for p in per_t {
        let sum: f64 = p
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
    // The readout rule is `last`: top-1 is the argmax of the last step's probabilities.
    let last: Vec<f64> = per_t[5]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let argmax = (0..10)
        .max_by(|&a, &b| last[a].total_cmp(&last[b]))
        .unwrap();
    assert_eq!(result["top_k"][0]["index"], argmax);
    assert_eq!(result["readout_step"], 5);
    // Logits computed by ORT directly give the same probabilities.
    let reference = reference_outputs(&image);
    let logits = &reference.iter().find(|(n, _)| n == "logits").unwrap().1;
    let p_ref = convrnn_serve::model::readout::softmax(&logits[50..60], 1.0);
    assert!((p_ref[argmax] as f64 - last[argmax]).abs() < 1e-5);
    // Several images in one multipart request come back in order.
    let (a, b) = (png(32, 32, 1), jpeg(50, 40, 99));
    let form = reqwest::multipart::Form::new()
        .part(
            "images",
            reqwest::multipart::Part::bytes(a.clone()).file_name("a.png"),
        )
        .part(
            "images",
            reqwest::multipart::Part::bytes(b.clone()).file_name("b.jpg"),
        );
    let both: Value = s
        .client
        .post(classify_url(&s, ""))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (i, img) in [a, b].into_iter().enumerate() {
        let single: Value = post_image(&s, &classify_url(&s, ""), img, "application/octet-stream")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            both["results"][i], single["results"][0],
            "image {i} in order"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn large_answers_hold_every_image_in_order() {
    // 40 images x all layers x all steps: 102K values, an answer built off the async threads.
    let s = TestServer::start(|_| {}).await;
    let images: Vec<Vec<u8>> = (0..40).map(|i| png(16, 16, i)).collect();
    let encoded: Vec<String> = images
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
        .collect();
    let reference = reference_outputs(&images[37]);
    for accept in ["application/x-npz", "application/json"] {
        let resp = s
            .client
            .post(activations_url(&s, "?layers=all"))
            .header("accept", accept)
            .json(&serde_json::json!({ "images": encoded }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{accept}");
        let conv1 = &reference.iter().find(|(n, _)| n == "conv1").unwrap().1;
        let got: Vec<f32> = if accept == "application/json" {
            let json: Value = resp.json().await.unwrap();
            assert_eq!(
                json["layers"]["conv1"]["shape"],
                serde_json::json!([40, 6, 4, 8, 8])
            );
            json["layers"]["conv1"]["data"][37]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| t.as_array().unwrap().iter())
                .flat_map(|c| c.as_array().unwrap().iter())
                .flat_map(|r| r.as_array().unwrap().iter())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        } else {
            let arrays = read_npz(&resp.bytes().await.unwrap());
            assert_eq!(arrays["conv1"].0, vec![40, 6, 4, 8, 8]);
            f32s(&arrays["conv1"].2)[37 * conv1.len()..38 * conv1.len()].to_vec()
        };
        let diff = max_abs_diff(&got, conv1);
        assert!(diff <= 1e-5, "{accept}: image 37 max abs diff {diff}");
    }
    s.stop().await;
}

#[tokio::test]
async fn activations_equal_onnx_runtime_outputs() {
    let s = TestServer::start(|_| {}).await;
    let image = jpeg(64, 48, 3);
    let reference = reference_outputs(&image);
    let resp = s
        .client
        .post(activations_url(&s, "?layers=all,logits"))
        .header("content-type", "image/jpeg")
        .header("accept", "application/x-npz")
        .body(image.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-npz");
    let arrays = read_npz(&resp.bytes().await.unwrap());
    assert_eq!(arrays["steps"].0, vec![6]);
    assert_eq!(arrays["steps"].1, "<i8");
    assert_eq!(arrays["time_ms"].1, "<f8");
    for (name, expected) in &reference {
        let (shape, descr, data) = &arrays[name];
        assert_eq!(descr, "<f4");
        assert_eq!(shape[..2], [1, 6], "{name}");
        let got = f32s(data);
        let diff = max_abs_diff(&got, expected);
        assert!(diff <= 1e-5, "{name}: max abs diff {diff}");
    }
    assert_eq!(arrays["conv2"].0, vec![1, 6, 8, 4, 4]);
    // JSON of a selection is the same numbers, nested, at the chosen steps, and pooling is the
    // spatial mean/max of the raw maps.
    let conv2 = &reference.iter().find(|(n, _)| n == "conv2").unwrap().1;
    let json: Value = post_image(
        &s,
        &activations_url(&s, "?layers=conv2&steps=2:4"),
        image.clone(),
        "image/jpeg",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(json["steps"], serde_json::json!([2, 3]));
    assert_eq!(json["time_ms"], serde_json::json!([20.0, 30.0]));
    assert_eq!(
        json["layers"]["conv2"]["shape"],
        serde_json::json!([1, 2, 8, 4, 4])
    );
    let v = json["layers"]["conv2"]["data"][0][1][5][2][3]
        .as_f64()
        .unwrap() as f32;
    let want = conv2[3 * 128 + 5 * 16 + 2 * 4 + 3];
    assert!((v - want).abs() <= 1e-5, "{v} vs {want}");
    for (pool, f) in [("mean", 0), ("max", 1)] {
        let pooled: Value = post_image(
            &s,
            &activations_url(&s, &format!("?layers=conv2&window_ms=30:40&pool={pool}")),
            image.clone(),
            "image/jpeg",
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(pooled["steps"], serde_json::json!([3]));
        assert_eq!(
            pooled["layers"]["conv2"]["shape"],
            serde_json::json!([1, 1, 8])
        );
        let plane = &conv2[3 * 128 + 16..3 * 128 + 32]; // step 3, channel 1
        let want = if f == 0 {
            plane.iter().sum::<f32>() / 16.0
        } else {
            plane.iter().copied().fold(f32::MIN, f32::max)
        };
        let got = pooled["layers"]["conv2"]["data"][0][0][1].as_f64().unwrap() as f32;
        assert!((got - want).abs() <= 1e-5, "{pool}: {got} vs {want}");
    }
    s.stop().await;
}

#[tokio::test]
async fn presentation_schedules_change_what_the_model_sees() {
    let s = TestServer::start(|_| {}).await;
    let (img, mask) = (png(16, 16, 5), png(16, 16, 200));
    let get = |q: &'static str, with_mask: bool| {
        let mut form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(img.clone()).file_name("i.png"),
        );
        if with_mask {
            form = form.part(
                "mask",
                reqwest::multipart::Part::bytes(mask.clone()).file_name("m.png"),
            );
        }
        let req = s
            .client
            .post(activations_url(&s, q))
            .multipart(form)
            .header("accept", "application/x-npz");
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200, "{q}");
            f32s(&read_npz(&r.bytes().await.unwrap())["conv1"].2)
        }
    };
    let default_batches =
        |n: u32| format!(r#"convrnn_default_schedule_batches_total{{model="tiny_convrnn"}} {n}"#);
    let default = get("?layers=conv1", false).await;
    s.wait_for_metric(&default_batches(1)).await;
    // The fixture shows the image for 4 steps: a flash that long is the default schedule, runs on
    // the held graph and must match the default to the bit.
    let flash_4 = get("?layers=conv1&presentation=flash&on_steps=4", false).await;
    assert_eq!(default, flash_4);
    s.wait_for_metric(&default_batches(2)).await;
    let flash = get("?layers=conv1&presentation=flash&on_steps=1", false).await;
    let masked = get(
        "?layers=conv1&presentation=mask&on_steps=1&mask_steps=2",
        true,
    )
    .await;
    // Other schedules run on the file's own graph.
    assert!(s.metrics().await.lines().any(|l| l == default_batches(2)));
    let step = 4 * 8 * 8;
    // conv1 is driven from step 0 by the frame of that step: equal while the same frame is shown.
    assert_eq!(default[..step], flash[..step]);
    assert_ne!(
        default[step..2 * step],
        flash[step..2 * step],
        "flash: blank at step 1"
    );
    assert_ne!(
        masked[step..2 * step],
        flash[step..2 * step],
        "mask: the mask at step 1"
    );
    assert_eq!(
        masked[3 * step..4 * step],
        flash[3 * step..4 * step],
        "both blank at step 3"
    );
    let missing_mask = s
        .client
        .post(activations_url(&s, "?presentation=mask&mask_steps=2"))
        .header("content-type", "image/png")
        .body(img.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(missing_mask.status(), 400);
    // Schedules sized by the client are refused by arithmetic: each of these once grew the
    // server's memory by gigabytes before the length check.
    for q in [
        "?presentation=flash&on_steps=99999999999",
        "?presentation=mask&on_steps=1&mask_steps=18446744073709551615",
        "?presentation=sequence&sequence=0:18446744073709551615,blank:18446744073709551615",
    ] {
        let r = post_image(&s, &activations_url(&s, q), img.clone(), "image/png").await;
        assert_eq!(r.status(), 400, "{q}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("steps but the model runs"),
            "{q}: {v}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let s = TestServer::start(|a| {
        a.max_batch_size = 8;
        a.max_queue_delay_ms = 30;
    })
    .await;
    let images: Vec<Vec<u8>> = (0..16).map(|i| png(24, 24, i * 11)).collect();
    let mut singles = Vec::new();
    for img in &images {
        let r = post_image(
            &s,
            &activations_url(&s, "?layers=conv3&pool=mean"),
            img.clone(),
            "image/png",
        )
        .await;
        let v: Value = r.json().await.unwrap();
        singles.push(v["layers"]["conv3"]["data"].clone());
    }
    let tasks: Vec<_> = images
        .iter()
        .map(|img| {
            let req = s
                .client
                .post(activations_url(&s, "?layers=conv3&pool=mean"))
                .header("content-type", "image/png")
                .body(img.clone());
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let batch: usize = r.headers()["x-batch-size"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let v: Value = r.json().await.unwrap();
                (batch, v["layers"]["conv3"]["data"].clone())
            })
        })
        .collect();
    let mut max_batch = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (batch, data) = t.await.unwrap();
        max_batch = max_batch.max(batch);
        let a: Vec<f64> = data[0]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let b: Vec<f64> = singles[i][0]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            diff <= 1e-5,
            "request {i} got someone else's answer (diff {diff})"
        );
    }
    assert!(
        max_batch > 1,
        "concurrent requests were batched (largest batch {max_batch})"
    );
    let metrics = s.metrics().await;
    assert!(metrics.contains("convrnn_batch_size_bucket"));
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_carries_on() {
    let s = TestServer::start(|a| a.max_image_pixels = 10_000_000).await;
    let good = png(20, 20, 9);
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    // (what, url, body, content type, status, code)
    type Case<'a> = (&'a str, String, Vec<u8>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "corrupt",
            classify_url(&s, ""),
            b"\x89PNG\r\n\x1a\nnot really".to_vec(),
            "image/png",
            400,
            "invalid_image",
        ),
        (
            "truncated",
            classify_url(&s, ""),
            truncated,
            "image/png",
            400,
            "invalid_image",
        ),
        (
            "zero bytes",
            classify_url(&s, ""),
            vec![],
            "image/png",
            400,
            "invalid_image",
        ),
        (
            "20000x20000",
            classify_url(&s, ""),
            huge_png_header(20000, 20000),
            "image/png",
            413,
            "payload_too_large",
        ),
        (
            "unknown model",
            s.url("/v1/models/nope/classify"),
            good.clone(),
            "image/png",
            404,
            "model_not_found",
        ),
        (
            "unknown layer",
            activations_url(&s, "?layers=conv9"),
            good.clone(),
            "image/png",
            400,
            "unknown_layer",
        ),
        (
            "step out of range",
            activations_url(&s, "?steps=6"),
            good.clone(),
            "image/png",
            400,
            "step_out_of_range",
        ),
        (
            "range past the end",
            activations_url(&s, "?steps=2:9"),
            good.clone(),
            "image/png",
            400,
            "step_out_of_range",
        ),
        (
            "bad json",
            classify_url(&s, ""),
            b"{\"images\": [".to_vec(),
            "application/json",
            400,
            "bad_json",
        ),
        (
            "bad base64",
            classify_url(&s, ""),
            br#"{"images": ["%%%"]}"#.to_vec(),
            "application/json",
            400,
            "invalid_base64",
        ),
        (
            "wrong content type",
            classify_url(&s, ""),
            good.clone(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (
            "unknown option",
            classify_url(&s, "?topk=3"),
            good.clone(),
            "image/png",
            400,
            "bad_option",
        ),
        (
            "bad pool",
            activations_url(&s, "?pool=median"),
            good.clone(),
            "image/png",
            400,
            "bad_option",
        ),
        (
            "top_k zero",
            classify_url(&s, "?top_k=0"),
            good.clone(),
            "image/png",
            400,
            "bad_option",
        ),
        (
            "bad presentation",
            classify_url(&s, "?presentation=strobe"),
            good.clone(),
            "image/png",
            400,
            "invalid_presentation",
        ),
    ];
    for (what, url, body, ct, status, code) in cases {
        let r = post_image(&s, &url, body, ct).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(v["code"], code, "{what}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty(), "{what}");
    }
    let no_type = s
        .client
        .post(classify_url(&s, ""))
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), 415);
    let not_acceptable = s
        .client
        .post(activations_url(&s, ""))
        .header("content-type", "image/png")
        .header("accept", "text/csv")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(not_acceptable.status(), 406);
    let ok = post_image(&s, &classify_url(&s, ""), good, "image/png").await;
    assert_eq!(ok.status(), 200, "server still serves after bad input");
    let metrics = s.metrics().await;
    assert!(metrics
        .contains(r#"convrnn_request_failures_total{model="tiny_convrnn",reason="validation"}"#));
    s.stop().await;
}

#[tokio::test]
async fn oversized_bodies_and_requests_are_refused() {
    let s = TestServer::start(|a| {
        a.max_body_bytes = 10_000;
        a.queue_capacity = 2;
    })
    .await;
    let r = post_image(&s, &classify_url(&s, ""), vec![7u8; 20_000], "image/png").await;
    assert_eq!(r.status(), 413);
    let form = (0..3).fold(reqwest::multipart::Form::new(), |f, i| {
        f.part(
            "images",
            reqwest::multipart::Part::bytes(png(8, 8, i)).file_name("x.png"),
        )
    });
    let r = s
        .client
        .post(classify_url(&s, ""))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "more images than the queue can ever hold");
    s.stop().await;
}

#[tokio::test]
async fn every_supported_format_classifies() {
    let s = TestServer::start(|_| {}).await;
    let img = image::load_from_memory(&png(30, 20, 4)).unwrap();
    let formats = [
        (image::ImageFormat::Png, "image/png"),
        (image::ImageFormat::Jpeg, "image/jpeg"),
        (image::ImageFormat::WebP, "image/webp"),
        (image::ImageFormat::Bmp, "image/bmp"),
        (image::ImageFormat::Tiff, "image/tiff"),
    ];
    let mut answers = Vec::new();
    for (format, ct) in formats {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        let r = post_image(&s, &classify_url(&s, "?top_k=10"), buf.into_inner(), ct).await;
        assert_eq!(r.status(), 200, "{ct}");
        let v: Value = r.json().await.unwrap();
        answers.push((ct, v["results"][0]["top_k"].clone()));
    }
    // Lossless formats decode to the same pixels, so they get the same answer.
    for (ct, a) in &answers {
        if *ct != "image/jpeg" {
            assert_eq!(a, &answers[0].1, "{ct} vs png");
        }
    }
    s.stop().await;
}
