//! `POST /v1/models/{model}/activations`: chosen layers x chosen timesteps of the model's time
//! course, raw or spatially pooled, as JSON (small answers) or `.npz` (`Accept:
//! application/x-npz`; `np.load` opens it, one array per layer named after it).

mod encode;

use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::inference::{
    model_info, off_the_async_threads, run_images, timing_headers, INLINE_JSON_VALUES,
    INLINE_NPZ_VALUES,
};
use super::input::{merge_options, ImagePayload};
use super::selection::{Pool, Selection};
use super::AppState;
use crate::gather::answer_values;
use crate::presentation::Presentation;

pub const NPZ_MEDIA_TYPE: &str = "application/x-npz";

/// Options of an activations request, as query parameters or as the JSON `options` object.
#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivationOptions {
    /// Comma-separated layer names, `all` (default: every layer), and/or `logits`.
    #[param(example = "conv3,conv5")]
    pub layers: Option<String>,
    /// Timesteps: `all` (default), a half-open range `a:b` (either end optional), or a list `1,3,5`.
    #[param(example = "4:12")]
    pub steps: Option<String>,
    /// A window in milliseconds `START:END`: the steps whose start `t * step_ms` lies in it.
    /// Exclusive with `steps`.
    #[param(example = "70:160")]
    pub window_ms: Option<String>,
    /// Spatial pooling: `none` (default) keeps `[C, H, W]`, `mean` and `max` give `[C]`.
    pub pool: Option<Pool>,
    /// Presentation schedule: `default`, `flash`, `mask` or `sequence` (see classify).
    pub presentation: Option<String>,
    /// Steps the image is shown (`flash`, `mask`).
    pub on_steps: Option<usize>,
    /// Steps the mask is shown (`mask`).
    pub mask_steps: Option<usize>,
    /// For `presentation=sequence`: `IMAGE:STEPS,...` with `blank:STEPS`.
    pub sequence: Option<String>,
}

/// One layer's activations.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayerActivations {
    /// `[images, steps, C, H, W]`, or `[images, steps, C]` when pooled (`[images, steps, K]` for logits).
    #[schema(example = json!([1, 2, 8]))]
    pub shape: Vec<usize>,
    /// Nested arrays of that shape (`numpy.array(data)` restores it).
    #[schema(value_type = Vec<serde_json::Value>)]
    pub data: serde_json::Value,
}

/// The JSON answer (documentation of the shape; the server writes it directly).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"model": "rgc_fmnist", "steps": [4, 5], "time_ms": [40.0, 50.0], "pool": "mean",
    "layers": {"conv3": {"shape": [1, 2, 2], "data": [[[0.1, 0.2], [0.3, 0.4]]]}}}))]
pub struct ActivationsResponse {
    pub model: String,
    /// The step indices returned, in order.
    pub steps: Vec<usize>,
    /// Start time of each returned step in ms (`step * step_ms`).
    pub time_ms: Vec<f64>,
    pub pool: Pool,
    pub layers: std::collections::BTreeMap<String, LayerActivations>,
}

/// Which encoding the client accepts: `application/x-npz`, else JSON (the default), else 406.
fn wants_npz(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(false);
    };
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    if types.contains(&NPZ_MEDIA_TYPE) {
        return Ok(true);
    }
    if types
        .iter()
        .any(|t| matches!(*t, "application/json" | "*/*" | "application/*" | ""))
    {
        return Ok(false);
    }
    Err(ApiError::NotAcceptable(format!(
        "cannot answer with {}: available are application/json and {NPZ_MEDIA_TYPE}",
        super::error::quote(accept)
    )))
}

/// Time-resolved layer activations.
///
/// Returns the selected layers at the selected timesteps for each stimulus. JSON by default;
/// send `Accept: application/x-npz` for a NumPy archive (`np.load(io.BytesIO(body))`) holding one
/// float32 array per layer shaped `[images, steps, C, H, W]` (pooled: `[images, steps, C]`), plus
/// `steps` (int64) and `time_ms` (float64).
#[utoipa::path(
    post,
    path = "/v1/models/{model}/activations",
    tag = "inference",
    params(("model" = String, Path, description = "Model name", example = "rgc_fmnist"), ActivationOptions),
    request_body(
        description = "One encoded image (JPEG, PNG, WebP, BMP, TIFF) as the raw body, sent as `application/octet-stream` or with its own `image/*` type (e.g. `image/png`); several as `multipart/form-data` parts (a part named `mask` is the mask, a part named `options` the JSON options); or JSON with base64 images",
        content(
            (super::input::ImageBytes = "application/octet-stream"),
            (super::input::MultipartImages = "multipart/form-data"),
            (super::input::JsonImages = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Activations", content(
            (ActivationsResponse = "application/json"),
            (Vec<u8> = "application/x-npz"),
        )),
        (status = 400, description = "Bad image, unknown layer, step out of range", body = ErrorBody),
        (status = 404, description = "Unknown model", body = ErrorBody),
        (status = 406, description = "Unsupported Accept, or the answer is too large for JSON", body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Unsupported content type", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --request-timeout-ms", body = ErrorBody),
        (status = 429, description = "Queue full; retry after the Retry-After header", body = ErrorBody),
        (status = 503, description = "Shutting down", body = ErrorBody),
        (status = 504, description = "Deadline exceeded", body = ErrorBody),
    )
)]
pub async fn activations(
    State(state): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    payload: ImagePayload,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let info = model_info(&state, &model)?;
    let npz = wants_npz(&headers)?;
    let mut payload = payload;
    let options: ActivationOptions = merge_options(query.as_deref(), payload.options.take())?;
    let meta = &info.metadata;
    let selection = Selection::parse(
        meta,
        options.layers.as_deref(),
        options.steps.as_deref(),
        options.window_ms.as_deref(),
        options.pool,
    )?;
    let presentation = Presentation::from_parts(
        options.presentation.as_deref(),
        options.on_steps,
        options.mask_steps,
        options.sequence.as_deref(),
        &meta.time,
    )?;
    let stimuli_count = match presentation {
        Presentation::Sequence(_) => 1,
        _ => payload.images.len(),
    };
    let values = answer_values(&info, &selection, stimuli_count);
    // Refuse an oversized JSON answer before doing the work.
    if !npz && values > state.limits.max_json_values {
        return Err(ApiError::NotAcceptable(format!(
            "the answer has {values} values, more than the JSON limit of {}: ask for \
             `Accept: {NPZ_MEDIA_TYPE}`, pool space, or select fewer layers or steps",
            state.limits.max_json_values
        )));
    }
    let results = run_images(
        &state,
        &info,
        payload,
        &presentation,
        selection.layers.clone(),
    )
    .await?;
    let time_ms: Vec<f64> = selection
        .steps
        .iter()
        .map(|&t| t as f64 * meta.time.step_ms)
        .collect();
    let mut headers = timing_headers(&results, started);
    let content_type = if npz {
        NPZ_MEDIA_TYPE
    } else {
        "application/json"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if npz {
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"activations.npz\""),
        );
    }
    let inline_up_to = if npz {
        INLINE_NPZ_VALUES
    } else {
        INLINE_JSON_VALUES
    };
    let body = off_the_async_threads(values <= inline_up_to, move || {
        encode::body(npz, &info, &results, &selection, &time_ms)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("building the answer failed: {e}")))??;
    Ok((headers, body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!wants_npz(&h).unwrap());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-npz"),
        );
        assert!(wants_npz(&h).unwrap());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        assert!(wants_npz(&h).is_err());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, */*;q=0.8"),
        );
        assert!(!wants_npz(&h).unwrap());
    }
}
