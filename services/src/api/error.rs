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
