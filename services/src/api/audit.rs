//! The audit middleware (an attempt before a mutating call, its outcome after) and `/audit`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use outpost_bus as bus;
use outpost_schemas::{subjects, AuditEvent, AuditResult, Header};
use serde::Deserialize;
use uuid::Uuid;

use crate::contract::AuditEntry;

use super::authn::Actor;
use super::error::ApiResult;
use super::{AppState, API_PREFIX};

/// A mutating call on its way through the middlewares: what the audit
/// records of it say.
#[derive(Clone)]
pub(super) struct AuditedCall {
    pub(super) request_id: Uuid,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) source: String,
}

impl AuditedCall {
    pub(super) fn record(&self, actor: &str, result: AuditResult, status: u16) -> AuditEvent {
        AuditEvent {
            header: Header::now(),
            actor: actor.to_string(),
            action: self.action.clone(),
            target: self.target.clone(),
            source: self.source.clone(),
            result,
            status,
            detail: None,
            request_id: Some(self.request_id),
        }
    }
}

/// How long an attempt record may take before the call is refused: a
/// moment's unavailability is ridden out, an outage is not waited on.
pub(super) const ATTEMPT_WITHIN: Duration = Duration::from_secs(3);

pub(super) async fn record_attempt(
    s: &AppState,
    call: &AuditedCall,
    actor: &str,
) -> Result<(), bus::BusError> {
    let event = call.record(actor, AuditResult::Attempted, 0);
    let payload = bus::encode(subjects::AUDIT_API, &event)?;
    let id = format!("attempt.{}", call.request_id);
    bus::publish_acked_within(&s.js, subjects::AUDIT_API, &id, payload, ATTEMPT_WITHIN)
        .await
        .map(drop)
}

/// Records every mutating call (anything but GET/HEAD/OPTIONS) on the audit
/// stream: its attempt before it runs (see [`authenticate`]), and its
/// outcome after, off the response path. Refused calls get an outcome only.
pub(super) async fn audit(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    // The router is nested under API_PREFIX, which axum strips from the URI.
    let target = format!("{API_PREFIX}{}", req.uri().path());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| target.clone());
    let call = AuditedCall {
        request_id: Uuid::now_v7(),
        action: format!("{method} {route}"),
        target,
        source: peer.to_string(),
    };
    req.extensions_mut().insert(call.clone());
    let response = next.run(req).await;
    let status = response.status();
    let actor = response
        .extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "anonymous".into());
    let result = if status.is_success() {
        AuditResult::Success
    } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        AuditResult::Denied
    } else {
        AuditResult::Error
    };
    let event = call.record(&actor, result, status.as_u16());
    let js = s.js.clone();
    s.audit_tasks.spawn(async move {
        let id = format!("outcome.{}", call.request_id);
        if let Err(err) = bus::publish_json(&js, subjects::AUDIT_API, &id, &event).await {
            tracing::error!(error = %err, action = event.action, "cannot record the audit outcome; its attempt is on record");
        }
    });
    response
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only events after this sequence (an entry's `seq`), for following.
    after: Option<u64>,
    /// At most this many (1 to 1000; 50 by default).
    max: Option<usize>,
}

/// The newest audit events (at most `max`, default 50), oldest first; or,
/// with `after`, those that follow that sequence.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>)))]
pub(super) async fn list_audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let max = q.max.unwrap_or(50).clamp(1, 1000);
    let (stream, state) = crate::stream_with_state(&s.js, subjects::AUDIT_STREAM).await?;
    if state.messages == 0 {
        return Ok(Json(Vec::new()));
    }
    let from = match q.after {
        // Never below the first stored event: an old `after` must not make
        // us walk a gap of deleted sequences one by one.
        Some(a) => a.saturating_add(1).max(state.first_sequence),
        None => state
            .last_sequence
            .saturating_sub(max as u64 - 1)
            .max(state.first_sequence),
    };
    let mut out = Vec::new();
    let mut seq = from;
    while seq <= state.last_sequence && out.len() < max {
        if let Ok(msg) = stream.direct_get(seq).await {
            if let Ok(event) = serde_json::from_slice(&msg.payload) {
                out.push(AuditEntry { seq, event });
            }
        }
        seq += 1;
    }
    Ok(Json(out))
}
