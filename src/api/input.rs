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

use super::error::{quote, ApiError};
use super::AppState;
use crate::engine::Admission;

/// The encoded images of a request, before decoding.
#[derive(Debug, Default)]
pub struct ImagePayload {
    pub images: Vec<Bytes>,
    pub mask: Option<Bytes>,
    /// The JSON options object, if the body carried one.
    pub options: Option<BodyOptions>,
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

/// Most options one request may carry (query and body each): the option structs have about
/// ten fields, and every one beyond them is an error anyway.
pub const MAX_OPTIONS: usize = 32;

/// Most bytes of option values in one request: the longest legitimate value is a step list or
/// a sequence, a few bytes per model step.
pub const MAX_OPTION_BYTES: usize = 64 * 1024;

/// A body's JSON `options`, flattened to `name=value` text pairs as the query has them. Read by a
/// visitor that keeps only these pairs, so a body of nested arrays costs no tree of values.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyOptions(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for BodyOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OptionsVisitor)
    }
}

struct OptionsVisitor;

impl<'de> serde::de::Visitor<'de> for OptionsVisitor {
    type Value = BodyOptions;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of options")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<BodyOptions, A::Error> {
        use serde::de::Error;
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut bytes = 0usize;
        while let Some(key) = map.next_key::<String>()? {
            if pairs.len() == MAX_OPTIONS {
                return Err(A::Error::custom(format!("more than {MAX_OPTIONS} options")));
            }
            let value = map
                .next_value_seed(OptionValue {
                    budget: MAX_OPTION_BYTES.saturating_sub(bytes),
                })
                .map_err(|e| A::Error::custom(format!("option {}: {e}", quote(&key))))?;
            bytes += key.len() + value.len();
            pairs.push((key, value));
        }
        Ok(BodyOptions(pairs))
    }
}

/// One option's value as text: a string, number or boolean, or a list of those joined by
/// commas (clients write `"layers": ["conv1", "conv2"]` naturally). At most `budget` bytes.
struct OptionValue {
    budget: usize,
}

