//! KServe Open Inference Protocol v2 over real HTTP: health, metadata, infer with JSON and with
//! the binary tensor extension (both ways), frames and encoded images, output selection, and
//! strict 4xx answers for every malformed request.

mod common;

use base64::Engine as _;
use common::{png, TestServer, MODEL};
use serde_json::{json, Value};

const T: usize = 6;
const FRAME: usize = 3 * 16 * 16;

fn infer_path() -> String {
    format!("/v2/models/{MODEL}/infer")
}

async fn post_json(s: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    // No Content-Type, as tritonclient sends it.
    s.client
        .post(s.url(path))
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap()
}

/// Posts a JSON header followed by binary tensors, with Inference-Header-Content-Length.
async fn post_binary(s: &TestServer, header: &Value, binary: &[u8]) -> reqwest::Response {
    let mut body = serde_json::to_vec(header).unwrap();
    let len = body.len();
    body.extend_from_slice(binary);
    s.client
        .post(s.url(&infer_path()))
        .header("Inference-Header-Content-Length", len.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Splits a response into its JSON header and a map from output name to FP32 values.
async fn read_outputs(r: reqwest::Response) -> (Value, Vec<(String, Vec<usize>, Vec<f32>)>) {
    assert_eq!(r.status(), 200, "{:?}", r.headers());
    let header_len = r
        .headers()
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
    let body = r.bytes().await.unwrap();
    let (json_part, mut binary) = match header_len {
        Some(n) => (&body[..n], &body[n..]),
        None => (&body[..], &[][..]),
    };
    let header: Value = serde_json::from_slice(json_part).unwrap();
    let mut outputs = Vec::new();
    for o in header["outputs"].as_array().unwrap() {
        assert_eq!(o["datatype"], "FP32");
        let shape: Vec<usize> = o["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let n: usize = shape.iter().product();
        let values: Vec<f32> = match o["parameters"]["binary_data_size"].as_u64() {
            Some(size) => {
                assert_eq!(size as usize, n * 4);
                let (mine, rest) = binary.split_at(size as usize);
                binary = rest;
                mine.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect()
            }
            None => o["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect(),
        };
        assert_eq!(values.len(), n, "{}", o["name"]);
        outputs.push((o["name"].as_str().unwrap().to_string(), shape, values));
    }
    assert!(binary.is_empty(), "unclaimed binary bytes");
    (header, outputs)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The frames the server builds for `png` under the default presentation, from the model's
/// published metadata and the library's own preprocessing.
async fn default_movie(s: &TestServer, png: &[u8]) -> Vec<f32> {
    let d: Value = s
        .get(&format!("/v1/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    let input: convrnn_serve::model::metadata::InputSpec =
        serde_json::from_value(d["input"].clone()).unwrap();
    let spec = convrnn_serve::image::Preprocess::for_input(&input);
    let frame =
        convrnn_serve::image::preprocess(png, &spec, &convrnn_serve::image::Limits::default())
            .unwrap();
    assert_eq!(frame.len(), FRAME);
    let on = d["time"]["image_on_steps"].as_u64().unwrap() as usize;
    let blank = d["time"]["blank_value"].as_f64().unwrap() as f32;
    let mut movie = Vec::with_capacity(T * FRAME);
    for t in 0..T {
        if t < on {
            movie.extend_from_slice(&frame);
        } else {
            movie.extend(std::iter::repeat_n(blank, FRAME));
        }
    }
    movie
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_elements(items: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(&(i.len() as u32).to_le_bytes());
        out.extend_from_slice(i);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metadata() {
    let s = TestServer::start(|_| {}).await;
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(s.get(path).await.status(), 200, "{path}");
    }
    for path in [
        format!("/v2/models/{MODEL}/ready"),
        format!("/v2/models/{MODEL}/versions/1/ready"),
    ] {
        assert_eq!(s.get(&path).await.status(), 200, "{path}");
    }
    let server: Value = s.get("/v2").await.json().await.unwrap();
    assert_eq!(server["name"], "convrnn-serve");
    assert!(server["version"].is_string());
    assert!(server["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));

    let meta: Value = s
        .get(&format!("/v2/models/{MODEL}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], MODEL);
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(
        meta["inputs"],
        json!([
            {"name": "frames", "datatype": "FP32", "shape": [-1, 6, 3, 16, 16]},
            {"name": "images", "datatype": "BYTES", "shape": [-1]},
        ])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "logits", "datatype": "FP32", "shape": [-1, 6, 10]},
            {"name": "conv1", "datatype": "FP32", "shape": [-1, 6, 4, 8, 8]},
            {"name": "conv2", "datatype": "FP32", "shape": [-1, 6, 8, 4, 4]},
            {"name": "conv3", "datatype": "FP32", "shape": [-1, 6, 8, 2, 2]},
        ])
    );
    let versioned: Value = s
        .get(&format!("/v2/models/{MODEL}/versions/1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(versioned, meta);

    for path in [
        "/v2/models/nope".to_string(),
        "/v2/models/nope/ready".to_string(),
        format!("/v2/models/{MODEL}/versions/2"),
        format!("/v2/models/{MODEL}/versions/2/ready"),
    ] {
        let r = s.get(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_v2_error_body(&body);
    }
    let r = post_json(
        &s,
        &format!("/v2/models/{MODEL}/versions/7/infer"),
        &json!({}),
    )
    .await;
    assert_eq!(r.status(), 404);
    // Undeclared methods.
    let r = s.get(&infer_path()).await;
    assert_eq!(r.status(), 405);
    let r = s
        .client
        .delete(s.url("/v2/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_json_and_binary_agree_with_images() {
    let s = TestServer::start(|_| {}).await;
    let pngs = [png(40, 30, 0), png(20, 28, 99)];
    let mut frames = Vec::new();
    for p in &pngs {
        frames.extend(default_movie(&s, p).await);
    }

    // 1. frames as nested JSON; all outputs by default; id echoed.
    let nested: Vec<Vec<f32>> = frames.chunks(T * FRAME).map(|c| c.to_vec()).collect();
    let request = json!({
        "id": "req-1",
        "inputs": [{"name": "frames", "datatype": "FP32", "shape": [2, 6, 3, 16, 16], "data": nested}],
    });
    let r = post_json(&s, &infer_path(), &request).await;
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert!(r.headers().contains_key("x-inference-time-ms"));
    let (header, json_out) = read_outputs(r).await;
    assert_eq!(header["model_name"], MODEL);
    assert_eq!(header["model_version"], "1");
    assert_eq!(header["id"], "req-1");
    let names: Vec<&str> = json_out.iter().map(|o| o.0.as_str()).collect();
    assert_eq!(names, ["logits", "conv1", "conv2", "conv3"]);
    assert_eq!(json_out[0].1, [2, 6, 10]);
    assert_eq!(json_out[1].1, [2, 6, 4, 8, 8]);
    assert_eq!(json_out[3].1, [2, 6, 8, 2, 2]);

    // 2. the same frames flat and binary, with outputs chosen: conv2 binary, logits JSON.
    let request = json!({
        "inputs": [{"name": "frames", "datatype": "FP32", "shape": [2, 6, 3, 16, 16],
                    "parameters": {"binary_data_size": frames.len() * 4}}],
        "outputs": [{"name": "conv2", "parameters": {"binary_data": true}}, {"name": "logits"}],
    });
    let r = post_binary(&s, &request, &f32_bytes(&frames)).await;
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let (header, bin_out) = read_outputs(r).await;
    assert!(header.get("id").is_none());
    assert_eq!(bin_out.len(), 2);
    assert_eq!(bin_out[0].0, "conv2");
    assert!(header["outputs"][0].get("data").is_none());
    assert!(header["outputs"][1]["data"].is_array());
    assert!(max_diff(&bin_out[0].2, &json_out[2].2) <= 1e-5);
    assert!(max_diff(&bin_out[1].2, &json_out[0].2) <= 1e-5);

    // 3. flat JSON with binary_data_output: every output binary.
    let request = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": "frames", "datatype": "FP32", "shape": [2, 6, 3, 16, 16], "data": frames}],
        "outputs": [{"name": "logits"}, {"name": "conv3", "parameters": {"binary_data": false}}],
    });
    let r = post_json(&s, &infer_path(), &request).await;
    let (header, out) = read_outputs(r).await;
    assert!(header["outputs"][0]["parameters"]["binary_data_size"].is_u64());
    assert!(header["outputs"][1]["data"].is_array());
    assert!(max_diff(&out[0].2, &json_out[0].2) <= 1e-5);
    assert!(max_diff(&out[1].2, &json_out[3].2) <= 1e-5);

    // 4. the encoded images, base64 in JSON: the server preprocesses them the same way.
    let b64: Vec<String> = pngs
        .iter()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p))
        .collect();
    let request = json!({
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": b64}],
        "outputs": [{"name": "logits"}, {"name": "conv1"}],
    });
    let (_, img_out) = read_outputs(post_json(&s, &infer_path(), &request).await).await;
    assert!(max_diff(&img_out[0].2, &json_out[0].2) <= 1e-5);
    assert!(max_diff(&img_out[1].2, &json_out[1].2) <= 1e-5);

    // 5. the images in binary form, binary answer.
    let request = json!({
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [2],
                    "parameters": {"binary_data_size": pngs.iter().map(|p| p.len() + 4).sum::<usize>()}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}],
    });
    let binary = bytes_elements(&[&pngs[0], &pngs[1]]);
    let (_, out) = read_outputs(post_binary(&s, &request, &binary).await).await;
    assert_eq!(out[0].1, [2, 6, 10]);
    assert!(max_diff(&out[0].2, &json_out[0].2) <= 1e-5);

    // 6. the versioned route answers the same.
    let request = json!({
        "inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16], "data": &frames[..T * FRAME]}],
        "outputs": [{"name": "logits"}],
    });
    let (_, out) = read_outputs(
        post_json(
            &s,
            &format!("/v2/models/{MODEL}/versions/1/infer"),
            &request,
        )
        .await,
    )
    .await;
    assert!(max_diff(&out[0].2, &json_out[0].2[..T * 10]) <= 1e-5);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400_with_an_error_body() {
    let s = TestServer::start(|_| {}).await;
    let frames = vec![0.1f32; T * FRAME];
    let frames_input = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "frames", "datatype": datatype, "shape": shape, "data": data}]});
    let shape = json!([1, 6, 3, 16, 16]);
    let png = base64::engine::general_purpose::STANDARD.encode(png(8, 8, 1));
    let cases: Vec<(&str, Value)> = vec![
        ("not an object", json!([1, 2])),
        ("no inputs field", json!({})),
        ("no inputs", json!({"inputs": []})),
        (
            "wrong datatype",
            frames_input(shape.clone(), "FP64", json!(frames)),
        ),
        (
            "unknown datatype",
            frames_input(shape.clone(), "FLOAT", json!(frames)),
        ),
        (
            "wrong shape",
            frames_input(json!([1, 5, 3, 16, 16]), "FP32", json!(frames)),
        ),
        (
            "short shape",
            frames_input(json!([6, 3, 16, 16]), "FP32", json!(frames)),
        ),
        (
            "negative rows",
            frames_input(json!([-1, 6, 3, 16, 16]), "FP32", json!(frames)),
        ),
        (
            "zero rows",
            frames_input(json!([0, 6, 3, 16, 16]), "FP32", json!([])),
        ),
        (
            "too few values",
            frames_input(shape.clone(), "FP32", json!(&frames[1..])),
        ),
        (
            "too many values",
            frames_input(shape.clone(), "FP32", json!([frames.clone(), [1.0]])),
        ),
        (
            "strings as FP32",
            frames_input(shape.clone(), "FP32", json!(vec!["a"; T * FRAME])),
        ),
        (
            "null data",
            frames_input(shape.clone(), "FP32", Value::Null),
        ),
        (
            "shape not ints",
            frames_input(json!(["1", 6, 3, 16, 16]), "FP32", json!(frames)),
        ),
        (
            "unknown input",
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}),
        ),
        (
            "two inputs",
            json!({"inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]},
            {"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}]}),
        ),
        (
            "images not BYTES",
            json!({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1], "data": [1.0]}]}),
        ),
        (
            "images 2-D",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1, 1], "data": [png]}]}),
        ),
        (
            "images count",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [2], "data": [png]}]}),
        ),
        (
            "images not base64",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]}),
        ),
        (
            "images not an image",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}]}),
        ),
        (
            "images empty",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [""]}]}),
        ),
        (
            "unknown output",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}],
                                  "outputs": [{"name": "conv9"}]}),
        ),
        (
            "output twice",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}],
                                "outputs": [{"name": "logits"}, {"name": "logits"}]}),
        ),
        (
            "classification",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}],
                                  "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}),
        ),
        (
            "binary_data not bool",
            json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}],
                                        "outputs": [{"name": "logits", "parameters": {"binary_data": "yes"}}]}),
        ),
        (
            "binary_data_output not bool",
            json!({"parameters": {"binary_data_output": 1},
                                               "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}]}),
        ),
        (
            "binary size without binary",
            json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": shape,
                                               "parameters": {"binary_data_size": T * FRAME * 4}}]}),
        ),
        (
            "data and binary size",
            json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": shape,
                                        "data": frames, "parameters": {"binary_data_size": 0}}]}),
        ),
        (
            "id not a string",
            json!({"id": 5, "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [png]}]}),
        ),
    ];
    for (what, body) in cases {
        let r = post_json(&s, &infer_path(), &body).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{what}: {body}");
        assert_v2_error_body(&body);
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }

    // Raw bodies: not JSON, empty.
    for raw in [&b"{not json"[..], b"", b"   "] {
        let r = s
            .client
            .post(s.url(&infer_path()))
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    // Binary framing errors.
    let header = json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16],
                                    "parameters": {"binary_data_size": T * FRAME * 4}}]});
    let good = f32_bytes(&frames);
    for (what, binary) in [
        ("short binary", &good[..good.len() - 4]),
        ("not a multiple of 4", &good[..good.len() - 1]),
    ] {
        let r = post_binary(&s, &header, binary).await;
        assert_eq!(r.status(), 400, "{what}");
    }
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 8]);
    assert_eq!(
        post_binary(&s, &header, &extra).await.status(),
        400,
        "extra bytes"
    );
    let wrong_size = json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [1, 6, 3, 16, 16],
                                        "parameters": {"binary_data_size": 12}}]});
    assert_eq!(
        post_binary(&s, &wrong_size, &good[..12]).await.status(),
        400
    );
    let r = s
        .client
        .post(s.url(&infer_path()))
        .header("Inference-Header-Content-Length", "100000")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "header length past the body");
    let r = s
        .client
        .post(s.url(&infer_path()))
        .header("Inference-Header-Content-Length", "abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let images = json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                                    "parameters": {"binary_data_size": 10}}]});
    let r = post_binary(&s, &images, &bytes_elements(&[b"abcdefghij"])[..10]).await;
    assert_eq!(r.status(), 400, "truncated BYTES element");

    // Unknown model on infer: 404 with an error body.
    let r = post_json(&s, "/v2/models/nope/infer", &json!({"inputs": []})).await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());

    // The server still works afterwards.
    let ok = json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": shape, "data": frames}],
                    "outputs": [{"name": "logits"}]});
    assert_eq!(post_json(&s, &infer_path(), &ok).await.status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_overload() {
    // A tiny body limit, a tiny queue and a two-row request limit.
    let s = TestServer::start(|a| {
        a.max_body_bytes = 64 * 1024;
        a.max_images_per_request = 2;
        a.queue_capacity = 2;
        a.max_queue_delay_ms = 500;
    })
    .await;
    let big = vec![0.0f32; 4 * T * FRAME];
    let r = post_json(
        &s,
        &infer_path(),
        &json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [4, 6, 3, 16, 16], "data": big}]}),
    )
    .await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string());
    let png = base64::engine::general_purpose::STANDARD.encode(png(8, 8, 1));
    let r = post_json(
        &s,
        &infer_path(),
        &json!({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [3], "data": [png, png, png]}]}),
    )
    .await;
    assert_eq!(r.status(), 413, "more rows than --max-images-per-request");

    // The batcher waits up to 500 ms for a batch of 8 to fill, so a first request's two rows
    // sit in the 2-row queue; a second request meanwhile is refused with 429 + Retry-After.
    let frames = vec![0.25f32; 2 * T * FRAME];
    let request = json!({"inputs": [{"name": "frames", "datatype": "FP32", "shape": [2, 6, 3, 16, 16],
                                     "parameters": {"binary_data_size": frames.len() * 4}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]});
    let first = {
        let client = s.client.clone();
        let url = s.url(&infer_path());
        let mut body = serde_json::to_vec(&request).unwrap();
        let len = body.len();
        body.extend(f32_bytes(&frames));
        tokio::spawn(async move {
            client
                .post(url)
                .header("Inference-Header-Content-Length", len.to_string())
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    s.wait_for_metric(&format!(r#"convrnn_queue_depth{{model="{MODEL}"}} 2"#))
        .await;
    let r = post_binary(&s, &request, &f32_bytes(&frames)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_v2_error_body(&body);
    assert_eq!(first.await.unwrap(), 200);
    s.stop().await;
}

/// The protocol's error body, `{"error": "..."}`, plus the request's id and nothing else.
fn assert_v2_error_body(body: &Value) {
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["error", "request_id"], "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "{body}");
}
