//! The one place where engine errors become HTTP statuses and JSON bodies.
//!
//! Body shape, stable for scripts: `{"error": {"kind": "...", "message": "..."}}`
//! where `message` carries the whole cause chain.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cutover_engine::{EngineError, ErrorKind};
use serde_json::json;

/// The body of every error answer, for the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `too_many_requests`, `internal`.
    pub kind: String,
    /// What was wrong and how to fix it, with the whole cause chain.
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    /// Seconds for `Retry-After` (429 only).
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_request",
            message: message.into(),
            retry_after: None,
        }
    }

    /// Too many failed authentications from one source: 429 with `Retry-After`.
    pub fn too_many_requests(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "too_many_requests",
            message: message.into(),
            retry_after: Some(retry_after_secs),
        }
    }

    /// A request body over its limit: 413.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "payload_too_large",
            message: message.into(),
            retry_after: None,
        }
    }

    /// No usable token (missing, unknown, expired, revoked): 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "unauthorized",
            message: message.into(),
            retry_after: None,
        }
    }

    /// A valid token whose role is too low for the request: 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden",
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let (status, kind) = match e.kind() {
            ErrorKind::BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorKind::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = e.chain();
        if status.is_server_error() {
            tracing::error!(error = %message, "request failed");
        } else {
            tracing::debug!(error = %message, "request refused");
        }
        Self {
            status,
            kind,
            message,
            retry_after: None,
        }
    }
}

impl From<cutover_core::NameError> for ApiError {
    fn from(e: cutover_core::NameError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "kind": self.kind, "message": self.message } }));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer realm=\"cutover\"")];
            return (self.status, challenge, body).into_response();
        }
        if let Some(secs) = self.retry_after {
            return (
                self.status,
                [(axum::http::header::RETRY_AFTER, secs.to_string())],
                body,
            )
                .into_response();
        }
        (self.status, body).into_response()
    }
}
