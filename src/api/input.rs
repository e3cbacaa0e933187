//! Reading images (and an optional JSON options object) out of a request, whatever its shape:
//! - a raw `image/*` (or `application/octet-stream`) body: one image;
//! - `multipart/form-data`: every file part is an image, in order; a part named `mask` is the mask
//!   image; a part named `options` holds the JSON options;
//! - `application/json`: `{"images": ["<base64>", ...], "mask": "<base64>", "options": {...}}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Multipart, RawPathParams, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine as _;
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;
use crate::engine::Admission;

/// The encoded images of a request, before decoding.
#[derive(Debug, Default)]
pub struct ImagePayload {
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
    /// The JSON options object, if the body carried one.
    pub options: Option<serde_json::Value>,
    /// The model's admission slot, held until the payload is dropped (after inference).
    pub admission: Option<Admission>,
}

/// Takes one of the model's admission slots before the body is read; none left is a 429 that
/// costs neither the body's memory nor a decode. Routes without a served `{model}` pass (the
/// handler answers 404).
async fn admit(req: Request, state: &AppState) -> Result<(Request, Option<Admission>), ApiError> {
    let (mut parts, body) = req.into_parts();
    let model = RawPathParams::from_request_parts(&mut parts, state)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "model")
                .map(|(_, v)| v.to_string())
        });
    let req = Request::from_parts(parts, body);
    match model.as_deref() {
        Some(m) if state.engine.model(m).is_some() => Ok((req, Some(state.engine.admit(m)?))),
        _ => Ok((req, None)),
    }
}

/// The JSON request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"images": ["iVBORw0KGgo..."], "options": {"top_k": 3}}))]
pub struct JsonImages {
    /// Encoded images (JPEG, PNG, WebP, BMP or TIFF), base64.
    pub images: Vec<String>,
    /// Mask image for `presentation=mask`, base64.
    #[serde(default)]
    pub mask: Option<String>,
    /// The same options as the query parameters; these win where both are given.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub options: Option<serde_json::Value>,
}

// The two types below only describe request bodies in the OpenAPI document (as binary strings,
// which generated clients send as files); `read_payload` and `read_multipart` do the reading.

/// One encoded image (JPEG, PNG, WebP, BMP or TIFF).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ImageBytes(Vec<u8>);

/// A `multipart/form-data` body: one file part per image, an optional `mask` part and an
/// optional `options` part.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MultipartImages {
    /// The images, one file part each, in request order (any part name but `mask` and `options`).
    images: Vec<ImageBytes>,
    /// Mask image for `presentation=mask`.
    #[schema(required = false)]
    mask: ImageBytes,
    /// The same options as the query parameters, as JSON; these win where both are given.
    #[schema(value_type = Object, required = false)]
    options: serde_json::Value,
}

fn decode_b64(what: &str, text: &str) -> Result<Bytes, ApiError> {
    // Accept data URLs too, since browsers hand those out.
    let text = text.rsplit_once(";base64,").map_or(text, |(_, b)| b);
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|e| {
            ApiError::bad_request("invalid_base64", format!("{what} is not valid base64: {e}"))
        })
}

fn body_error(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!("request body too large: {e}"))
    } else {
        ApiError::bad_request("bad_body", format!("could not read the body: {e}"))
    }
}

impl FromRequest<AppState> for ImagePayload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let (req, admission) = admit(req, state).await?;
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut payload =
            within_body_deadline(state, read_payload(req, state, &essence, &content_type))
                .await??;
        payload.admission = admission;
        if payload.images.is_empty() {
            return Err(ApiError::bad_request(
                "no_images",
                "the request contains no image",
            ));
        }
        if let Some(i) = payload.images.iter().position(|b| b.is_empty()) {
            return Err(ApiError::bad_request(
                "invalid_image",
                format!("image {i} is empty (zero bytes)"),
            ));
        }
        if payload.images.len() > state.limits.max_images_per_request {
            return Err(ApiError::PayloadTooLarge(format!(
                "{} images in one request; the limit is {}",
                payload.images.len(),
                state.limits.max_images_per_request
            )));
        }
        Ok(payload)
    }
}

