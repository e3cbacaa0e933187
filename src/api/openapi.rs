//! The OpenAPI document (generated from the handlers' annotations) and the interactive docs page,
//! whose assets are compiled in (`utoipa-swagger-ui` `vendored`) so it works with no internet.
//!
//! The document is checked in at `openapi/openapi.json`; `cargo test --test openapi` fails when
//! it differs from what the server serves, and `UPDATE_OPENAPI=1 cargo test --test openapi`
//! rewrites it.

use serde_json::{json, Value};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::{RefOr, Response};
use utoipa::OpenApi;

use super::{activations, classify, error, health, input, models, preprocess, selection};

/// What a request id the server made looks like.
const EXAMPLE_REQUEST_ID: &str = "3f9a1c07b2d4-1a";

/// A real 2x2 PNG, base64: the examples of image inputs decode.
pub const EXAMPLE_PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR42mM8oRHFwMDAxMDAwMDAAAAQEAFO7kM9dwAAAABJRU5ErkJggg==";

/// Prometheus metrics.
///
/// Requests by route, model and status; failures by reason; queue, inference and total latency
/// histograms; batch sizes; queue depth and capacity per model; per-device busy seconds and
/// batches; model load and warm-up times; build info.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String,
        example = "# HELP convrnn_queue_depth Items waiting in the queue per model\n# TYPE convrnn_queue_depth gauge\nconvrnn_queue_depth{model=\"rgc_fmnist\"} 0\n")))]
#[allow(dead_code)]
fn metrics() {}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this server",
        content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn openapi_json() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "convrnn-serve",
        description = "Serve ConvRNN models of the primate visual system: classification with the \
            time course of the decision, and time-resolved layer activations (`/v1`); the KServe \
            Open Inference Protocol v2 (`/v2`) for KServe and Triton clients. Every answer \
            carries an `x-request-id` header (the client's own, if valid), which error bodies \
            repeat. A server started with API keys lets `/v1` and `/v2` (but the health probes) \
            in only with `Authorization: Bearer <key>`. Interactive docs at \
            `/docs`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        models::list_models,
        models::get_model,
        classify::classify,
        activations::activations,
        preprocess::preprocess,
        health::live,
        health::ready,
        metrics,
        openapi_json,
    ),
    components(schemas(
        error::ErrorBody,
        input::JsonImages,
        models::ModelList,
        models::UnavailableModel,
        models::ModelDescription,
        classify::ClassifyResponse,
        classify::ClassifyResult,
        classify::ClassScore,
        activations::ActivationsResponse,
        activations::LayerActivations,
        selection::Pool,
        health::Health,
    )),
    tags(
        (name = "models", description = "What is served"),
        (name = "inference", description = "Classification and activations"),
        (name = "health", description = "Liveness and readiness"),
        (name = "operations", description = "Metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The document as served at `/openapi.json` and checked in at `openapi/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::v2::docs::V2Doc::openapi());
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    add_security(&mut doc);
    add_examples(&mut doc);
    doc
}

/// Name of the bearer security scheme in the document.
pub const SECURITY_SCHEME: &str = "api_key";

/// Declares the optional API keys: the bearer scheme, on every operation that needs a key when
/// keys are configured, next to an empty requirement (no key) for servers started without
/// them, and the 401 those operations then answer.
fn add_security(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::security::SecurityScheme;
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement};
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, when the server is started with --api-key-file or \
                         CONVRNN_API_KEYS: `Authorization: Bearer <key>`. Without keys \
                         configured every client is let in.",
                    ))
                    .build(),
            ),
        );
    for (path, op) in operations(doc) {
        if !super::auth::protects(&path) {
            continue;
        }
        op.security = Some(vec![
            SecurityRequirement::new(SECURITY_SCHEME, Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
        let body = if path.starts_with("/v2") {
            "V2ErrorBody"
        } else {
            "ErrorBody"
        };
        let response = ResponseBuilder::new()
            .description("No API key, or not a valid one (only when keys are configured)")
            .header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String),
                    )
                    .description(Some(r#"Bearer realm="convrnn-serve""#))
                    .build(),
            )
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(body)))
                    .build(),
            )
            .build();
        op.responses.responses.insert("401".into(), response.into());
    }
}

fn model_example() -> Value {
    json!({
        "name": "rgc_fmnist",
        "architecture": "rgc_shallow",
        "description": "Shallow ConvRNN with reciprocal gated cells, trained on Fashion-MNIST",
        "trained_on": {"dataset": "fashion-mnist", "test_top1": 0.91},
        "labels": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"],
        "input": {"channels": 3, "height": 32, "width": 32,
                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "resize": "shorter-side-then-center-crop", "grayscale": "replicate"},
        "time": {"steps": 8, "step_ms": 10.0, "image_on_steps": 6, "blank_value": 0.5},
        "layers": [{"name": "conv1", "channels": 32, "height": 16, "width": 16,
                    "first_driven_step": 0, "cell": "feedforward"}],
        "readout": {"rule": "last"},
        "visual_degrees": 8.0,
        "devices": ["cpu"],
        "ready": true,
        "queue_depth": 0
    })
}

