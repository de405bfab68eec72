//! The orchestrator's side of job references: starting a reference's
//! child execution (one, or one per node for a `nodeStep: true`
//! reference in a node job) and passing an abort on to children.

use outpost_bus as bus;
use outpost_schemas::job::JobRef;
use outpost_schemas::node::Node;
use outpost_schemas::records::JobRecord;
use outpost_schemas::{subjects, Event, Header};
use uuid::Uuid;

use super::{publish_control, update, Ctx};
use crate::engine::jobref;
use crate::engine::plan::{NodePlan, NodeRefWork, Run, RunPlan};
use crate::ServiceError;

/// The children of the current step still running, to abort.
pub(super) fn running(run: &Run) -> Vec<Uuid> {
    if run.node_step_ref() {
        return run
            .node_children
            .get(&run.current)
            .map(|kids| {
                kids.iter()
                    .filter(|k| k.outcome.is_none())
                    .filter_map(|k| k.execution_id)
                    .collect()
            })
            .unwrap_or_default();
    }
    run.children
        .get(&run.current)
        .copied()
        .into_iter()
        .collect()
}

/// The current step's reference, and the job it names, looked up as
/// Rundeck does.
async fn referenced_job(ctx: &Ctx, run: &Run) -> Result<(JobRef, Option<JobRecord>), ServiceError> {
    let jr = run
        .current_step()
        .jobref
        .clone()
        .expect("a job reference step");
    let found = match jr.by_name() {
        true => {
            let project = jr.project.clone().unwrap_or_else(|| run.project.clone());
            let full = jr.full_name().expect("a by-name reference has a name");
            ctx.store.job_by_name(&project, &full).await
        }
        false => ctx.store.job(jr.uuid.expect("by uuid")).await,
    }
    .map_err(|e| ServiceError::Nats(e.to_string()))?;
    Ok((jr, found))
}

/// Starts the children a `nodeStep: true` reference may start now, in
/// node order and `threadcount` at a time, or ends the step once every
/// child that will run is over.
pub(super) async fn start_node_children(ctx: &Ctx, run: &Run) -> Result<(), ServiceError> {
    let step = run.current;
    let nodes = match run.node_ref_work() {
        NodeRefWork::Finish(end) => {
            tracing::info!(execution_id = %run.execution_id, step, outcome = ?end.outcome, "node-step job reference ended");
            return publish_control(ctx, &Event::JobRefFinished(end)).await;
        }
        NodeRefWork::Start(nodes) => nodes,
    };
    // A crash between recording a child and requesting it leaves it
    // recorded: request it again, while the dedup window still holds the
    // first request.
    let recent = chrono::Utc::now() - chrono::Duration::minutes(5);
    let unsure: Vec<(Node, Uuid)> = run
        .node_children
        .get(&step)
        .into_iter()
        .flatten()
        .filter(|k| k.outcome.is_none() && k.recorded_at.is_some_and(|t| t > recent))
        .filter_map(|k| {
            let node = run
                .node_run
                .as_ref()?
                .nodes
                .iter()
                .find(|n| n.nodename == k.node)?;
            Some((node.clone(), k.execution_id?))
        })
        .collect();
    if nodes.is_empty() && unsure.is_empty() {
        return Ok(());
    }
    let (jr, found) = referenced_job(ctx, run).await?;
    let key = subjects::execution_key(run.execution_id);
    for (node, child) in unsure {
        if let Ok(request) = jobref::child_request(run, &jr, found.as_ref(), Some(&node)) {
            request_child(ctx, run, request, child).await?;
        }
    }
    for node in nodes {
        let request = match jobref::child_request(run, &jr, found.as_ref(), Some(&node)) {
            Ok(request) => request,
            Err(finished) => {
                tracing::info!(execution_id = %run.execution_id, step, node = %node.nodename, reason = ?finished.failure, "job reference ends without a child");
                publish_control(ctx, &Event::JobRefFinished(*finished)).await?;
                continue;
            }
        };
        let proposed = request.execution_id;
        let Some((updated, recorded)) = update(&ctx.runs, &key, |r| {
            r.record_node_child(step, &node.nodename, proposed)
        })
        .await?
        else {
            return Ok(());
        };
        if !recorded {
            // Another attempt started it, or the step moved on.
            continue;
        }
        request_child(ctx, &updated, request, proposed).await?;
    }
    Ok(())
}

