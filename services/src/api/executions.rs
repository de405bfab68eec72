//! `/execution/{id}`: state, output pages and their live stream, abort; and each project's execution list.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::StreamExt;
use outpost_bus as bus;
use outpost_schemas::state::ExecutionState;
use outpost_schemas::{subjects, AbortRequested, Event, Header, LogChunk};
use serde::Deserialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::contract::{
    AbortOutcome, AbortReply, AbortStatus, Execution, ExecutionList, ExecutionRef, OutputEntry,
    OutputPage,
};
use crate::security::auth::Principal;
use crate::ServiceError;

use super::error::{ApiError, ApiResult};
use super::{parse_id, AppState, DEFAULT_MAX_ENTRIES, MAX_ENTRIES_PER_PAGE};

/// The execution's projected state. Right after a run is accepted the
/// projector may not have folded the request yet; then the request event
/// itself is folded here, so a client reads its own write.
pub(super) async fn execution_state(s: &AppState, id: Uuid) -> ApiResult<ExecutionState> {
    if let Some(st) = s.store.execution(id).await? {
        return Ok(st);
    }
    let stream =
        s.js.get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let subject = subjects::event("execution_requested", id, "*");
    let not_found = || ApiError::not_found(format!("no execution {id}"));
    let msg = match stream
        .direct_get_next_for_subject(subject.as_str(), None)
        .await
    {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::DirectGetErrorKind::NotFound
            ) =>
        {
            return Err(not_found())
        }
        Err(e) => return Err(ServiceError::Nats(e.to_string()).into()),
    };
    let event: Event = serde_json::from_slice(&msg.payload)
        .map_err(|e| ServiceError::Corrupt(format!("request of {id}: {e}")))?;
    match crate::engine::projection::fold(None, &event) {
        crate::engine::projection::Folded::Changed(st) => Ok(*st),
        _ => Err(not_found()),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// At most this many (1 to 1000; 20 by default).
    max: Option<usize>,
}

/// A project's newest executions, newest first.
#[utoipa::path(get, path = "/api/v1/project/{project}/executions", tag = "executions",
    params(("project" = String, Path), ListQuery),
    responses((status = 200, body = ExecutionList),
        (status = 503, description = "This replica's execution index is still loading", body = crate::contract::ErrorBody)))]
pub(super) async fn list_executions(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ExecutionList>> {
    s.store.require_project(&project).await?;
    let max = q.max.unwrap_or(20).clamp(1, 1000);
    let ids = s
        .executions
        .newest(&project, max, Duration::from_secs(5))
        .await
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "api.error.index-catching-up",
                "the execution index is still loading; try again in a moment",
            )
        })?;
    let executions = s.store.executions(&ids).await?;
    Ok(Json(ExecutionList {
        executions: executions.into_iter().map(Execution::from).collect(),
    }))
}

