//! KServe Open Inference Protocol v2 (REST), so any KServe/Triton client can call the server.
//!
//! - `GET /v2`, `/v2/health/live`, `/v2/health/ready`
//! - `GET /v2/models/{model}[/versions/{version}]`, `.../ready`
//! - `POST /v2/models/{model}[/versions/{version}]/infer`
//!
//! Every model has one version, `"1"`; any other version is 404. Inputs (exactly one per
//! request):
//! - `frames` FP32 `[n, T, C, H, W]`: the model's own input, already normalised. Row `i` becomes
//!   one stimulus that shows its own frame `t` at step `t`.
//! - `images` BYTES `[n]`: encoded images (JPEG, PNG, ...), preprocessed by the server and shown
//!   with the model's default presentation (as `/v1` does). In JSON each element is a base64
//!   string (JSON strings cannot carry raw bytes); in binary form each element is a 4-byte
//!   little-endian length followed by the bytes, as the protocol defines.
//!
//! Outputs: `logits` `[n, T, K]` and every layer `[n, T, C, H, W]`, all FP32; `outputs` picks a
//! subset (none: all). The binary tensor data extension works both ways. Requests run through
//! the same engine and batcher as `/v1`.

pub mod docs;
pub mod error;
pub mod infer;
pub mod protocol;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::error::quote;
use super::inference::model_info;
use super::AppState;
use crate::model::{ModelInfo, INPUT_NAME};
use error::V2Error;
use protocol::{ModelMetadata, ServerMetadata, TensorMetadata, BYTES, FP32};

/// The one version every model has.
pub const MODEL_VERSION: &str = "1";
/// Name of the encoded-images input.
pub const IMAGES_INPUT: &str = "images";
/// Protocol extensions this server implements.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data"];

/// The `/v2` routes but the health probes (merged into the main router, which adds those, the
/// body limit and metrics).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer::infer),
        )
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(ServerMetadata {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        extensions: EXTENSIONS.to_vec(),
    })
}

pub(crate) async fn server_live() -> StatusCode {
    StatusCode::OK
}

pub(crate) async fn server_ready(State(state): State<AppState>) -> StatusCode {
    if state.engine.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The model named in the path, after checking the version (if the path has one).
fn resolve(state: &AppState, params: &HashMap<String, String>) -> Result<Arc<ModelInfo>, V2Error> {
    let name = params.get("model").map(String::as_str).unwrap_or_default();
    let info = model_info(state, name)?;
    if let Some(version) = params.get("version") {
        if version != MODEL_VERSION {
            return Err(V2Error::not_found(format!(
                "model {} has no version {} (versions: {MODEL_VERSION})",
                quote(name),
                quote(version)
            )));
        }
    }
    Ok(info)
}

/// Model metadata as the protocol describes it.
pub fn metadata(info: &ModelInfo) -> ModelMetadata {
    let m = &info.metadata;
    let t = m.time.steps as i64;
    let outputs = info
        .output_names()
        .filter_map(|name| {
            let shape = info.item_shape(name)?;
            Some(TensorMetadata {
                name: name.to_string(),
                datatype: FP32,
                shape: std::iter::once(-1)
                    .chain(shape.iter().map(|&d| d as i64))
                    .collect(),
            })
        })
        .collect();
    ModelMetadata {
        name: info.name().to_string(),
        versions: vec![MODEL_VERSION.to_string()],
        platform: "onnxruntime_onnx",
        inputs: vec![
            TensorMetadata {
                name: INPUT_NAME.to_string(),
                datatype: FP32,
                shape: vec![
                    -1,
                    t,
                    m.input.channels as i64,
                    m.input.height as i64,
                    m.input.width as i64,
                ],
            },
            TensorMetadata {
                name: IMAGES_INPUT.to_string(),
                datatype: BYTES,
                shape: vec![-1],
            },
        ],
        outputs,
    }
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Json<ModelMetadata>, V2Error> {
    let info = resolve(&state, &params)?;
    Ok(Json(metadata(&info)))
}

async fn model_ready(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, V2Error> {
    let info = resolve(&state, &params)?;
    let ready = !state.engine.is_draining()
        && state
            .engine
            .model(info.name())
            .is_some_and(|entry| entry.is_ready());
    Ok(if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    })
}