/// An `ErrorBody` example for each status the `/v1` routes answer with.
fn v1_error_example(status: &str) -> Option<Value> {
    let (error, code) = match status {
        "400" => (
            "layer \"conv9\" does not exist (layers: conv1, conv2, conv3)",
            "unknown_layer",
        ),
        "401" => (
            "an API key is required: send Authorization: Bearer <key>",
            "unauthorized",
        ),
        "404" => (
            "model \"x\" is not served here (models: rgc_fmnist)",
            "model_not_found",
        ),
        "406" => (
            "the answer holds 3000000 values, more than 2000000 as JSON: ask for application/x-npz",
            "not_acceptable",
        ),
        "408" => (
            "the request body did not arrive within 30000 ms (--request-timeout-ms)",
            "body_timeout",
        ),
        "413" => (
            "request body too large (limit 67108864 bytes)",
            "payload_too_large",
        ),
        "415" => (
            "content type \"text/plain\" is not supported: send an image/* body, \
             multipart/form-data or application/json with base64 images",
            "unsupported_media_type",
        ),
        "429" => (
            "the queue of model \"rgc_fmnist\" is full (256 images); retry in 3 s",
            "overloaded",
        ),
        "500" => (
            "inference failed: the session panicked (...); its worker is restarting",
            "backend",
        ),
        "503" => ("the server is shutting down", "unavailable"),
        "504" => ("the request did not finish before its deadline", "timeout"),
        _ => return None,
    };
    Some(json!({"error": error, "code": code, "request_id": EXAMPLE_REQUEST_ID}))
}

fn v2_error_example(status: &str) -> Option<Value> {
    let error = match status {
        "401" => "an API key is required: send Authorization: Bearer <key>",
        "400" => "input \"frames\" has shape [1, 5, 3, 32, 32]; the model takes [n, 8, 3, 32, 32]",
        "404" => "model \"x\" is not served here (models: rgc_fmnist)",
        "408" => "the request body did not arrive within 30000 ms (--request-timeout-ms)",
        "413" => "request body too large (limit 67108864 bytes)",
        "429" => "the queue of model \"rgc_fmnist\" is full (256 images); retry in 3 s",
        "503" => "the server is shutting down",
        "504" => "the request did not finish before its deadline",
        _ => return None,
    };
    Some(json!({ "error": error, "request_id": EXAMPLE_REQUEST_ID }))
}

fn refers_to(content: &utoipa::openapi::content::Content, schema: &str) -> bool {
    matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location.ends_with(&format!("/{schema}")))
}

fn operations(doc: &mut utoipa::openapi::OpenApi) -> Vec<(String, &mut Operation)> {
    let mut out = Vec::new();
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            out.push((path.clone(), op));
        }
    }
    out
}

/// Fills in the examples annotations cannot easily carry: every error response, the JSON image
/// bodies (with an image that really decodes), and the model and health answers.
fn add_examples(doc: &mut utoipa::openapi::OpenApi) {
    for (path, op) in operations(doc) {
        if let Some(body) = &mut op.request_body {
            if let Some(content) = body.content.get_mut("application/json") {
                if refers_to(content, "JsonImages") {
                    content.example = Some(if path.ends_with("/preprocess") {
                        json!({"images": [EXAMPLE_PNG_BASE64]})
                    } else if path.ends_with("/activations") {
                        let options =
                            json!({"layers": "conv1,logits", "steps": "2:4", "pool": "mean"});
                        json!({"images": [EXAMPLE_PNG_BASE64], "options": options})
                    } else {
                        let options = json!({"top_k": 3, "per_timestep": true});
                        json!({"images": [EXAMPLE_PNG_BASE64], "options": options})
                    });
                }
            }
        }
        for (status, response) in op.responses.responses.iter_mut() {
            let RefOr::T(Response { content, .. }) = response else {
                continue;
            };
            for media in content.values_mut() {
                if media.example.is_some() {
                    continue;
                }
                media.example = if refers_to(media, "ErrorBody") {
                    if path.ends_with("/preprocess") && status == "400" {
                        Some(
                            json!({"error": "preprocess takes exactly one image; this request has 2",
                                    "code": "one_image"}),
                        )
                    } else {
                        v1_error_example(status)
                    }
                } else if refers_to(media, "V2ErrorBody") {
                    v2_error_example(status)
                } else if refers_to(media, "ModelDescription") {
                    Some(model_example())
                } else if refers_to(media, "ModelList") {
                    Some(json!({ "models": [model_example()] }))
                } else if refers_to(media, "Health") {
                    Some(json!({"status": match (path.as_str(), status.as_str()) {
                        ("/health/live", _) => "ok",
                        (_, "200") => "ready",
                        _ => "warming_up",
                    }}))
                } else {
                    None
                };
            }
        }
    }
    if let Some(components) = &mut doc.components {
        if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut("JsonImages") {
            obj.example = Some(json!({"images": [EXAMPLE_PNG_BASE64], "options": {"top_k": 3}}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn the_example_png_decodes() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(EXAMPLE_PNG_BASE64)
            .unwrap();
        assert_eq!(crate::image::probe_dimensions(&bytes).unwrap(), (2, 2));
    }

    #[test]
    fn every_error_response_has_an_example() {
        let doc = serde_json::to_value(document()).unwrap();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if !status.starts_with('4') && !status.starts_with('5') {
                        continue;
                    }
                    for (media, content) in response["content"].as_object().into_iter().flatten() {
                        assert!(
                            content.get("example").is_some(),
                            "{method} {path} {status} {media} has no example"
                        );
                    }
                }
            }
        }
    }
}
