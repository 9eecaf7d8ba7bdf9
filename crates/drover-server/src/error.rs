//! [`ApiError`]: the one error type of the HTTP API, and the one table of
//! error codes. Every 4xx/5xx body is
//! `{"error": {"code", "message", "details"}}`; internal details are logged,
//! not leaked.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_store::StoreError;
use serde_json::{Value, json};

/// Every error code the API answers with, and its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON (syntax error).
    InvalidJson,
    /// The JSON does not fit the request's shape: unknown field, wrong type,
    /// missing field.
    InvalidBody,
    /// A value is out of range or otherwise refused by validation.
    ValidationFailed,
    /// A query string parameter is malformed.
    InvalidQuery,
    /// A request header is malformed (e.g. `Last-Event-ID`).
    InvalidHeader,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The route speaks WebSocket and the request is not an upgrade.
    UpgradeRequired,
    /// The body is larger than the limit (1 MiB by default).
    PayloadTooLarge,
    /// No such job (or queue, ...).
    NotFound,
    /// No such route.
    RouteNotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The job's state does not allow the operation.
    InvalidState,
    /// The lease token is wrong or expired: stop working on the job.
    LeaseLost,
    /// The store cannot be reached; retry later.
    Unavailable,
    /// A route of a later milestone.
    NotImplemented,
    /// A bug or an unexpected failure; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in the body.
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        self.entry().1
    }

    fn entry(self) -> (&'static str, StatusCode) {
        match self {
            ErrorCode::InvalidJson => ("invalid_json", StatusCode::BAD_REQUEST),
            ErrorCode::InvalidBody => ("invalid_body", StatusCode::UNPROCESSABLE_ENTITY),
            ErrorCode::ValidationFailed => ("validation_failed", StatusCode::UNPROCESSABLE_ENTITY),
            ErrorCode::InvalidQuery => ("invalid_query", StatusCode::BAD_REQUEST),
            ErrorCode::InvalidHeader => ("invalid_header", StatusCode::BAD_REQUEST),
            ErrorCode::UnsupportedMediaType => ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ErrorCode::UpgradeRequired => ("upgrade_required", StatusCode::UPGRADE_REQUIRED),
            ErrorCode::PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            ErrorCode::NotFound => ("not_found", StatusCode::NOT_FOUND),
            ErrorCode::RouteNotFound => ("route_not_found", StatusCode::NOT_FOUND),
            ErrorCode::MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            ErrorCode::InvalidState => ("invalid_state", StatusCode::CONFLICT),
            ErrorCode::LeaseLost => ("lease_lost", StatusCode::CONFLICT),
            ErrorCode::Unavailable => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            ErrorCode::NotImplemented => ("not_implemented", StatusCode::NOT_IMPLEMENTED),
            ErrorCode::Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

/// An error answer: a code, a human sentence, and structured details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// Which error.
    pub code: ErrorCode,
    /// A human sentence.
    pub message: String,
    /// Structured context (`{"field": ...}`, ...).
    pub details: Value,
}

impl ApiError {
    /// An error with empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), details: json!({}) }
    }

    /// The same error with details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// A validation failure naming its field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Self::new(ErrorCode::ValidationFailed, format!("{field}: {message}")).details(json!({ "field": field }))
    }

    /// No job with this id.
    pub fn job_not_found(id: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no job with id `{id}`")).details(json!({ "id": id }))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::new(ErrorCode::NotFound, format!("not found: {what}")),
            StoreError::LeaseLost(id) => ApiError::new(
                ErrorCode::LeaseLost,
                format!("job {id} is not active under this lease: it expired or was handed to another worker"),
            )
            .details(json!({ "id": id })),
            StoreError::InvalidState { state, message } => {
                ApiError::new(ErrorCode::InvalidState, format!("job is {state}: {message}"))
                    .details(json!({ "state": state.as_str() }))
            }
            StoreError::Invalid { field, message } => ApiError::invalid_field(field, message),
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "store unavailable");
                ApiError::new(ErrorCode::Unavailable, "the store is unavailable; retry later")
            }
            StoreError::Closed => ApiError::new(ErrorCode::Unavailable, "the server is shutting down"),
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

impl From<drover::Error> for ApiError {
    fn from(e: drover::Error) -> Self {
        match e {
            drover::Error::Store(e) => e.into(),
            drover::Error::Invalid { field, message } => ApiError::invalid_field(field, message),
            other => {
                tracing::error!(error = %other, "library failure");
                ApiError::new(ErrorCode::Internal, "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code.as_str(), "message": self.message, "details": self.details } });
        (self.code.status(), Json(body)).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// The error body, as documented in the OpenAPI document.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine code from the error table, e.g. `validation_failed`.
    pub code: String,
    /// A human sentence.
    pub message: String,
    /// Structured context, e.g. `{"field": "jobs[3].queue"}`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}
