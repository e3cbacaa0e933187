//! KServe v2 errors: the protocol's body is `{"error": "..."}`, so v2 has its own error type
//! (the `/v1` one adds a `code`); both add the `request_id`. Failures still carry their reason to the
//! metrics middleware.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::{ApiError, FailureReason};
use crate::engine::EngineError;
use crate::metrics::reason;

/// The body of every KServe v2 error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": "input \"frames\" has shape [1, 5, 3, 32, 32]; the model takes [n, 8, 3, 32, 32]"}))]
pub struct V2ErrorBody {
    pub error: String,
    /// The request's id, as in its `x-request-id` header (an addition to the protocol's body).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Error {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After`, on the failures a client should retry.
    pub retry_after: Option<u64>,
}

impl V2Error {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then_some(1);
        Self {
            status,
            message: crate::api::error::clip_message(message.into()),
            retry_after,
        }
    }

    /// A malformed or invalid request (the protocol's catch-all).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn reason(&self) -> &'static str {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => reason::OVERLOADED,
            StatusCode::GATEWAY_TIMEOUT => reason::TIMEOUT,
            StatusCode::UNAUTHORIZED => reason::UNAUTHORIZED,
            s if s.is_server_error() => reason::BACKEND,
            _ => reason::VALIDATION,
        }
    }
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "v2 request failed");
        }
        let reason = self.reason();
        let mut response = (
            self.status,
            Json(V2ErrorBody {
                error: self.message,
                request_id: crate::api::request_id::current(),
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(FailureReason(reason));
        response
    }
}

impl From<ApiError> for V2Error {
    fn from(e: ApiError) -> Self {
        Self {
            retry_after: e.retry_after(),
            ..Self::new(e.status(), e.to_string())
        }
    }
}

impl From<EngineError> for V2Error {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_retry_after() {
        let r = V2Error::from(EngineError::Overloaded {
            model: "m".into(),
            capacity: 1,
            retry_after_s: 12,
        })
        .into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "12");
        let r = V2Error::from(EngineError::ShuttingDown).into_response();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(V2Error::bad_request("x").into_response().status(), 400);
    }
}
