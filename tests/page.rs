//! The page at `/` (HTML, script and style compiled into the binary) and the endpoint it added
//! to the public API, `POST /v1/models/{model}/preprocess`. The page's behaviour in a real
//! browser is tests/python/test_page.py.

mod common;

use base64::Engine as _;

use axum::http::HeaderMap;
use common::{png, router, TestServer, MODEL};

fn content_type(headers: &HeaderMap) -> &str {
    headers["content-type"].to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_served_with_their_types() {
    let app = router(|_| {});
    let (status, headers, body) = app.call("GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(content_type(&headers), "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = String::from_utf8(body).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html:.200}");
    assert!(html.contains("<title>"));
    // Nothing from elsewhere: every script and style sheet is this server's.
    assert!(!html.contains("http://") && !html.contains("https://"));

    let mut total = html.len();
    for (path, want) in [
        ("/page/app.js", "text/javascript; charset=utf-8"),
        ("/page/style.css", "text/css; charset=utf-8"),
    ] {
        assert!(html.contains(path), "the page does not load {path}");
        let (status, headers, body) = app.call("GET", path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(content_type(&headers), want, "{path}");
        total += body.len();
    }
    // The whole first view, uncompressed (README states the figure).
    eprintln!("page first view: {total} bytes");
    assert!(total < 64 * 1024, "the page grew to {total} bytes");

    let js = String::from_utf8(app.call("GET", "/page/app.js").await.2).unwrap();
    for sample in [
        "ankle-boot.png",
        "pullover.png",
        "trouser.png",
        "shirt.png",
        "bag.png",
        "sneaker.png",
    ] {
        assert!(js.contains(sample));
        let (status, headers, bytes) = app.call("GET", &format!("/page/samples/{sample}")).await;
        assert_eq!(status, 200, "{sample}");
        assert_eq!(content_type(&headers), "image/png");
        assert_eq!(
            image::load_from_memory(&bytes)
                .unwrap()
                .into_luma8()
                .dimensions(),
            (28, 28)
        );
    }
    let (status, _, body) = app.call("GET", "/page/samples/nope.png").await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["code"],
        "not_found"
    );
}

async fn preprocess(
    s: &TestServer,
    model: &str,
    body: reqwest::multipart::Form,
) -> reqwest::Response {
    s.client
        .post(s.url(&format!("/v1/models/{model}/preprocess")))
        .multipart(body)
        .send()
        .await
        .unwrap()
}

fn part(bytes: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes).file_name("x.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preprocess_returns_the_model_sized_image() {
    let s = TestServer::start(|_| {}).await;
    // Already model-sized (16x16): resize and crop leave it alone, so the answer is the input.
    let input = png(16, 16, 7);
    let r = preprocess(
        &s,
        MODEL,
        reqwest::multipart::Form::new().part("image", part(input.clone())),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(content_type(r.headers()), "image/png");
    let seen = image::load_from_memory(&r.bytes().await.unwrap()).unwrap();
    let want = image::load_from_memory(&input).unwrap().into_rgb8();
    assert_eq!(seen.color(), image::ColorType::Rgb8);
    assert_eq!(seen.into_rgb8(), want);

    // A wide image, black at both ends: the shorter side is resized to 16 and the white centre
    // cropped.
    let wide = image::RgbImage::from_fn(64, 32, |x, _| {
        if (8..56).contains(&x) {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([0, 0, 0])
        }
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    wide.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let r = s
        .post_raw(
            &format!("/v1/models/{MODEL}/preprocess"),
            bytes.into_inner(),
            "image/png",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = image::load_from_memory(&r.bytes().await.unwrap())
        .unwrap()
        .into_rgb8();
    assert_eq!(seen.dimensions(), (16, 16));
    assert!(
        seen.pixels().all(|p| p.0 == [255, 255, 255]),
        "the crop is not the white centre"
    );

    // Exactly one image; the API's usual errors otherwise.
    let two = reqwest::multipart::Form::new()
        .part("image", part(png(8, 8, 1)))
        .part("image", part(png(8, 8, 2)));
    let r = preprocess(&s, MODEL, two).await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "one_image", "{body}");
    let r = preprocess(
        &s,
        "nope",
        reqwest::multipart::Form::new().part("image", part(png(8, 8, 1))),
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = preprocess(
        &s,
        MODEL,
        reqwest::multipart::Form::new().part("image", part(b"not an image".to_vec())),
    )
    .await;
    assert_eq!(r.status(), 400);
    // It takes no options: an unknown one, or options that are not an object, are refused.
    let r = s
        .post_raw(
            &format!("/v1/models/{MODEL}/preprocess?top_k=3"),
            png(8, 8, 1),
            "image/png",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(8, 8, 1));
    for (options, status) in [
        (serde_json::json!([null]), 400),
        (serde_json::json!({"x": 1}), 400),
        (serde_json::json!({}), 200),
        (serde_json::Value::Null, 200),
    ] {
        let r = s
            .client
            .post(s.url(&format!("/v1/models/{MODEL}/preprocess")))
            .json(&serde_json::json!({"images": [b64], "options": options}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "options {options}");
    }
    s.stop().await;
}
