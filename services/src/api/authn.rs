//! The authentication middleware: a bearer token, its roles, and the route policy.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::security::auth::{self, Need, ProjectOf, Role};
use crate::ServiceError;

use super::audit::{record_attempt, AuditedCall};
use super::error::{ApiError, ApiResult};
use super::executions::execution_state;
use super::{AppState, API_PREFIX};

/// Who made a call, for the audit record (set by `authenticate`).
#[derive(Clone)]
pub(super) struct Actor(pub(super) String);

/// The token of a request: `Authorization: Bearer …`, or Rundeck's
/// `X-Rundeck-Auth-Token` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            headers
                .get("x-rundeck-auth-token")
                .and_then(|v| v.to_str().ok())
        })
        .map(str::trim)
}

/// Checks the caller's token against the route's policy
/// ([`auth::policy`]): 401 without a valid token, 403 without the role.
pub(super) async fn authenticate(
    State(s): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| format!("{API_PREFIX}{}", req.uri().path()));
    let need = auth::policy(req.method().as_str(), &route);
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let refuse = |status: StatusCode, code: &'static str, message: String, actor: &str| {
        let mut r = ApiError::new(status, code, message).into_response();
        r.extensions_mut().insert(Actor(actor.to_string()));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
        }
        r
    };
    let principal = match bearer(req.headers()) {
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "api.error.unauthorized",
                "no API token: send `Authorization: Bearer <token>`".into(),
                "anonymous",
            )
        }
        Some(t) => match s.tokens.verify(t).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "api.error.unauthorized",
                    "the API token is not valid (unknown, revoked or malformed)".into(),
                    "anonymous",
                )
            }
            Err(e) => return ApiError::from(ServiceError::Nats(e.to_string())).into_response(),
        },
    };
    let allowed = match need {
        Need::Nothing | Need::AnyToken => Ok(true),
        Need::Global(role) => Ok(principal.has(role, None)),
        Need::Project(role, from) => match project_of(&s, &mut req, from).await {
            // Unknown ids go on to the handler, which says 404 — to those
            // who could see them. Others are told no more than 403.
            Ok(None) => Ok(principal.has(Role::Viewer, None)),
            Ok(Some(project)) => Ok(principal.has(role, Some(&project))),
            Err(e) => Err(e),
        },
    };
    match allowed {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "api.error.forbidden",
                format!(
                    "token `{}` does not have the role this call needs ({need:?})",
                    principal.name
                ),
                &principal.name,
            )
        }
        Err(e) => {
            let mut r = e.into_response();
            r.extensions_mut().insert(Actor(principal.name.clone()));
            return r;
        }
    }
    let name = principal.name.clone();
    // A mutating call runs only once its attempt is on record.
    if let Some(call) = req.extensions().get::<AuditedCall>().cloned() {
        if let Err(err) = record_attempt(&s, &call, &name).await {
            tracing::error!(error = %err, action = %call.action, "cannot record the audit attempt; refusing the call");
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api.error.audit-unavailable",
                format!("the audit trail cannot be written, so nothing was done: {err}"),
            )
            .into_response();
            r.extensions_mut().insert(Actor(name));
            return r;
        }
    }
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(Actor(name));
    response
}

/// The project a request acts on; `None` when its job or execution does
/// not exist.
pub(super) async fn project_of(
    s: &AppState,
    req: &mut axum::extract::Request,
    from: ProjectOf,
) -> ApiResult<Option<String>> {
    use axum::extract::RawPathParams;
    use axum::RequestPartsExt;
    let (mut parts, body) = std::mem::take(req).into_parts();
    let params = parts.extract::<RawPathParams>().await;
    *req = axum::extract::Request::from_parts(parts, body);
    let params = params.map_err(|e| ApiError::invalid(e.to_string()))?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    match from {
        ProjectOf::Path => Ok(param("project")),
        ProjectOf::Job => {
            let Some(id) = param("id").and_then(|i| Uuid::parse_str(&i).ok()) else {
                return Ok(None);
            };
            Ok(s.store.job(id).await?.map(|j| j.project))
        }
        ProjectOf::Execution => {
            let Some(id) = param("id").and_then(|i| Uuid::parse_str(&i).ok()) else {
                return Ok(None);
            };
            match execution_state(s, id).await {
                Ok(st) => Ok(Some(st.project)),
                Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}
