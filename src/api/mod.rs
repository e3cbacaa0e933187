//! HTTP: routes, extractors, errors and the OpenAPI document. Handlers only translate between
//! HTTP and the engine; nothing here runs a model.

pub mod activations;
pub mod auth;
pub mod classify;
pub mod connections;
pub mod error;
pub mod health;
pub mod inference;
pub mod input;
pub mod models;
pub mod openapi;
pub mod page;
pub mod preprocess;
pub mod request_id;
pub mod selection;
pub mod v2;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::engine::Engine;
use crate::metrics::Metrics;
use error::{ApiError, FailureReason};

/// Request limits the handlers enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_images_per_request: usize,
    pub max_json_values: usize,
    pub image: crate::image::Limits,
}

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    /// Requests whose images decode on the blocking pool at once ([`crate::thread_plan`]):
    /// unbounded, every open connection could hold a blocking thread and a full-size image.
    pub decode_permits: Arc<tokio::sync::Semaphore>,
    pub limits: Arc<Limits>,
    /// API keys `/v1` and `/v2` require; `None`: open to every client.
    pub keys: Option<Arc<auth::ApiKeys>>,
    /// Health and metrics have a listener of their own (`--admin-listen`): `/metrics` is served
    /// there only (health stays on both: KServe clients probe `/v2/health/*` on the API port).
    pub admin_listener: bool,
}

/// The probes, on the API listener and on the admin one.
fn probes() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/v2/health/live", get(v2::server_live))
        .route("/v2/health/ready", get(v2::server_ready))
}

/// What `--admin-listen` serves: health and metrics, never behind the API's connection cap or
/// its API keys.
pub fn admin_router(state: AppState) -> Router {
    probes()
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    // Serialised once and shared: axum clones every route's handler for each new connection
    // (`Router::with_state` per accepted stream), so a handler owning the document would
    // deep-copy its ~0.7 MB per connection. Swagger UI keeps its copy behind an Arc.
    let doc = openapi::document();
    let spec =
        axum::body::Bytes::from(serde_json::to_vec(&doc).expect("the OpenAPI document serialises"));
    let v1 = Router::new()
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{model}", get(models::get_model))
        .route("/v1/models/{model}/classify", post(classify::classify))
        .route(
            "/v1/models/{model}/activations",
            post(activations::activations),
        )
        .route(
            "/v1/models/{model}/preprocess",
            post(preprocess::preprocess),
        )
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], spec) }),
        )
        .merge(probes())
        .merge(v2::router())
        .merge(page::router());
    let v1 = if state.admin_listener {
        v1
    } else {
        v1.route("/metrics", get(metrics_text))
    };
    v1.merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/docs/openapi.json", doc))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside `track`, so refused requests are counted like any other.
        .route_layer(middleware::from_fn_with_state(
            state.keys.clone(),
            auth::middleware,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(middleware::map_response(close_after_refusal))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        // Outermost, so every answer carries the id, refusals and 404s included.
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// A 429 for want of an admission slot, or a 413, is sent before the body is read. Kept alive,
/// the connection would still have to take that body in before it could parse the next request:
/// hyper's read buffer grows towards the body's size on every such connection, so a storm of
/// camera-size uploads grows memory with the open connections (docs/performance.md, "Memory").
/// Closing drops the buffer and the unread body with it. Every
/// 429 closes, also the rarer one from a full queue after the body was read: a client told to
/// back off reconnects when it retries. A 408 (body not sent in time) and a 401 (no valid API
/// key) leave the body unread too.
async fn close_after_refusal(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::UNAUTHORIZED
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()), "not_found")
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}

/// Counts every routed request by route, model and status, times it, and counts failures by
/// the reason the error response carries.
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // The `{model}` segment of the path, if the route has one and it names a served model
    // (unknown names would let clients blow up the label cardinality).
    let model = route
        .split('/')
        .position(|seg| seg == "{model}")
        .and_then(|i| request.uri().path().split('/').nth(i))
        .filter(|m| state.engine.model(m).is_some())
        .unwrap_or("-")
        .to_string();
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .requests
        .with_label_values(&[&route, &model, status.as_str()])
        .inc();
    state
        .metrics
        .request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    if let Some(FailureReason(reason)) = response.extensions().get::<FailureReason>() {
        if status != StatusCode::NOT_FOUND || model != "-" {
            state
                .metrics
                .failures
                .with_label_values(&[model.as_str(), reason])
                .inc();
        }
    }
    response
}
