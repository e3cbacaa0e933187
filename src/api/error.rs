//! The one place errors become HTTP: every failure is `{"error": "...", "code": "..."}` with a
//! status that says whose fault it is. Handlers return [`ApiError`]; lower layers' errors convert
//! into it with `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::EngineError;
use crate::gather::GatherError;
use crate::image::ImageError;
use crate::metrics::reason;
use crate::presentation::PresentationError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "layer \"conv9\" does not exist (layers: conv1, conv2, conv3)", "code": "unknown_layer", "request_id": "3f9a1c07b2d4-1a"}))]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// A stable machine-readable code.
    pub code: String,
    /// The request's id, as in its `x-request-id` header: quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{msg}")]
    BadRequest { code: &'static str, msg: String },
    /// No API key, or not a valid one.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String, &'static str),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{msg}")]
    Overloaded { msg: String, retry_after_s: u64 },
    #[error("{0}")]
    Timeout(String),
    /// The client did not send its body within the deadline.
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// A session run failed or panicked.
    #[error("{0}")]
    Backend(String),
    #[error("{0}")]
    Internal(String),
}

/// Longest error message sent: messages can embed a parser's view of client input.
const MESSAGE_BYTES: usize = 1024;

pub use crate::quote::quote;

/// `message` cut to at most [`MESSAGE_BYTES`] bytes, at a character boundary.
pub fn clip_message(mut message: String) -> String {
    if message.len() > MESSAGE_BYTES {
        let mut cut = MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// The failure reason a response carries to the metrics middleware.
#[derive(Debug, Clone, Copy)]
pub struct FailureReason(pub &'static str);

impl ApiError {
    pub fn bad_request(code: &'static str, msg: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            msg: msg.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(..) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Backend(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::NotFound(_, code) => code,
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NotAcceptable(_) => "not_acceptable",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Timeout(_) => "timeout",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Backend(_) => "backend",
            ApiError::Internal(_) => "internal",
        }
    }

    /// Seconds for the `Retry-After` header of the failures a client should retry.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
            // Draining or still warming up: the client should try again (another replica, or
            // this one once ready), with no better estimate than soon.
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::Overloaded { .. } => reason::OVERLOADED,
            ApiError::Timeout(_) => reason::TIMEOUT,
            ApiError::Unauthorized(_) => reason::UNAUTHORIZED,
            ApiError::Backend(_) | ApiError::Internal(_) | ApiError::Unavailable(_) => {
                reason::BACKEND
            }
            _ => reason::VALIDATION,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self, "request failed");
        }
        let body = ErrorBody {
            error: clip_message(self.to_string()),
            code: self.code().to_string(),
            request_id: super::request_id::current(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
            .extensions_mut()
            .insert(FailureReason(self.reason()));
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownModel(_) => ApiError::NotFound(e.to_string(), "model_not_found"),
            EngineError::Overloaded { retry_after_s, .. } => ApiError::Overloaded {
                msg: e.to_string(),
                retry_after_s,
            },
            EngineError::TooLarge { .. } => ApiError::PayloadTooLarge(e.to_string()),
            EngineError::Timeout => ApiError::Timeout(e.to_string()),
            EngineError::ShuttingDown => ApiError::Unavailable(e.to_string()),
            EngineError::Backend(_) => ApiError::Backend(e.to_string()),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge { .. }
            | ImageError::BodyTooLarge { .. }
            | ImageError::MemoryLimit(_) => ApiError::PayloadTooLarge(e.to_string()),
            ImageError::InvalidConfig(_) | ImageError::Resize(_) => {
                ApiError::Internal(e.to_string())
            }
            _ => ApiError::bad_request("invalid_image", e.to_string()),
        }
    }
}

impl From<GatherError> for ApiError {
    fn from(e: GatherError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<PresentationError> for ApiError {
    fn from(e: PresentationError) -> Self {
        ApiError::bad_request("invalid_presentation", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_status() {
        let table = [
            (ApiError::bad_request("x", "m"), 400),
            (ApiError::Unauthorized("m".into()), 401),
            (ApiError::NotFound("m".into(), "model_not_found"), 404),
            (ApiError::MethodNotAllowed("m".into()), 405),
            (ApiError::UnsupportedMediaType("m".into()), 415),
            (ApiError::PayloadTooLarge("m".into()), 413),
            (ApiError::NotAcceptable("m".into()), 406),
            (
                ApiError::Overloaded {
                    msg: "m".into(),
                    retry_after_s: 1,
                },
                429,
            ),
            (ApiError::Timeout("m".into()), 504),
            (ApiError::BodyTimeout("m".into()), 408),
            (ApiError::Unavailable("m".into()), 503),
            (ApiError::Backend("m".into()), 500),
            (ApiError::Internal("m".into()), 500),
        ];
        for (err, status) in table {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
        }
        let overloaded = ApiError::from(EngineError::Overloaded {
            model: "m".into(),
            capacity: 1,
            retry_after_s: 7,
        })
        .into_response();
        assert_eq!(overloaded.status(), 429);
        assert_eq!(overloaded.headers()[header::RETRY_AFTER], "7");
    }
}
