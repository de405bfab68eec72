//! The API's error body and how each layer's errors map onto HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_bus as bus;

use crate::fleet::registry::RegistryError;
use crate::security::auth;
use crate::store::StoreError;
use crate::ServiceError;

/// Rundeck-style error body: `{"error": true, "errorCode": …, "message": …}`.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(super) fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "api.error.item.doesnotexist", what)
    }
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "api.error.invalid.request",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self.message, "api error");
        }
        let body = crate::contract::ErrorBody {
            error: true,
            error_code: self.code.into(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoProject(p) => {
                ApiError::not_found(format!("project `{p}` does not exist"))
            }
            StoreError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "api.error.item.conflict", m)
            }
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Service(s) => s.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api.error.unavailable",
            e.to_string(),
        )
    }
}

impl From<bus::BusError> for ApiError {
    fn from(e: bus::BusError) -> Self {
        ServiceError::from(e).into()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Invalid(m) => ApiError::invalid(m),
        RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        RegistryError::Exists(_) | RegistryError::Revoked(_) => ApiError::new(
            StatusCode::CONFLICT,
            "api.error.item.conflict",
            e.to_string(),
        ),
        RegistryError::NoKeys => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "api.error.security.nokeys",
            e.to_string(),
        ),
        RegistryError::Security(_) | RegistryError::Service(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api.error.unavailable",
            e.to_string(),
        ),
    }
}

pub(super) fn auth_error(e: auth::AuthError) -> ApiError {
    match e {
        auth::AuthError::Invalid(m) => ApiError::invalid(m),
        auth::AuthError::NotFound(_) => ApiError::not_found(e.to_string()),
        auth::AuthError::Service(s) => s.into(),
    }
}

/// Errors that no handler wrote (an unknown route, a wrong method, a body
/// or query the extractors refused) get the same JSON body as the rest, so
/// that a client reads every error one way, as the OpenAPI document says.
pub(super) async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    // The extractors' own text says what was wrong with the input.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, fallback) = match status {
        StatusCode::NOT_FOUND => ("api.error.route.unknown", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "api.error.method.unsupported",
            "this route does not take that method",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "api.error.content-type.unsupported",
            "this route takes another content type",
        ),
        s if s.is_client_error() => ("api.error.invalid.request", "invalid request"),
        _ => ("api.error.unavailable", "internal error"),
    };
    let message = if text.is_empty() {
        fallback.to_string()
    } else {
        text
    };
    ApiError::new(status, code, message).into_response()
}
