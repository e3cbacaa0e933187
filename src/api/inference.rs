//! The path every inference request shares, whatever its API (`/v1` classify and activations,
//! KServe v2 with encoded images): find the model, decode and preprocess the images off the async
//! runtime, lay them out in time, and run them through the engine.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};

use super::error::ApiError;
use super::input::ImagePayload;
use super::AppState;
use crate::engine::{Frame, ItemResult};
use crate::image::{self, Preprocess};
use crate::model::ModelInfo;
use crate::presentation::Presentation;

/// The model or a 404.
pub fn model_info(state: &AppState, name: &str) -> Result<Arc<ModelInfo>, ApiError> {
    state
        .engine
        .model(name)
        .map(|m| m.info.clone())
        .ok_or_else(|| {
            let known: Vec<&str> = state.engine.models().map(|m| m.info.name()).collect();
            ApiError::NotFound(
                format!(
                    "model {} is not served here (models: {})",
                    super::error::quote(name),
                    known.join(", ")
                ),
                "model_not_found",
            )
        })
}

/// Answers up to this many values are built on the async thread, where the hand-off to the
/// blocking pool would cost about as much as the work: an npz answer is a copy, while JSON
/// formats every number, which for a large answer would hold up every other connection on that
/// thread (docs/performance.md, "Threading").
pub const INLINE_NPZ_VALUES: usize = 64 * 1024;
pub const INLINE_JSON_VALUES: usize = 4 * 1024;

/// Runs CPU-bound `work` (building an answer) in place when `inline`, else on the blocking
/// pool, so that tens of milliseconds of copying or number formatting do not hold up the async
/// threads, which serve every other connection and the health probes meanwhile.
pub async fn off_the_async_threads<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if inline {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// Images up to this many pixels (by their header) are decoded on the async worker itself: a
/// 28x28 JPEG decodes in microseconds, less than the hand-off to a blocking thread and back.
const INLINE_DECODE_PIXELS: u64 = 128 * 128;
/// ... and only for requests of a few images, so no request holds the async worker for long.
const INLINE_DECODE_IMAGES: usize = 4;

/// Decodes every image, small ones in place and the rest on the blocking pool (decoding is
/// CPU-bound and would stall the runtime's workers). An error names the image it came from.
pub async fn decode_images(
    state: &AppState,
    info: &ModelInfo,
    images: Vec<axum::body::Bytes>,
) -> Result<Vec<Frame>, ApiError> {
    let spec = Preprocess::for_input(&info.metadata.input);
    let limits = state.limits.image;
    let small = images.len() <= INLINE_DECODE_IMAGES
        && images.iter().all(|bytes| {
            image::probe_dimensions(bytes)
                .is_ok_and(|(w, h)| u64::from(w) * u64::from(h) <= INLINE_DECODE_PIXELS)
        });
    if small {
        return decode_all(&images, &spec, &limits);
    }
    // Decode at most one request per core at a time. Unbounded, every open connection would get
    // a blocking thread (tokio allows 512) holding a full-size decoded image, and on a small
    // machine they would starve the inference threads (docs/performance.md, "Memory").
    let _permit = state
        .decode_permits
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("decoder permits: {e}")))?;
    tokio::task::spawn_blocking(move || decode_all(&images, &spec, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("decoder task failed: {e}")))?
}

fn decode_all(
    images: &[axum::body::Bytes],
    spec: &Preprocess,
    limits: &image::Limits,
) -> Result<Vec<Frame>, ApiError> {
    let count = images.len();
    images
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            image::preprocess(bytes, spec, limits)
                .map(Arc::new)
                .map_err(|e| {
                    let err = ApiError::from(e);
                    if count > 1 {
                        // Keep the status of the underlying error; add which image.
                        match err {
                            ApiError::BadRequest { code, msg } => ApiError::BadRequest {
                                code,
                                msg: format!("image {i}: {msg}"),
                            },
                            ApiError::PayloadTooLarge(msg) => {
                                ApiError::PayloadTooLarge(format!("image {i}: {msg}"))
                            }
                            other => other,
                        }
                    } else {
                        err
                    }
                })
        })
        .collect()
}

/// Decodes, schedules and runs a request's images; one result per stimulus, in order.
pub async fn run_images(
    state: &AppState,
    info: &Arc<ModelInfo>,
    payload: ImagePayload,
    presentation: &Presentation,
    outputs: Vec<String>,
) -> Result<Vec<ItemResult>, ApiError> {
    let mask = match payload.mask {
        Some(m) => Some(decode_images(state, info, vec![m]).await?.remove(0)),
        None => None,
    };
    let frames = decode_images(state, info, payload.images).await?;
    let stimuli = presentation.stimuli(frames, mask, &info.metadata.time)?;
    Ok(state.engine.infer(info.name(), stimuli, outputs).await?)
}

/// Timing headers for a finished request: the slowest item's queue and inference times.
pub fn timing_headers(results: &[ItemResult], started: std::time::Instant) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let ms = |s: f64| {
        HeaderValue::from_str(&format!("{:.3}", s * 1e3)).expect("a number is a valid header")
    };
    let queue = results
        .iter()
        .map(|r| r.timings.queue_secs)
        .fold(0.0, f64::max);
    let inference = results
        .iter()
        .map(|r| r.timings.inference_secs)
        .fold(0.0, f64::max);
    let batch = results
        .iter()
        .map(|r| r.timings.batch_size)
        .max()
        .unwrap_or(0);
    headers.insert("x-queue-time-ms", ms(queue));
    headers.insert("x-inference-time-ms", ms(inference));
    headers.insert("x-total-time-ms", ms(started.elapsed().as_secs_f64()));
    headers.insert("x-batch-size", HeaderValue::from(batch));
    if let Some(d) = results
        .first()
        .and_then(|r| HeaderValue::from_str(&r.device).ok())
    {
        headers.insert("x-device", d);
    }
    let mut workers: Vec<&str> = results.iter().map(|r| r.worker.as_str()).collect();
    workers.sort_unstable();
    workers.dedup();
    if let Ok(w) = HeaderValue::from_str(&workers.join(",")) {
        headers.insert("x-worker", w);
    }
    headers
}