/// An execution and each of its steps.
#[utoipa::path(get, path = "/api/v1/execution/{id}", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution)))]
pub(super) async fn get_execution(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Execution>> {
    let id = parse_id(&id)?;
    execution_state(&s, id).await.map(|st| Json(st.into()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct OutputQuery {
    /// Continue after this point: a page's `offset` (0, the default, is the start).
    offset: Option<String>,
    /// At most this many entries (1 to 10,000; 5,000 by default).
    maxlines: Option<usize>,
}

pub(super) fn parse_offset(offset: Option<&str>) -> ApiResult<u64> {
    match offset {
        None | Some("") => Ok(0),
        Some(o) => o
            .parse()
            .map_err(|_| ApiError::invalid(format!("offset `{o}` is not a number"))),
    }
}

/// A page of an execution's output, oldest first.
#[utoipa::path(get, path = "/api/v1/execution/{id}/output", tag = "executions",
    params(("id" = Uuid, Path), OutputQuery),
    responses((status = 200, body = OutputPage)))]
pub(super) async fn get_output(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<Json<OutputPage>> {
    let id = parse_id(&id)?;
    let offset = parse_offset(q.offset.as_deref())?;
    let max = q
        .maxlines
        .unwrap_or(DEFAULT_MAX_ENTRIES)
        .clamp(1, MAX_ENTRIES_PER_PAGE);
    Ok(Json(output_page(&s, id, offset, max).await?))
}

/// Reads whole chunks after stream sequence `offset` until `max` entries or
/// the end of the execution's log.
pub(super) async fn output_page(
    s: &AppState,
    id: Uuid,
    mut offset: u64,
    max: usize,
) -> ApiResult<OutputPage> {
    // State first: if it is terminal now, every chunk is already stored,
    // because runners publish a step's finished event after its last chunk.
    let state = execution_state(s, id).await?;
    let stream =
        s.js.get_stream_no_info(subjects::LOGS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let filter = subjects::logs_of(id);
    let mut entries = Vec::new();
    let mut at_end = false;
    // A chunk a runner sent again after the streams' dedup window (its ack
    // was lost in a long outage) is stored twice, the copy after the
    // original. Chunks are numbered per step and runner: show each number
    // once, remembering across pages through the chunk at `offset`.
    let mut shown: BTreeMap<(u32, String), u64> = BTreeMap::new();
    if offset > 0 {
        if let Ok(prev) = stream.direct_get(offset).await {
            if let Ok(c) = serde_json::from_slice::<LogChunk>(&prev.payload) {
                if c.execution_id == id {
                    shown.insert((c.step, c.runner_id), c.seq);
                }
            }
        }
    }
    while entries.len() < max {
        match stream
            .direct_get_next_for_subject(filter.as_str(), Some(offset.saturating_add(1)))
            .await
        {
            Ok(msg) => {
                offset = msg.sequence;
                match serde_json::from_slice::<LogChunk>(&msg.payload) {
                    Ok(chunk) if !from_claimant(s, &state, &chunk, &msg.subject).await? => {
                        tracing::warn!(execution_id = %id, step = chunk.step, subject = %msg.subject, "ignoring log chunk from a runner that does not hold the step's claim");
                    }
                    Ok(chunk)
                        if shown
                            .get(&(chunk.step, chunk.runner_id.clone()))
                            .is_some_and(|&seen| chunk.seq <= seen) =>
                    {
                        tracing::debug!(execution_id = %id, step = chunk.step, seq = chunk.seq, "skipping a repeated log chunk");
                    }
                    Ok(chunk) => {
                        shown.insert((chunk.step, chunk.runner_id.clone()), chunk.seq);
                        entries.extend(chunk.entries.into_iter().map(|e| OutputEntry {
                            time: e.time.format("%H:%M:%S").to_string(),
                            absolute_time: e.time,
                            level: e.level,
                            log: e.log,
                            stepctx: chunk.step.to_string(),
                            runner: chunk.runner_id.clone(),
                            stream: format!("{:?}", e.stream).to_lowercase(),
                            node: e.node,
                            meta: e.meta,
                        }));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, execution_id = %id, seq = offset, "skipping malformed log chunk")
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::stream::DirectGetErrorKind::NotFound
                ) =>
            {
                at_end = true;
                break;
            }
            Err(e) => return Err(ServiceError::Nats(e.to_string()).into()),
        }
    }
    let exec_completed = state.status.is_terminal();
    Ok(OutputPage {
        id,
        offset: offset.to_string(),
        completed: exec_completed && at_end,
        exec_completed,
        exec_state: format!("{:?}", state.status).to_lowercase(),
        entries,
    })
}

/// Whether a log chunk was published by the runner holding its step's
/// claim: NATS permissions fix the runner id in the subject, and any runner
/// may publish logs under its own id for any execution.
pub(super) async fn from_claimant(
    s: &AppState,
    state: &ExecutionState,
    chunk: &LogChunk,
    subject: &str,
) -> ApiResult<bool> {
    let sender = subject.rsplit('.').next().unwrap_or_default();
    // A node job's whole workflow runs under the claim of its one dispatch.
    let step = if state.node_dispatch { 1 } else { chunk.step };
    // Cannot check now (the read already rode out transient errors): the
    // page fails, rather than show output nobody vouched for.
    let holder = s
        .grants
        .holder(state.id, step)
        .await
        .map_err(ApiError::from)?;
    Ok(holder.is_some_and(|h| h == sender))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Start after this point: a page's `offset` (0, the default, is the start).
    offset: Option<String>,
}

/// Server-sent events: `output` events carry [`OutputPage`]s as they come,
/// then one `end` event carries the final execution state.
#[utoipa::path(get, path = "/api/v1/execution/{id}/output/stream", tag = "executions",
    params(("id" = Uuid, Path), StreamQuery),
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-sent events: `output` (data: an OutputPage) as output arrives; then one `end` (data: the final Execution); or `error` (data: the message)")))]
pub(super) async fn stream_output(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let offset = parse_offset(q.offset.as_deref())?;
    // Fail fast on an unknown execution rather than streaming nothing.
    output_page(&s, id, offset, 1).await?;
    let (tx, rx) = mpsc::channel::<SseEvent>(16);
    tokio::spawn(follow(s, id, offset, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

pub(super) async fn follow(s: AppState, id: Uuid, mut offset: u64, tx: mpsc::Sender<SseEvent>) {
    // Subscribe before reading, so nothing published in between is missed:
    // every log chunk and every state change wakes us.
    let mut logs = match s.client.subscribe(subjects::logs_of(id)).await {
        Ok(sub) => sub,
        Err(_) => return,
    };
    let mut changes = match s
        .store
        .executions_bucket()
        .watch(subjects::execution_key(id))
        .await
    {
        Ok(w) => w,
        Err(_) => return,
    };
    loop {
        let page = match output_page(&s, id, offset, DEFAULT_MAX_ENTRIES).await {
            Ok(p) => p,
            Err(err) => {
                let _ = tx
                    .send(SseEvent::default().event("error").data(err.message))
                    .await;
                return;
            }
        };
        offset = page.offset.parse().unwrap_or(offset);
        let completed = page.completed;
        let more = page.entries.len() >= DEFAULT_MAX_ENTRIES;
        if !page.entries.is_empty() {
            let data = serde_json::to_string(&page).expect("page serialises");
            if tx
                .send(SseEvent::default().event("output").data(data))
                .await
                .is_err()
            {
                return;
            }
        }
        if completed {
            if let Ok(state) = execution_state(&s, id).await {
                let data =
                    serde_json::to_string(&Execution::from(state)).expect("state serialises");
                let _ = tx.send(SseEvent::default().event("end").data(data)).await;
            }
            return;
        }
        if more {
            continue;
        }
        // The timeout is a safety net against a missed wake-up, not the cadence.
        tokio::select! {
            _ = logs.next() => {}
            _ = changes.next() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tx.closed() => return,
            _ = s.shutdown.cancelled() => return,
        }
    }
}

/// Aborts an execution: its running steps are ended, the rest skipped.
#[utoipa::path(post, path = "/api/v1/execution/{id}/abort", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = AbortReply)))]
pub(super) async fn abort_execution(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<AbortReply>> {
    let id = parse_id(&id)?;
    let state = execution_state(&s, id).await?;
    let execution = ExecutionRef {
        id,
        status: state.status,
    };
    if state.status.is_terminal() {
        return Ok(Json(AbortReply {
            abort: AbortOutcome {
                status: AbortStatus::Failed,
                reason: Some(format!("execution is already {:?}", state.status).to_lowercase()),
            },
            execution,
        }));
    }
    bus::publish_event(
        &s.js,
        &Event::AbortRequested(AbortRequested {
            header: Header::now(),
            execution_id: id,
            requested_by: who.name.clone(),
            cause: outpost_schemas::AbortCause::Requested,
        }),
    )
    .await?;
    tracing::info!(execution_id = %id, "abort requested");
    Ok(Json(AbortReply {
        abort: AbortOutcome {
            status: AbortStatus::Pending,
            reason: None,
        },
        execution,
    }))
}
