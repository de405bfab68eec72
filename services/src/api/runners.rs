//! `/runners`: live runners and their health; enrolment, revocation, rotation, drain and ping.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use outpost_schemas::{rpc, subjects};
use uuid::Uuid;

use crate::contract::{
    Draining, EnrolRequest, EnrolledRunner, Enrolment, PingReply, PingedReplica, Revocation,
    Rotation, RunnerReplica,
};
use crate::fleet::health;
use crate::security::auth::Principal;
use crate::ServiceError;

use super::error::{registry_error, ApiError, ApiResult};
use super::AppState;

/// `GET /runners`: one entry per replica (its latest heartbeat, `live` and
/// `health`), and one per enrolled runner that never checked in (`new`).
/// `runner_health` is the runner's, from its healthiest replica.
#[utoipa::path(get, path = "/api/v1/runners", tag = "runners",
    responses((status = 200, body = Vec<RunnerReplica>)))]
pub(super) async fn list_runners(State(s): State<AppState>) -> ApiResult<Json<Vec<RunnerReplica>>> {
    let hbs = health::heartbeats(&s.js)
        .await
        .map_err(ServiceError::Nats)?;
    let now = Utc::now();
    let mut by_runner: BTreeMap<String, Vec<health::Health>> = BTreeMap::new();
    for h in &hbs {
        by_runner
            .entry(h.runner_id.clone())
            .or_default()
            .push(health::replica_health(h, now, s.health));
    }
    let mut out: Vec<RunnerReplica> = hbs
        .into_iter()
        .map(|h| {
            let health = health::replica_health(&h, now, s.health);
            let runner_health = health::runner_health(by_runner[&h.runner_id].iter().copied());
            RunnerReplica {
                live: health::is_live(&h),
                health,
                runner_health,
                replica_id: Some(h.replica_id),
                version: Some(h.version),
                hostname: Some(h.hostname),
                local: h.local,
                state: Some(h.state),
                running_steps: Some(h.running_steps),
                capacity: Some(h.capacity),
                outbox_entries: Some(h.outbox_entries),
                outbox_bytes: Some(h.outbox_bytes),
                time: Some(h.header.time),
                started: None,
                plugins: h.plugins,
                plugins_not_allowed: h.plugins_not_allowed,
                runner_id: h.runner_id,
                tags: h.tags,
            }
        })
        .collect();
    if let Ok(enrolled) = s.registry.list().await {
        for rec in enrolled
            .into_iter()
            .filter(|r| r.revoked.is_none() && !by_runner.contains_key(&r.name))
        {
            // Heartbeats expire after a day: one that ran once is down.
            let health = if rec.started.is_some() {
                health::Health::Down
            } else {
                health::Health::New
            };
            out.push(RunnerReplica {
                runner_id: rec.name,
                tags: rec.tags,
                live: false,
                health,
                runner_health: health,
                replica_id: None,
                version: None,
                hostname: None,
                local: false,
                state: None,
                running_steps: None,
                capacity: None,
                outbox_entries: None,
                outbox_bytes: None,
                time: None,
                started: rec.started,
                plugins: Vec::new(),
                plugins_not_allowed: Vec::new(),
            });
        }
    }
    Ok(Json(out))
}

/// `POST /runners`: enrols a runner; the bundle in the reply is the only
/// copy of its credentials.
#[utoipa::path(post, path = "/api/v1/runners", tag = "runners",
    request_body = EnrolRequest,
    responses((status = 201, body = Enrolment), (status = 409, description = "A runner of that name exists", body = crate::contract::ErrorBody)))]
pub(super) async fn enrol_runner(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<EnrolRequest>,
) -> ApiResult<(StatusCode, Json<Enrolment>)> {
    let (rec, bundle) = s
        .registry
        .enrol(&req.name, &req.tags, &who.name)
        .await
        .map_err(registry_error)?;
    Ok((
        StatusCode::CREATED,
        Json(Enrolment {
            runner: rec.into(),
            bundle: crate::fleet::registry::bundle_text(&bundle),
        }),
    ))
}