async fn read_multipart(mut multipart: Multipart) -> Result<ImagePayload, ApiError> {
    let mut payload = ImagePayload::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body too large: {}", e.body_text()))
        } else {
            ApiError::bad_request("bad_multipart", e.body_text())
        }
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        let is_json = field
            .content_type()
            .is_some_and(|c| c.starts_with("application/json"));
        let data = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "options" => {
                let value = serde_json::from_slice(&data).map_err(|e| {
                    ApiError::bad_request(
                        "bad_json",
                        format!("the `options` part is not valid JSON: {e}"),
                    )
                })?;
                payload.options = Some(value);
            }
            "mask" => payload.mask = Some(data),
            _ if is_json => {
                return Err(ApiError::bad_request(
                    "bad_multipart",
                    format!("JSON part {name:?}: options go in a part named `options`"),
                ))
            }
            _ => payload.images.push(data),
        }
    }
    Ok(payload)
}

/// Merges query options with the body's JSON options (the body wins) and parses them into `T`,
/// rejecting unknown keys so typos do not pass silently.
pub fn merge_options<T: serde::de::DeserializeOwned>(
    query: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<T, ApiError> {
    let mut merged = serde_json::Map::new();
    if let Some(q) = query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request("bad_query", format!("bad query string: {e}")))?;
        for (k, v) in pairs {
            merged.insert(k, serde_json::Value::String(v));
        }
    }
    match body {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                // Options are strings on the wire (as in the query); accept JSON numbers and
                // booleans and lists of names too, since clients write those naturally.
                let v = match v {
                    serde_json::Value::Number(n) => serde_json::Value::String(n.to_string()),
                    serde_json::Value::Bool(b) => serde_json::Value::String(b.to_string()),
                    serde_json::Value::Array(items) => serde_json::Value::String(
                        items
                            .iter()
                            .map(|i| match i {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    other => other,
                };
                merged.insert(k, v);
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_json",
                "options must be a JSON object",
            ));
        }
    }
    // Round-trip through the urlencoded form so numbers in strings parse as the query would.
    let pairs: Vec<(String, String)> = merged
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            other => Err(ApiError::bad_request(
                "bad_option",
                format!("option {k:?} must be a string, number, boolean or list, not {other}"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let encoded = serde_urlencoded::to_string(&pairs)
        .map_err(|e| ApiError::Internal(format!("re-encoding options: {e}")))?;
    serde_urlencoded::from_str(&encoded)
        .map_err(|e| ApiError::bad_request("bad_option", format!("invalid option: {e}")))
}

/// Runs `read` (reading a request's body) within `--request-timeout-ms`, else 408. The request's
/// own deadline starts at the queue; until then a client that uploads at a trickle would hold
/// its admission slot for as long as it liked. Used by `/v1` and v2 alike.
pub async fn within_body_deadline<T>(
    state: &AppState,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    let deadline = state.engine.config().request_timeout;
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        ApiError::BodyTimeout(format!(
            "the request body did not arrive within {} ms (--request-timeout-ms)",
            deadline.as_millis()
        ))
    })
}

/// Reads the body of an image request in whichever of the three encodings it came.
async fn read_payload(
    req: Request,
    state: &AppState,
    essence: &str,
    content_type: &str,
) -> Result<ImagePayload, ApiError> {
    let payload = if essence.starts_with("image/") || essence == "application/octet-stream" {
        let body = Bytes::from_request(req, state).await.map_err(body_error)?;
        ImagePayload {
            images: vec![body],
            ..Default::default()
        }
    } else if essence == "multipart/form-data" {
        let multipart = Multipart::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request("bad_multipart", e.body_text()))?;
        read_multipart(multipart).await?
    } else if essence == "application/json" {
        let body = Bytes::from_request(req, state).await.map_err(body_error)?;
        let parsed: JsonImages = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("bad_json", format!("invalid JSON body: {e}")))?;
        let images = parsed
            .images
            .iter()
            .enumerate()
            .map(|(i, s)| decode_b64(&format!("images[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let mask = parsed
            .mask
            .as_deref()
            .map(|m| decode_b64("mask", m))
            .transpose()?;
        ImagePayload {
            images,
            mask,
            options: parsed.options,
            admission: None,
        }
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type {:?} is not supported: send an image/* body, multipart/form-data \
             or application/json with base64 images",
            if content_type.is_empty() {
                "(none)"
            } else {
                content_type
            }
        )));
    };
    Ok(payload)
}
