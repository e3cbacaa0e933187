//! Who gets in: the admin listener (`--admin-listen`), API keys, and request ids, on the real
//! server with the fixture model.

mod common;

use std::time::Duration;

use common::{png, TestServer, MODEL};
use convrnn_serve::config::Secret;

#[tokio::test]
async fn the_admin_listener_serves_health_and_metrics_and_nothing_else() {
    let s = TestServer::start_with_admin(|_| {}).await;
    for path in [
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
    ] {
        let r = s.client.get(s.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "admin {path}");
        // KServe clients probe the API port: the probes stay there too.
        let r = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "api {path}");
    }
    let metrics = s.client.get(s.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("convrnn_worker_restarts_total"));
    let r = s.client.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "metrics moved to the admin listener");
    for path in ["/v1/models", "/openapi.json", "/docs/"] {
        let r = s.client.get(s.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "admin {path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn probes_on_the_admin_listener_do_not_wait_behind_the_connection_cap() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with_admin(|a| a.max_connections = 1).await;
    // The API's one connection slot, held by a client that never finishes its head.
    let mut held = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    held.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    s.wait_for_metric("convrnn_http_connections 1").await;
    let fresh = reqwest::Client::new();
    let api = fresh
        .get(s.url("/health/ready"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(api.is_err(), "the API listener is at its cap: {api:?}");
    let admin = tokio::time::timeout(
        Duration::from_secs(2),
        fresh.get(s.admin_url("/health/ready")).send(),
    )
    .await
    .expect("the probe is answered at once")
    .unwrap();
    assert_eq!(admin.status(), 200);
    drop(held);
    s.stop().await;
}

/// A key file in the target dir with `text`.
fn key_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn api_keys_guard_v1_and_v2_and_leave_health_docs_and_metrics_open() {
    let file = key_file("keys-guard", "# the first key\n\nkey-one\n");
    let s = TestServer::start(|a| {
        a.api_key_file = Some(file.clone());
        a.api_keys = Some(Secret("key-two, key-three".into()));
    })
    .await;
    let get = |path: &str, auth: Option<&str>| {
        let mut r = s.client.get(s.url(path));
        if let Some(auth) = auth {
            r = r.header("authorization", auth);
        }
        r.send()
    };
    // No key, a wrong key, a key with the wrong scheme.
    for (auth, challenge) in [
        (None, r#"Bearer realm="convrnn-serve""#),
        (Some("Bearer nope"), "invalid_token"),
        (Some("Basic key-one"), r#"Bearer realm="convrnn-serve""#),
    ] {
        let r = get("/v1/models", auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            www.starts_with("Bearer") && www.contains(challenge),
            "{www}"
        );
        assert_eq!(r.headers()["connection"], "close");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{body}");
        assert!(body["request_id"].is_string(), "{body}");
    }
    let r = get("/v2/models/tiny_convrnn", None).await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"].is_string() && body.get("code").is_none(),
        "{body}"
    );
    // Every configured key, the scheme in any case.
    for auth in ["Bearer key-one", "bearer key-two", "BEARER key-three"] {
        assert_eq!(get("/v1/models", Some(auth)).await.unwrap().status(), 200);
        assert_eq!(get("/v2", Some(auth)).await.unwrap().status(), 200);
    }
    let classify = s
        .client
        .post(s.url(&format!("/v1/models/{MODEL}/classify")))
        .header("authorization", "Bearer key-one")
        .header("content-type", "image/png")
        .body(png(16, 16, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(classify.status(), 200);
    let refused = s
        .client
        .post(s.url(&format!("/v1/models/{MODEL}/classify")))
        .header("content-type", "image/png")
        .body(png(16, 16, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for path in [
        "/health/live",
        "/health/ready",
        "/v2/health/ready",
        "/metrics",
        "/openapi.json",
        "/docs/",
    ] {
        assert_eq!(get(path, None).await.unwrap().status(), 200, "{path}");
    }
    // The classify and the v2 metadata refusals name the model; /v1/models ones count as "-".
    let metrics = get("/metrics", None).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"convrnn_request_failures_total{model="tiny_convrnn",reason="unauthorized"} 2"#
        ),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_rotated_key_file_is_picked_up_without_a_restart() {
    let file = key_file("keys-rotate", "old-key\n");
    let s = TestServer::start(|a| a.api_key_file = Some(file.clone())).await;
    let status = |key: &'static str| s.client.get(s.url("/v1/models")).bearer_auth(key).send();
    assert_eq!(status("old-key").await.unwrap().status(), 200);
    assert_eq!(status("new-key").await.unwrap().status(), 401);
    std::fs::write(&file, "# rotated\nnew-key\n").unwrap();
    let mut waited = Duration::ZERO;
    while status("new-key").await.unwrap().status() != 200 {
        assert!(
            waited < Duration::from_secs(5),
            "the new key was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(status("old-key").await.unwrap().status(), 401, "revoked");
    // A file emptied by mistake keeps the keys rather than locking everyone out (or in).
    std::fs::write(&file, "\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status("new-key").await.unwrap().status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn request_ids_are_taken_or_made_echoed_and_in_every_error_body() {
    let s = TestServer::start(|_| {}).await;
    let get = |path: &str, id: Option<&str>| {
        let mut r = s.client.get(s.url(path));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let r = get("/v1/models", Some("client-id-1")).await.unwrap();
    assert_eq!(r.headers()["x-request-id"], "client-id-1");
    let made: Vec<String> = futures_ids(&s).await;
    assert_ne!(made[0], made[1], "made ids differ");
    assert!(made.iter().all(|id| !id.is_empty() && id.len() <= 128));
    // Too long: replaced by one of ours, not echoed.
    let long = "a".repeat(129);
    let r = get("/health/live", Some(&long)).await.unwrap();
    let echoed = r.headers()["x-request-id"].to_str().unwrap();
    assert!(!echoed.is_empty() && echoed != long);
    // Error bodies, /v1 and v2, carry the id the header carries.
    for (path, method) in [
        ("/v1/models/nope", "GET"),
        ("/v2/models/nope", "GET"),
        ("/v1/models", "DELETE"),
        (&format!("/v1/models/{MODEL}/classify") as &str, "POST"),
    ] {
        let r = s
            .client
            .request(method.parse().unwrap(), s.url(path))
            .header("x-request-id", "err-42")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{method} {path}");
        assert_eq!(r.headers()["x-request-id"], "err-42", "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["request_id"], "err-42", "{method} {path}: {body}");
    }
    s.stop().await;
}

/// The ids the server made for two requests that sent none.
async fn futures_ids(s: &TestServer) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s.client.get(s.url("/health/ready")).send().await.unwrap();
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    ids
}