/// Every enrolled runner, revoked ones included.
#[utoipa::path(get, path = "/api/v1/runners/enrolled", tag = "runners",
    responses((status = 200, body = Vec<EnrolledRunner>)))]
pub(super) async fn list_enrolled(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<EnrolledRunner>>> {
    let list = s.registry.list().await.map_err(registry_error)?;
    Ok(Json(list.into_iter().map(Into::into).collect()))
}

/// Revokes a runner: its credentials stop working, its connections are
/// cut, and the steps it held end as runner-lost.
#[utoipa::path(post, path = "/api/v1/runners/{name}/revoke", tag = "runners",
    params(("name" = String, Path)),
    responses((status = 200, body = Revocation)))]
pub(super) async fn revoke_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Revocation>> {
    let (ended, cut) = s.registry.revoke(&name).await.map_err(registry_error)?;
    Ok(Json(Revocation {
        runner: name,
        revoked: true,
        steps_ended: ended,
        connections_cut: cut,
    }))
}

/// Issues new credentials; the runner switches to them when its `--creds`
/// file is replaced.
#[utoipa::path(post, path = "/api/v1/runners/{name}/rotate", tag = "runners",
    params(("name" = String, Path)),
    responses((status = 200, body = Rotation)))]
pub(super) async fn rotate_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Rotation>> {
    let bundle = s.registry.rotate(&name).await.map_err(registry_error)?;
    Ok(Json(Rotation {
        runner: name,
        bundle: crate::fleet::registry::bundle_text(&bundle),
    }))
}

/// `POST /runners/{name}/drain`: every replica stops taking steps, lets its
/// running ones finish, and stops (then shows `down`).
#[utoipa::path(post, path = "/api/v1/runners/{name}/drain", tag = "runners",
    params(("name" = String, Path)),
    responses((status = 200, body = Draining)))]
pub(super) async fn drain_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Draining>> {
    if name.starts_with('_') {
        return Err(ApiError::invalid(
            "the control plane's local runner is not drained this way; stop its service",
        ));
    }
    let hbs = health::heartbeats(&s.js)
        .await
        .map_err(ServiceError::Nats)?;
    let live = hbs
        .iter()
        .filter(|h| h.runner_id == name && health::is_live(h))
        .count();
    s.client
        .publish(
            subjects::runner_control(&name, rpc::CONTROL_DRAIN),
            bytes::Bytes::from_static(rpc::DRAIN_NOTICE),
        )
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    s.client
        .flush()
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    Ok(Json(Draining {
        runner: name,
        draining: true,
        live_replicas: live,
    }))
}

/// `POST /runners/{name}/ping`: a round trip through every replica that
/// answers within 2 s.
#[utoipa::path(post, path = "/api/v1/runners/{name}/ping", tag = "runners",
    params(("name" = String, Path)),
    responses((status = 200, body = PingReply)))]
pub(super) async fn ping_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<PingReply>> {
    let nats = |e: String| ApiError::from(ServiceError::Nats(e));
    let mut pongs = s
        .client
        .subscribe(subjects::rpc(&name, "pong"))
        .await
        .map_err(|e| nats(e.to_string()))?;
    let nonce = Uuid::now_v7();
    let ping = outpost_schemas::rpc::Ping { nonce };
    let sent = std::time::Instant::now();
    s.client
        .publish(
            subjects::runner_control(&name, rpc::CONTROL_PING),
            serde_json::to_vec(&ping).expect("ping").into(),
        )
        .await
        .map_err(|e| nats(e.to_string()))?;
    let mut replicas = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, pongs.next()).await {
        if let Ok(p) = serde_json::from_slice::<outpost_schemas::rpc::Pong>(&msg.payload) {
            if p.nonce == nonce {
                replicas.push(PingedReplica {
                    replica_id: p.replica_id,
                    rtt_ms: sent.elapsed().as_secs_f64() * 1000.0,
                });
            }
        }
    }
    Ok(Json(PingReply {
        runner: name,
        replicas,
    }))
}
