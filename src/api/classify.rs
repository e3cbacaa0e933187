//! `POST /v1/models/{model}/classify`: top-k labels by the model's readout rule, and optionally
//! the class probabilities at every timestep (the time course of the decision).

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::inference::{model_info, run_images, timing_headers};
use super::input::{merge_options, ImagePayload};
use super::AppState;
use crate::model::readout::{readout_step, softmax};
use crate::model::LOGITS_NAME;
use crate::presentation::Presentation;

/// Options of a classify request, as query parameters or as the JSON `options` object.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ClassifyOptions {
    /// How many classes to return, most probable first (default 5, at most the number of labels).
    #[param(minimum = 1, example = 3)]
    pub top_k: Option<usize>,
    /// Also return the class probabilities at every timestep.
    pub per_timestep: Option<bool>,
    /// Presentation schedule: `default` (image for the model's `image_on_steps`, then blank),
    /// `flash` (image for `on_steps`), `mask` (image for `on_steps`, then the `mask` image for
    /// `mask_steps`), `sequence` (all images as one stimulus, see `sequence`).
    #[param(example = "default")]
    pub presentation: Option<String>,
    /// Steps the image is shown (`flash`, `mask`).
    pub on_steps: Option<usize>,
    /// Steps the mask is shown (`mask`).
    pub mask_steps: Option<usize>,
    /// For `presentation=sequence`: `IMAGE:STEPS,...` with `blank:STEPS` for gaps, e.g. `0:3,blank:2,1:5`.
    #[param(example = "0:3,blank:2,1:5")]
    pub sequence: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassScore {
    /// Class index in the model's label list.
    #[schema(example = 3)]
    pub index: usize,
    #[schema(example = "Dress")]
    pub label: String,
    #[schema(example = 0.93)]
    pub probability: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResult {
    /// The most probable classes at the readout step.
    pub top_k: Vec<ClassScore>,
    /// The step the readout rule chose (`last`: T-1).
    pub readout_step: usize,
    /// `[T][K]` class probabilities at every step (only with `per_timestep=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_timestep: Option<Vec<Vec<f32>>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"model": "rgc_fmnist", "results": [{"top_k": [{"index": 3, "label": "Dress", "probability": 0.93}], "readout_step": 7}]}))]
pub struct ClassifyResponse {
    pub model: String,
    /// One result per stimulus (per image, or one for a sequence), in request order.
    pub results: Vec<ClassifyResult>,
}

/// Classify images.
///
/// Send one image as a raw `image/*` body, several as `multipart/form-data` parts, or JSON with
/// base64 images. Results come in request order.
#[utoipa::path(
    post,
    path = "/v1/models/{model}/classify",
    tag = "inference",
    params(("model" = String, Path, description = "Model name (its metadata `name`)", example = "rgc_fmnist"), ClassifyOptions),
    request_body(
        description = "One encoded image (JPEG, PNG, WebP, BMP, TIFF) as the raw body, sent as `application/octet-stream` or with its own `image/*` type (e.g. `image/png`); several as `multipart/form-data` parts (a part named `mask` is the mask, a part named `options` the JSON options); or JSON with base64 images",
        content(
            (super::input::ImageBytes = "application/octet-stream"),
            (super::input::MultipartImages = "multipart/form-data"),
            (super::input::JsonImages = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Top-k classes per image", body = ClassifyResponse,
         headers(("x-queue-time-ms" = String, description = "Time in the queue"),
                 ("x-inference-time-ms" = String, description = "Time of the batched run"),
                 ("x-total-time-ms" = String, description = "Time in the server"))),
        (status = 400, description = "Bad image or option", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = ErrorBody),
        (status = 429, description = "Queue full; retry after the Retry-After header", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    )
)]
pub async fn classify(
    State(state): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
    payload: ImagePayload,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let info = model_info(&state, &model)?;
    let mut payload = payload;
    let options: ClassifyOptions = merge_options(query.as_deref(), payload.options.take())?;
    let meta = &info.metadata;
    let k = meta.labels.len();
    let top_k = options.top_k.unwrap_or(5);
    // A query value the body overrides must still be valid (the document says minimum 1).
    let query_top_k = merge_options::<ClassifyOptions>(query.as_deref(), None)?.top_k;
    if top_k == 0 || query_top_k == Some(0) {
        return Err(ApiError::bad_request(
            "bad_option",
            "top_k must be at least 1",
        ));
    }
    let top_k = top_k.min(k);
    let presentation = Presentation::from_parts(
        options.presentation.as_deref(),
        options.on_steps,
        options.mask_steps,
        options.sequence.as_deref(),
        &meta.time,
    )?;
    let results = run_images(
        &state,
        &info,
        payload,
        &presentation,
        vec![LOGITS_NAME.into()],
    )
    .await?;
    let mut out = Vec::with_capacity(results.len());
    for r in &results {
        let logits = r
            .output(LOGITS_NAME)
            .ok_or_else(|| ApiError::Internal("the batch has no logits".into()))?;
        let step = readout_step(meta, logits);
        let probs = softmax(&logits[step * k..(step + 1) * k], 1.0);
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        out.push(ClassifyResult {
            top_k: order[..top_k]
                .iter()
                .map(|&i| ClassScore {
                    index: i,
                    label: meta.labels[i].clone(),
                    probability: probs[i],
                })
                .collect(),
            readout_step: step,
            per_timestep: options
                .per_timestep
                .unwrap_or(false)
                .then(|| logits.chunks(k).map(|l| softmax(l, 1.0)).collect()),
        });
    }
    let headers = timing_headers(&results, started);
    Ok((
        headers,
        Json(ClassifyResponse {
            model: info.name().to_string(),
            results: out,
        }),
    )
        .into_response())
}
