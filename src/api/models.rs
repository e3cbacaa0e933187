//! `GET /v1/models` and `GET /v1/models/{model}`: what is served, with everything a client needs
//! to use it (labels, input, time axis, layers with shapes and brain regions, readout, devices).

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::inference::model_info;
use super::AppState;
use crate::engine::ModelEntry;
use crate::model::metadata::{InputSpec, LayerSpec, ReadoutSpec, TimeSpec};

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelDescription {
    #[schema(example = "rgc_fmnist")]
    pub name: String,
    pub architecture: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub trained_on: Option<serde_json::Value>,
    pub labels: Vec<String>,
    pub input: InputSpec,
    pub time: TimeSpec,
    /// Layers in unroll order; each output is `[T, channels, height, width]` per image.
    pub layers: Vec<LayerSpec>,
    pub readout: ReadoutSpec,
    /// Degrees of visual angle the input image spans (8 when the model file does not say).
    #[schema(example = 8.0)]
    pub visual_degrees: f64,
    /// Devices with a session of this model, e.g. `cpu` or `cuda:0`.
    pub devices: Vec<String>,
    /// True once every session has warmed up.
    pub ready: bool,
    /// Images waiting in this model's queue.
    pub queue_depth: usize,
    /// sha256 of the served `.onnx` file (hex): which weights produced an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "9b2d630846f17019852d4028e574af2a3204a0f4ddb8ed44ab3ea1b834c9fc09")]
    pub weights_sha256: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelDescription>,
    /// Model files that could not be loaded (only with `--skip-broken-models`; without it the
    /// server does not start), with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableModel>,
}

/// A model file in the model directory that is not served.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnavailableModel {
    #[schema(example = "models/broken.onnx")]
    pub file: String,
    #[schema(example = "models/broken.onnx: no \"convrnn\" metadata entry")]
    pub error: String,
}

pub fn describe(entry: &ModelEntry) -> ModelDescription {
    let m = &entry.info.metadata;
    ModelDescription {
        name: m.name.clone(),
        architecture: m.architecture.clone(),
        description: m.description.clone(),
        trained_on: m.trained_on.clone(),
        labels: m.labels.clone(),
        input: m.input.clone(),
        time: m.time.clone(),
        layers: m.layers.clone(),
        readout: m.readout.clone(),
        visual_degrees: m.visual_degrees(),
        devices: entry.devices.iter().map(|d| d.to_string()).collect(),
        ready: entry.is_ready(),
        queue_depth: entry.queue_depth(),
        weights_sha256: entry.info.weights_sha256.clone(),
    }
}

/// List the served models.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "Every served model", body = ModelList)))]
pub async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        models: state.engine.serving().map(describe).collect(),
        unavailable: state
            .engine
            .unavailable()
            .into_iter()
            .map(|u| UnavailableModel {
                file: u.file,
                error: u.error,
            })
            .collect(),
    })
}

/// Describe one model.
#[utoipa::path(get, path = "/v1/models/{model}", tag = "models",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist")),
    responses(
        (status = 200, description = "The model", body = ModelDescription),
        (status = 404, description = "Unknown model", body = ErrorBody),
    ))]
pub async fn get_model(
    State(state): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelDescription>, ApiError> {
    let info = model_info(&state, &model)?;
    let entry = state
        .engine
        .model(info.name())
        .ok_or_else(|| ApiError::Internal("model vanished".into()))?;
    Ok(Json(describe(entry)))
}