/// Publishes a recorded child's request and its `JobRefStarted`; passes
/// on an abort that came meanwhile.
async fn request_child(
    ctx: &Ctx,
    run: &Run,
    mut request: outpost_schemas::ExecutionRequested,
    child: Uuid,
) -> Result<(), ServiceError> {
    let step = run.current;
    request.execution_id = child;
    let node = request.parent.as_ref().and_then(|p| p.node.clone());
    let started = Event::JobRefStarted(outpost_schemas::JobRefStarted {
        header: Header::now(),
        execution_id: run.execution_id,
        step,
        child_execution_id: child,
        job_id: request.job_id,
        job_name: request.job.full_name(),
        node: node.clone(),
    });
    let event = Event::ExecutionRequested(request);
    bus::publish_event_as(
        &ctx.js,
        &event,
        subjects::CONTROL_PLANE_SOURCE,
        &format!("{child}.requested"),
    )
    .await?;
    publish_control(ctx, &started).await?;
    tracing::info!(execution_id = %run.execution_id, step, node = node.as_deref().unwrap_or(""), child_execution_id = %child, "job reference started its child");
    if run.abort_requested {
        abort_child(ctx, run, child, &started).await?;
    }
    Ok(())
}

/// Starts the child execution of the run's current job reference step, or
/// ends the step at once when no child can start.
pub(super) async fn start_child(ctx: &Ctx, run: &Run) -> Result<(), ServiceError> {
    let step = run.current;
    let (jr, found) = referenced_job(ctx, run).await?;
    let request = match jobref::child_request(run, &jr, found.as_ref(), None) {
        Ok(request) => request,
        Err(finished) => {
            tracing::info!(execution_id = %run.execution_id, step, reason = ?finished.failure, "job reference ends without a child");
            return publish_control(ctx, &Event::JobRefFinished(*finished)).await;
        }
    };
    // The child's id is the first one recorded: a redelivery starts the
    // same child, not a second one.
    let key = subjects::execution_key(run.execution_id);
    let proposed = request.execution_id;
    let Some((updated, _)) = update(&ctx.runs, &key, |r| {
        if r.finished.is_some()
            || r.current != step
            || r.children.contains_key(&step)
            || r.abort_requested
        {
            return false;
        }
        r.children.insert(step, proposed);
        true
    })
    .await?
    else {
        return Ok(());
    };
    if updated.finished.is_some() || updated.current != step {
        return Ok(());
    }
    let Some(child) = updated.children.get(&step).copied() else {
        // Aborted before its child started: the step ends here.
        return publish_control(ctx, &Event::JobRefFinished(jobref::aborted_unstarted(run))).await;
    };
    request_child(ctx, &updated, request, child).await
}

pub(super) async fn abort_child(
    ctx: &Ctx,
    parent: &Run,
    child: Uuid,
    cause: &Event,
) -> Result<(), ServiceError> {
    let requested_by = match cause {
        Event::AbortRequested(a) => a.requested_by.clone(),
        _ => parent.requested_by.clone(),
    };
    let abort = Event::AbortRequested(outpost_schemas::AbortRequested {
        header: Header::now(),
        execution_id: child,
        requested_by,
        // The child itself did not time out: it is stopped, and its
        // parent's step with it.
        cause: outpost_schemas::AbortCause::Requested,
    });
    bus::publish_event_as(
        &ctx.js,
        &abort,
        subjects::CONTROL_PLANE_SOURCE,
        &format!("{child}.abort.{}", parent.execution_id.simple()),
    )
    .await?;
    tracing::info!(execution_id = %parent.execution_id, child_execution_id = %child, "abort passed on to the child");
    Ok(())
}
