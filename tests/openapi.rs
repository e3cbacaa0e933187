//! The OpenAPI document: the served `/openapi.json` equals the checked-in `openapi/openapi.json`
//! (regenerate with `UPDATE_OPENAPI=1 cargo test --test openapi`), every route is in it,
//! undeclared methods get 405, and the `/docs` page renders the operations in a real headless
//! browser (Debian `chromium`; skipped with a message when it is not installed).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{router, TestServer};
use serde_json::Value;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

fn pretty(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap() + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_matches_the_checked_in_file() {
    let app = router(|_| {});
    let (status, _, body) = app.call("GET", "/openapi.json").await;
    assert_eq!(status, 200);
    let served: Value = serde_json::from_slice(&body).unwrap();
    let generated = serde_json::to_value(convrnn_serve::api::openapi::document()).unwrap();
    assert_eq!(served, generated, "/openapi.json is not document()");
    let (_, _, body) = app.call("GET", "/docs/openapi.json").await;
    let docs_copy: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(docs_copy, served, "the docs page reads another document");
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pretty(&served)).unwrap();
        eprintln!("wrote {}", path.display());
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with UPDATE_OPENAPI=1 cargo test --test openapi",
            path.display()
        )
    });
    assert!(
        text == pretty(&served),
        "{} differs from the served /openapi.json: if the API change is intended, run \
         UPDATE_OPENAPI=1 cargo test --test openapi and commit the file",
        path.display()
    );
}

#[test]
fn every_route_is_documented_with_examples() {
    let doc = serde_json::to_value(convrnn_serve::api::openapi::document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("get", "/v1/models"),
        ("get", "/v1/models/{model}"),
        ("post", "/v1/models/{model}/classify"),
        ("post", "/v1/models/{model}/activations"),
        ("post", "/v1/models/{model}/preprocess"),
        ("get", "/health/live"),
        ("get", "/health/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/v2"),
        ("get", "/v2/health/live"),
        ("get", "/v2/health/ready"),
        ("get", "/v2/models/{model}"),
        ("get", "/v2/models/{model}/versions/{version}"),
        ("get", "/v2/models/{model}/ready"),
        ("get", "/v2/models/{model}/versions/{version}/ready"),
        ("post", "/v2/models/{model}/infer"),
        ("post", "/v2/models/{model}/versions/{version}/infer"),
    ] {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not documented"))[method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
        for p in op["parameters"].as_array().into_iter().flatten() {
            assert!(p["description"].is_string(), "{method} {path}: {p}");
            if p["in"] == "path" {
                assert!(p.get("example").is_some(), "{method} {path}: {p}");
            }
        }
        for (status, response) in op["responses"].as_object().unwrap() {
            for (media, content) in response["content"].as_object().into_iter().flatten() {
                // An example on the media type, or on the schema it refers to.
                let schema_example = content["schema"]["$ref"]
                    .as_str()
                    .and_then(|r| r.rsplit('/').next())
                    .is_some_and(|name| {
                        doc["components"]["schemas"][name].get("example").is_some()
                    });
                let has_example = content.get("example").is_some()
                    || schema_example
                    || media.contains("octet-stream")
                    || media.contains("npz")
                    || media.starts_with("image/")
                    || path == "/openapi.json";
                assert!(has_example, "{method} {path} {status} {media}: no example");
            }
        }
        if let Some(body) = op.get("requestBody") {
            let json = &body["content"]["application/json"];
            assert!(
                json.get("example").is_some(),
                "{method} {path}: JSON body without example"
            );
        }
    }
    let v1_paths = paths.keys().filter(|p| p.starts_with("/v1")).count();
    assert_eq!(v1_paths, 5, "a /v1 route is missing from this test's list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_methods_get_405() {
    let app = router(|_| {});
    for (method, path) in [
        ("DELETE", "/v1/models"),
        ("POST", "/v1/models/tiny_convrnn"),
        ("GET", "/v1/models/tiny_convrnn/classify"),
        ("PUT", "/v1/models/tiny_convrnn/activations"),
        ("GET", "/v1/models/tiny_convrnn/preprocess"),
        ("POST", "/health/live"),
        ("POST", "/health/ready"),
        ("POST", "/metrics"),
        ("DELETE", "/openapi.json"),
        ("POST", "/v2"),
        ("PATCH", "/v2/models/tiny_convrnn"),
        ("GET", "/v2/models/tiny_convrnn/infer"),
    ] {
        let (status, headers, body) = app.call(method, path).await;
        assert_eq!(status, 405, "{method} {path}");
        assert!(headers.contains_key("allow"), "{method} {path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(explicit));
    }
    let dirs: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_page_lists_the_operations_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED docs_page_lists_the_operations_in_a_headless_browser: no chromium on PATH \
             (apt-get install -y chromium, or set CHROMIUM=/path/to/browser)"
        );
        return;
    };
    let s = TestServer::start(|_| {}).await;
    let profile = std::env::temp_dir().join(format!("convrnn-docs-test-{}", std::process::id()));
    let url = s.url("/docs/");
    let dom = tokio::task::spawn_blocking({
        let profile = profile.clone();
        move || {
            let child = Command::new(&browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--dump-dom",
                    "--virtual-time-budget=10000",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(&url)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start chromium");
            // Bound the run: a wedged browser must fail the test, not hang it.
            let pid = child.id();
            let watchdog = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(90));
                let _ = Command::new("kill").arg(pid.to_string()).status();
            });
            let out = child.wait_with_output().expect("chromium output");
            drop(watchdog);
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        dom.contains("swagger-ui"),
        "not the Swagger UI page: {dom:.500}"
    );
    for path in [
        "/v1/models",
        "/v1/models/{model}",
        "/v1/models/{model}/classify",
        "/v1/models/{model}/activations",
        "/health/ready",
        "/metrics",
        "/v2/models/{model}/infer",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not listed on the rendered /docs page"
        );
    }
    assert!(dom.contains("convrnn-serve"), "the title is missing");
    s.stop().await;
}