impl OptionValue {
    fn fits<E: serde::de::Error>(&self, text: String) -> Result<String, E> {
        if text.len() > self.budget {
            Err(E::custom(format!(
                "options hold more than {MAX_OPTION_BYTES} bytes of values"
            )))
        } else {
            Ok(text)
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for OptionValue {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for OptionValue {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, number, boolean or list of those")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.budget {
            return Err(E::custom(format!(
                "options hold more than {MAX_OPTION_BYTES} bytes of values"
            )));
        }
        Ok(v.to_string())
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        self.fits(v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        self.fits(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        self.fits(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        self.fits(v.to_string())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        use serde::de::Error;
        let mut out = String::new();
        while let Some(item) = seq.next_element_seed(ListItem {
            budget: self.budget.saturating_sub(out.len() + 1),
        })? {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&item);
            if out.len() > self.budget {
                return Err(A::Error::custom(format!(
                    "options hold more than {MAX_OPTION_BYTES} bytes of values"
                )));
            }
        }
        Ok(out)
    }
}

/// An item of a list option: a string, number or boolean (no nesting).
struct ListItem {
    budget: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for ListItem {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ListItem {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("list items that are strings, numbers or booleans")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        OptionValue {
            budget: self.budget,
        }
        .visit_str(v)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A multipart `options` part: a JSON object, read as the JSON body's `options` is.
pub fn options_from_json(json: &[u8]) -> Result<BodyOptions, ApiError> {
    serde_json::from_slice::<Option<BodyOptions>>(json)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            ApiError::bad_request(
                "bad_json",
                format!("the `options` part is not a valid options object: {e}"),
            )
        })
}

/// What a JSON body is read as: the images stay raw text until their count is known, so a
/// body of a million empty strings is refused without a million allocations.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonBody<'a> {
    #[serde(borrow)]
    images: &'a serde_json::value::RawValue,
    #[serde(default, borrow)]
    mask: Option<Base64Text<'a>>,
    #[serde(default)]
    options: Option<BodyOptions>,
}

/// A base64 string, borrowed from the body unless it has JSON escapes.
#[derive(Deserialize)]
struct Base64Text<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

/// Counts a JSON array's elements without keeping them.
struct CountElements;

impl<'de> serde::de::Visitor<'de> for CountElements {
    type Value = usize;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of base64 strings")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0usize;
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(n)
    }
}

/// Reads a JSON image request: at most `max_images` images (counted before any is copied),
/// each checked for its decoded size before decoding.
pub fn parse_json_body(
    body: &[u8],
    max_images: usize,
    max_image_bytes: usize,
) -> Result<ImagePayload, ApiError> {
    let bad_json =
        |e: serde_json::Error| ApiError::bad_request("bad_json", format!("invalid JSON body: {e}"));
    let parsed: JsonBody = serde_json::from_slice(body).map_err(bad_json)?;
    let raw = parsed.images.get();
    let count = serde::Deserializer::deserialize_seq(
        &mut serde_json::Deserializer::from_str(raw),
        CountElements,
    )
    .map_err(bad_json)?;
    check_image_count(count, max_images)?;
    let texts: Vec<Base64Text> = serde_json::from_str(raw).map_err(bad_json)?;
    let images = texts
        .iter()
        .enumerate()
        .map(|(i, t)| decode_b64(&format!("images[{i}]"), &t.0, max_image_bytes))
        .collect::<Result<Vec<_>, _>>()?;
    let mask = parsed
        .mask
        .as_ref()
        .map(|m| decode_b64("mask", &m.0, max_image_bytes))
        .transpose()?;
    Ok(ImagePayload {
        images,
        mask,
        options: parsed.options,
        admission: None,
    })
}

/// More images than the limit is a 413, found before they are kept.
fn check_image_count(count: usize, max_images: usize) -> Result<(), ApiError> {
    if count > max_images {
        return Err(ApiError::PayloadTooLarge(format!(
            "{count} images in one request; the limit is {max_images}"
        )));
    }
    Ok(())
}

/// Decodes base64 (or a data URL); the decoded size is bounded from the text's length first.
fn decode_b64(what: &str, text: &str, max_bytes: usize) -> Result<Bytes, ApiError> {
    // Accept data URLs too, since browsers hand those out.
    let text = text.rsplit_once(";base64,").map_or(text, |(_, b)| b).trim();
    let decoded_at_most = text.len() / 4 * 3 + 3;
    if decoded_at_most > max_bytes.saturating_add(3) {
        return Err(ApiError::PayloadTooLarge(format!(
            "{what} is {} bytes of base64, more than an image of at most {max_bytes} bytes needs",
            text.len()
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
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
        check_image_count(payload.images.len(), state.limits.max_images_per_request)?;
        Ok(payload)
    }
}

/// Reads the parts of a multipart body; the image count is checked as each part arrives.
pub async fn read_multipart(
    mut multipart: Multipart,
    max_images: usize,
) -> Result<ImagePayload, ApiError> {
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
        let is_image = !matches!(name.as_str(), "options" | "mask") && !is_json;
        if is_image {
            check_image_count(payload.images.len() + 1, max_images)?;
        }
        let data = field.bytes().await.map_err(bad)?;
        match name.as_str() {
            "options" => payload.options = Some(options_from_json(&data)?),
            "mask" => payload.mask = Some(data),
            _ if is_json => {
                return Err(ApiError::bad_request(
                    "bad_multipart",
                    format!(
                        "JSON part {}: options go in a part named `options`",
                        quote(&name)
                    ),
                ))
            }
            _ => payload.images.push(data),
        }
    }
    Ok(payload)
}

/// Merges query options with the body's JSON options (the body wins) and parses them into `T`,
/// rejecting unknown keys so typos do not pass silently. Both sources are bounded (at most
/// [`MAX_OPTIONS`] names and [`MAX_OPTION_BYTES`] of values) before anything is kept.
pub fn merge_options<T: serde::de::DeserializeOwned>(
    query: Option<&str>,
    body: Option<BodyOptions>,
) -> Result<T, ApiError> {
    let too_many = || {
        ApiError::bad_request(
            "bad_option",
            format!(
                "too many options: at most {MAX_OPTIONS} names and {MAX_OPTION_BYTES} bytes of \
                 values"
            ),
        )
    };
    let mut merged: std::collections::BTreeMap<String, String> = Default::default();
    if let Some(q) = query {
        let mut bytes = 0usize;
        for (i, (k, v)) in form_urlencoded::parse(q.as_bytes()).enumerate() {
            bytes = bytes.saturating_add(k.len() + v.len());
            if i >= MAX_OPTIONS || bytes > MAX_OPTION_BYTES {
                return Err(too_many());
            }
            merged.insert(k.into_owned(), v.into_owned());
        }
    }
    for (k, v) in body.map(|b| b.0).unwrap_or_default() {
        merged.insert(k, v);
    }
    // Round-trip through the urlencoded form so numbers in strings parse as the query would.
    let encoded = serde_urlencoded::to_string(&merged)
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
        read_multipart(multipart, state.limits.max_images_per_request).await?
    } else if essence == "application/json" {
        let body = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse_json_body(
            &body,
            state.limits.max_images_per_request,
            state.limits.image.max_bytes,
        )?
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type {} is not supported: send an image/* body, multipart/form-data \
             or application/json with base64 images",
            quote(if content_type.is_empty() {
                "(none)"
            } else {
                content_type
            })
        )));
    };
    Ok(payload)
}
