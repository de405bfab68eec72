//! `/runners`: live runners and their health; enrolment, revocation, rotation, drain and ping.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use outpost_schemas::{rpc, subjects};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::fleet::health;
use crate::security::auth::Principal;
use crate::ServiceError;

use super::error::{registry_error, ApiError, ApiResult};
use super::AppState;

/// `GET /runners`: one entry per replica (its latest heartbeat, `live` and
/// `health`), and one per enrolled runner that never checked in (`new`).
/// `runner_health` is the runner's, from its healthiest replica.
pub(super) async fn list_runners(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<serde_json::Value>>> {
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
    let mut out: Vec<serde_json::Value> = hbs
        .into_iter()
        .map(|h| {
            let health = health::replica_health(&h, now, s.health);
            let runner = health::runner_health(by_runner[&h.runner_id].iter().copied());
            let live = health::is_live(&h);
            let mut v = serde_json::to_value(&h).expect("heartbeat serialises");
            v["live"] = json!(live);
            v["health"] = json!(health);
            v["runner_health"] = json!(runner);
            v
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
            out.push(json!({
                "runner_id": rec.name,
                "tags": rec.tags,
                "live": false,
                "health": health,
                "runner_health": health,
                "started": rec.started,
            }));
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
pub(super) struct EnrolRequest {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /runners`: enrols a runner; the bundle in the reply is the only
/// copy of its credentials.
pub(super) async fn enrol_runner(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<EnrolRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (rec, bundle) = s
        .registry
        .enrol(&req.name, &req.tags, &who.name)
        .await
        .map_err(registry_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"runner": rec, "bundle": crate::fleet::registry::bundle_text(&bundle)})),
    ))
}

pub(super) async fn list_enrolled(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<crate::fleet::registry::RunnerRecord>>> {
    Ok(Json(s.registry.list().await.map_err(registry_error)?))
}

pub(super) async fn revoke_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ended, cut) = s.registry.revoke(&name).await.map_err(registry_error)?;
    Ok(Json(json!({
        "runner": name,
        "revoked": true,
        "steps_ended": ended,
        // False when NATS is not in operator mode: the registry refuses the
        // runner's claims, but nothing cut its connection.
        "connections_cut": cut,
    })))
}

pub(super) async fn rotate_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let bundle = s.registry.rotate(&name).await.map_err(registry_error)?;
    Ok(Json(
        json!({"runner": name, "bundle": crate::fleet::registry::bundle_text(&bundle)}),
    ))
}

/// `POST /runners/{name}/drain`: every replica stops taking steps, lets its
/// running ones finish, and stops (then shows `down`).
pub(super) async fn drain_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
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
    Ok(Json(
        json!({"runner": name, "draining": true, "live_replicas": live}),
    ))
}

/// `POST /runners/{name}/ping`: a round trip through every replica that
/// answers within 2 s.
pub(super) async fn ping_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
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
                replicas.push(json!({
                    "replica_id": p.replica_id,
                    "rtt_ms": sent.elapsed().as_secs_f64() * 1000.0,
                }));
            }
        }
    }
    Ok(Json(json!({"runner": name, "replicas": replicas})))
}
