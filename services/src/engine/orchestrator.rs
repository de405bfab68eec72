//! The orchestrator: turns execution requests into step dispatches, and each
//! finished step into the next dispatch or the execution's end.
//!
//! It keeps no state between messages. What it must remember per execution
//! (the plan and the step in flight) is a [`Run`] in `OUTPOST_RUNS`, updated
//! by compare-and-set; every side effect is a publish with a dedup id, so
//! redoing a message after a crash repeats nothing.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use outpost_bus as bus;
use outpost_schemas::job::{TagSet, Target};
use outpost_schemas::records::DeadlineRecord;
use outpost_schemas::{subjects, Event, Header, StepWaiting};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::engine::plan::{self, NodePlan, Run, RunPlan};
use crate::engine::Handled;
use crate::engine::{deadline, jobref};
use crate::fleet::health;
use crate::store::bucket::{Bucket, Cas};
use crate::store::topology;
use crate::ServiceError;

/// Lanes of parallel handling; one execution's events share a lane, so a
/// replica handles them in stream order. Across replicas, compare-and-set
/// keeps transitions consistent.
const CONCURRENCY: usize = 32;
use outpost_schemas::rpc::{Claim, ABORTED_CLAIM};

mod children;

pub struct Orchestrator {
    js: jetstream::Context,
    client: async_nats::Client,
}

struct Ctx {
    js: jetstream::Context,
    client: async_nats::Client,
    runs: Bucket,
    claims: Bucket,
    tagsets: Bucket,
    deadlines: Bucket,
    secrets: Bucket,
    store: crate::store::Store,
    provenance: crate::engine::provenance::ProvenanceCheck,
    /// Which runners are live, for "who could take this step?".
    live: crate::fleet::live::LiveHeartbeats,
}

impl Orchestrator {
    pub fn new(client: async_nats::Client, js: jetstream::Context) -> Self {
        Orchestrator { js, client }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let ctx = Ctx {
            runs: Bucket::open(&self.js, subjects::RUNS_BUCKET).await?,
            claims: Bucket::open(&self.js, subjects::CLAIMS_BUCKET).await?,
            tagsets: Bucket::open(&self.js, subjects::TAGSETS_BUCKET).await?,
            deadlines: Bucket::open(&self.js, subjects::DEADLINES_BUCKET).await?,
            secrets: Bucket::open(&self.js, subjects::SECRETS_BUCKET).await?,
            store: crate::store::Store::open(&self.js).await?,
            provenance: crate::engine::provenance::ProvenanceCheck::new(self.js.clone()).await?,
            live: crate::fleet::live::LiveHeartbeats::start(self.js.clone(), shutdown.clone()),
            js: self.js,
            client: self.client,
        };
        let ctx = std::sync::Arc::new(ctx);
        let consumer =
            crate::engine::event_consumer(&ctx.js, subjects::ORCHESTRATOR_CONSUMER).await?;
        tracing::info!("orchestrator started");
        crate::engine::consume(
            consumer,
            shutdown,
            CONCURRENCY,
            crate::engine::event_execution,
            move |msg| {
                let ctx = ctx.clone();
                async move { handle(&ctx, msg).await }
            },
        )
        .await;
        tracing::info!("orchestrator stopped");
        Ok(())
    }
}

/// Aborts for an execution whose request is not planned yet are retried
/// this many times (about a minute) before being dropped.
const MAX_EARLY_ABORT_DELIVERIES: i64 = 60;

enum Outcome {
    Done,
    /// The event depends on one not handled yet; retry it shortly.
    NotYet,
    /// Not due yet (a retry's delay): hand it back until then.
    Later(Duration),
}

async fn handle(ctx: &Ctx, msg: jetstream::Message) {
    crate::engine::handle_event(
        subjects::ORCHESTRATOR_CONSUMER,
        &ctx.provenance,
        msg,
        |event, delivered| async move {
            Ok(match on_event(ctx, &event, delivered > 1).await? {
                Outcome::Done => Handled::Done,
                Outcome::NotYet if delivered < MAX_EARLY_ABORT_DELIVERIES => {
                    Handled::NotYet(Duration::from_secs(1))
                }
                Outcome::NotYet => Handled::Refuse(format!(
                    "{} for an execution that was never planned",
                    event.kind()
                )),
                Outcome::Later(wait) => Handled::NotYet(wait),
            })
        },
    )
    .await
}

/// `redelivered`: this message was delivered before, so an earlier attempt
/// may have changed the run and died before its side effects; redo them.
/// A first delivery of a stale event does nothing at all: re-publishing a
/// dispatch long after its dedup window would store it twice.
async fn on_event(ctx: &Ctx, event: &Event, redelivered: bool) -> Result<Outcome, ServiceError> {
    let key = subjects::execution_key(event.execution_id());
    match event {
        Event::ExecutionRequested(req) => {
            let globals = ctx
                .store
                .project(&req.project)
                .await
                .map_err(store_err)?
                .map(|p| p.globals())
                .unwrap_or_default();
            let mut planned = plan::plan_with(req, &globals);
            planned.nonce = Uuid::now_v7();
            if planned.node_run.is_some() {
                resolve_nodes(ctx, &mut planned).await?;
            }
            let run = match ctx.runs.raw().create(&key, encode(&planned)).await {
                Ok(_) => {
                    tracing::info!(execution_id = %req.execution_id, job = %planned.job_name, "execution planned");
                    planned
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match load(&ctx.runs, &key).await? {
                        Some(run) => run,
                        None => return Ok(Outcome::Done),
                    }
                }
                Err(e) => return Err(ServiceError::Nats(e.to_string())),
            };
            if let (Some(d), None) = (&run.deadline, &run.finished) {
                deadline::record(
                    &ctx.deadlines,
                    &DeadlineRecord {
                        execution_id: run.execution_id,
                        deadline: d.at,
                        timeout: d.timeout.clone(),
                        nonce: run.nonce,
                    },
                )
                .await?;
            }
            // A retry waits out its delay: the run is stored (and can be
            // aborted meanwhile); its request comes back when it is due.
            let not_before = req.retry.as_ref().and_then(|r| r.not_before);
            if let (Some(nb), None) = (not_before, &run.finished) {
                if let Ok(wait) = (nb - chrono::Utc::now()).to_std() {
                    tracing::debug!(execution_id = %req.execution_id, ?wait, "retry waits for its delay");
                    return Ok(Outcome::Later(wait));
                }
            }
            // Still on its first step: (re)dispatching it is what this event
            // is for, and its dedup id makes a repeat harmless.
            if run.current == 1 || run.finished.is_some() {
                effects(ctx, &run).await?;
            }
        }
        Event::StepFinished(f) => {
            let Some((run, changed)) =
                update(&ctx.runs, &key, |run| run.on_step_finished(f)).await?
            else {
                tracing::warn!(execution_id = %f.execution_id, step = f.step, "finished step of an unknown execution; ignoring");
                return Ok(Outcome::Done);
            };
            // A node run's end moves the run past its last step.
            let caused_current =
                run.finished.is_some() || run.current == plan::segment_end(&run, f.step) + 1;
            if changed || (redelivered && caused_current) {
                effects(ctx, &run).await?;
            }
        }
        Event::JobRefFinished(f) => {
            let Some((run, changed)) =
                update(&ctx.runs, &key, |run| run.on_jobref_finished(f)).await?
            else {
                return Ok(Outcome::Done);
            };
            let caused_current = run.finished.is_some()
                || run.current > f.step
                || (run.current == f.step && (run.recovering.is_some() || f.node.is_some()));
            if changed || (redelivered && caused_current) {
                effects(ctx, &run).await?;
            }
        }
        Event::AbortRequested(_) => return abort(ctx, &key, event, redelivered).await,
        _ => {}
    }
    Ok(Outcome::Done)
}

async fn abort(
    ctx: &Ctx,
    key: &str,
    event: &Event,
    redelivered: bool,
) -> Result<Outcome, ServiceError> {
    let Some(mut run) = load(&ctx.runs, key).await? else {
        // The request is not planned yet (both were in one batch).
        return Ok(Outcome::NotYet);
    };
    let cause = match event {
        Event::AbortRequested(a) => a.cause,
        _ => outpost_schemas::AbortCause::Requested,
    };
    loop {
        if run.finished.is_some() {
            if redelivered || run.abort_requested {
                effects(ctx, &run).await?;
            }
            return Ok(Outcome::Done);
        }
        let current = run.current;
        if run.current_step().jobref.is_some() && run.recovering.is_none() {
            // A job reference ends with its child: abort the child, and the
            // step (and this run) end when it reports.
            let Some((updated, _)) = update(&ctx.runs, key, |r| r.on_abort(false, cause)).await?
            else {
                return Ok(Outcome::Done);
            };
            if updated.current != current || updated.finished.is_some() {
                run = updated;
                continue;
            }
            let running = children::running(&updated);
            if running.is_empty() {
                // Not started yet: starting it sees the abort.
                effects(ctx, &updated).await?;
            }
            for child in running {
                children::abort_child(ctx, &updated, child, event).await?;
            }
            return Ok(Outcome::Done);
        }
        // Whoever creates the claim runs the step: if we win, no runner ever
        // will, and the run ends now.
        let claim = subjects::claim_key(run.execution_id, current);
        let (unclaimed, holder) = match ctx.claims.raw().create(&claim, ABORTED_CLAIM.into()).await
        {
            Ok(_) => (true, None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let owner = ctx
                    .claims
                    .get_bytes(&claim)
                    .await?
                    .map(|v| Claim::decode(&v).runner_id);
                // Our own earlier attempt counts as unclaimed.
                match owner {
                    Some(o) if o == ABORTED_CLAIM => (true, None),
                    other => (false, other),
                }
            }
            Err(e) => return Err(ServiceError::Nats(e.to_string())),
        };
        let Some((updated, _)) = update(&ctx.runs, key, |r| {
            r.on_abort(unclaimed && r.current == current, cause)
        })
        .await?
        else {
            return Ok(Outcome::Done);
        };
        if let Some(runner) = holder {
            ctx.client
                .publish(
                    subjects::abort(&runner, event.execution_id()),
                    bytes::Bytes::from_static(outpost_schemas::rpc::ABORT_NOTICE),
                )
                .await
                .map_err(|e| ServiceError::Nats(e.to_string()))?;
        }
        if updated.finished.is_none() && updated.current != current {
            // The run moved on meanwhile: abort the step it is on now.
            run = updated;
            continue;
        }
        if updated.finished.is_some() {
            effects(ctx, &updated).await?;
        }
        return Ok(Outcome::Done);
    }
}

/// Picks the nodes of a node job from the inventory (the project's nodes and
/// those runners report), ranks them, and routes the job to the runner that
/// serves them: the job's runnerSelector, else the runner that reported the
/// nodes, else (project nodes) the local runner.
async fn resolve_nodes(ctx: &Ctx, run: &mut Run) -> Result<(), ServiceError> {
    use crate::store::NodeSource;
    let nr = run.node_run.clone().expect("a node job");
    let filter = match outpost_schemas::node_filter::parse(&nr.filter) {
        Ok(f) => f,
        Err(e) => {
            run.refuse(format!("nodefilters: {e}"));
            return Ok(());
        }
    };
    let reports = health::node_reports(&ctx.js)
        .await
        .map_err(ServiceError::Nats)?;
    // A child of a reference from another project selects from its
    // parent's nodes unless `childNodes`, and `nodeIntersect` keeps only
    // the parent's.
    let parent = run.parent.as_ref();
    let project = parent
        .and_then(|p| p.node_project.clone())
        .unwrap_or_else(|| run.project.clone());
    let intersect = parent.and_then(|p| p.intersect.as_ref());
    let inventory = ctx
        .store
        .nodes(&project, reports)
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let selected: Vec<&crate::store::NodeView> = inventory
        .iter()
        .filter(|v| filter.selects(&v.node, nr.dispatch.exclude_precedence))
        .filter(|v| intersect.is_none_or(|names| names.contains(&v.node.nodename)))
        .collect();
    // Results and state are keyed by node name: two sources naming one node
    // differently would be ambiguous.
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = selected
        .iter()
        .find(|v| !seen.insert(v.node.nodename.as_str()))
    {
        run.refuse(format!(
            "node `{}` is defined by more than one node source; rename one",
            dup.node.nodename
        ));
        return Ok(());
    }
    let mut nodes: Vec<&outpost_schemas::node::Node> = selected.iter().map(|v| &v.node).collect();
    outpost_schemas::node_filter::rank(
        &mut nodes,
        nr.dispatch.rank_attribute.as_deref(),
        nr.dispatch.rank_order == outpost_schemas::job::RankOrder::Ascending,
    );
    let explicit = run
        .steps
        .first()
        .map(|s| s.target.clone())
        .filter(|t| *t != Target::Local);
    let target = match explicit {
        Some(t) => t,
        None => {
            let mut sources: Vec<&NodeSource> = selected.iter().map(|v| &v.source).collect();
            sources.dedup();
            sources.sort_by_key(|s| format!("{s:?}"));
            sources.dedup();
            match sources.as_slice() {
                [] | [NodeSource::Project] => Target::Local,
                [NodeSource::Runner { runner_id }] => Target::Tags(TagSet::runner(runner_id)),
                many => {
                    let names: Vec<String> = many
                        .iter()
                        .map(|s| match s {
                            NodeSource::Project => "the project's node source".to_string(),
                            NodeSource::Runner { runner_id } => format!("runner {runner_id}"),
                        })
                        .collect();
                    run.refuse(format!(
                        "the selected nodes come from {}; one execution reaches its nodes through one runner, so narrow the filter to one source",
                        names.join(" and ")
                    ));
                    return Ok(());
                }
            }
        }
    };
    run.route_all(target);
    run.set_nodes(nodes.into_iter().cloned().collect());
    Ok(())
}

/// Makes the world match the run: its end published (and reported to its
/// parent), its current job reference's child started, or its current
/// step dispatched. Idempotent through dedup ids.
async fn effects(ctx: &Ctx, run: &Run) -> Result<(), ServiceError> {
    let chosen;
    let run = if run.wants_retry() && run.retry.as_ref().is_some_and(|r| r.next.is_none()) {
        // The retry's id is chosen once, before the end is published, so
        // that the end can name it and a repeat cannot start a second one.
        let next = Uuid::now_v7();
        let declined = match ctx.store.job(run.job_id).await.map_err(store_err)? {
            None => Some("the job was deleted".to_string()),
            Some(rec) if !rec.job.execution_enabled => {
                Some("the job has executionEnabled: false".to_string())
            }
            Some(_) => None,
        };
        if let Some(why) = &declined {
            tracing::info!(execution_id = %run.execution_id, reason = %why, "not retrying");
        }
        let key = subjects::execution_key(run.execution_id);
        let updated = update(&ctx.runs, &key, |r| match r.retry.as_mut() {
            Some(retry) if retry.next.is_none() && retry.declined.is_none() => {
                match &declined {
                    Some(why) => retry.declined = Some(why.clone()),
                    None => retry.next = Some(next),
                }
                true
            }
            _ => false,
        })
        .await?;
        match updated {
            Some((r, _)) => {
                chosen = r;
                &chosen
            }
            None => run,
        }
    } else {
        run
    };
    if let Some(fin) = run.finished_event() {
        tracing::info!(execution_id = %run.execution_id, outcome = ?fin.outcome, "execution finished");
        let to_parent = run
            .parent
            .as_ref()
            .map(|p| jobref::child_finished(run, p, &fin));
        let event = Event::ExecutionFinished(fin);
        let id = format!("{}.{}", event.dedup_id(), run.nonce.simple());
        bus::publish_event_as(&ctx.js, &event, subjects::CONTROL_PLANE_SOURCE, &id).await?;
        if run.deadline.is_some() {
            deadline::forget(&ctx.deadlines, run.execution_id).await?;
        }
        if let Some(next) = run.retry.as_ref().and_then(|r| r.next) {
            request_retry(ctx, run, next).await?;
        }
        if let Some(finished) = to_parent {
            publish_control(ctx, &Event::JobRefFinished(finished)).await?;
        }
        return Ok(());
    }
    if run.current_step().control.is_some() {
        return control_step(ctx, run).await;
    }
    if run.current_step().jobref.is_some() && run.recovering.is_none() {
        if run.node_step_ref() {
            return children::start_node_children(ctx, run).await;
        }
        return children::start_child(ctx, run).await;
    }
    let dispatch = run.dispatch();
    let plugins = dispatch.plugins();
    let lane = if plugins.is_empty() {
        if let Target::Tags(set) = &dispatch.target {
            topology::ensure_tag_set(&ctx.js, ctx.tagsets.raw(), set).await?
        }
        None
    } else {
        Some(topology::ensure_lane(&ctx.js, ctx.tagsets.raw(), &plugins, &dispatch.target).await?)
    };
    let token = dispatch.target.token();
    let subject = subjects::dispatch_on(lane.as_deref(), &token, run.execution_id, run.current);
    let msg_id = format!("{}.{}.dispatch", run.execution_id.simple(), run.current);
    let duplicate = bus::publish_json(&ctx.js, &subject, &msg_id, &dispatch).await?;
    let target = dispatch.target.clone();
    let event = Event::StepDispatched(dispatch);
    let id = format!("{}.{}", event.dedup_id(), run.nonce.simple());
    bus::publish_event_as(&ctx.js, &event, subjects::CONTROL_PLANE_SOURCE, &id).await?;
    if !duplicate {
        tracing::debug!(execution_id = %run.execution_id, step = run.current, target = %token, "step dispatched");
        // Not known yet (the view is still loading): say nothing rather
        // than claim the step waits.
        let waiting = ctx
            .live
            .why_waiting(&target, &plugins, Duration::from_secs(5))
            .await;
        if let Some(reason) = waiting.flatten() {
            tracing::info!(execution_id = %run.execution_id, step = run.current, reason, "step waits for a runner");
            bus::publish_event(
                &ctx.js,
                &Event::StepWaiting(StepWaiting {
                    header: Header::now(),
                    execution_id: run.execution_id,
                    step: run.current,
                    reason,
                }),
            )
            .await?;
        }
    }
    Ok(())
}

fn encode(run: &Run) -> bytes::Bytes {
    serde_json::to_vec(run).expect("run serialises").into()
}

async fn load(runs: &Bucket, key: &str) -> Result<Option<Run>, ServiceError> {
    Ok(runs.get(key).await?.map(|(run, _)| run))
}

/// Applies `change` to the stored run with compare-and-set. Returns the run
/// and whether `change` changed it; none if there is no run.
async fn update(
    runs: &Bucket,
    key: &str,
    change: impl Fn(&mut Run) -> bool,
) -> Result<Option<(Run, bool)>, ServiceError> {
    runs.modify(key, |run: Option<Run>| {
        Ok(match run {
            None => Cas::Keep(None),
            Some(mut run) => {
                if change(&mut run) {
                    Cas::Write(run.clone(), Some((run, true)))
                } else {
                    Cas::Keep(Some((run, false)))
                }
            }
        })
    })
    .await
}

/// Carries out a step that needs no runner (`flow-control`, `export-var`):
/// records what it sets, then publishes its end, which moves the run on as
/// any step's end does.
async fn control_step(ctx: &Ctx, run: &Run) -> Result<(), ServiceError> {
    let key = subjects::execution_key(run.execution_id);
    if let Some(plan::ControlStep::ExportVar { key: name, value }) = &run.current_step().control {
        // A workflow step: `${data.KEY@NODE}` and `${data.KEY*}` reach
        // node captures; a plain `${data.KEY}` the global view only.
        let value = outpost_schemas::job::data_refs::expand(value, &run.exports, None);
        let step = run.current;
        update(&ctx.runs, &key, |r| {
            r.current == step && r.on_export(name, &value)
        })
        .await?;
        tracing::debug!(execution_id = %run.execution_id, step, variable = %name, "variable exported");
    }
    let finished = run.control_finished().expect("a control step");
    let id = format!(
        "{}.{}.control.{}",
        run.execution_id.simple(),
        run.current,
        run.nonce.simple()
    );
    bus::publish_event_as(
        &ctx.js,
        &Event::StepFinished(finished),
        subjects::CONTROL_PLANE_SOURCE,
        &id,
    )
    .await?;
    Ok(())
}

/// Requests the execution that retries `run`: the job as it is now, the
/// same option values (the secure ones too), after the job's retry delay.
async fn request_retry(ctx: &Ctx, run: &Run, next: Uuid) -> Result<(), ServiceError> {
    let Some(rec) = ctx.store.job(run.job_id).await.map_err(store_err)? else {
        // Deleted between choosing the retry and requesting it.
        tracing::warn!(execution_id = %run.execution_id, retry_execution_id = %next, "the job was deleted; the chosen retry is not requested");
        return Ok(());
    };
    let retry = run.retry.as_ref().expect("a retried run has a policy");
    let not_before = retry
        .delay_secs
        .filter(|s| *s > 0)
        .map(|s| chrono::Utc::now() + chrono::Duration::seconds(s as i64));
    let attempt = outpost_schemas::RetryAttempt {
        attempt: retry.attempt() + 1,
        previous_execution_id: run.execution_id,
        original_execution_id: retry
            .of
            .as_ref()
            .map_or(run.execution_id, |o| o.original_execution_id),
        not_before,
    };
    if let Some(sealed) = ctx
        .secrets
        .get_bytes(&subjects::execution_key(run.execution_id))
        .await?
    {
        ctx.secrets
            .raw()
            .put(subjects::execution_key(next), sealed)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    }
    // Counted with the job's running executions, so that a run asked for
    // meanwhile sees it; a retry itself is not refused, as its attempt
    // holds the place the failed one leaves.
    ctx.store
        .admit(run.job_id, None, next)
        .await
        .map_err(store_err)?;
    let event = Event::ExecutionRequested(outpost_schemas::ExecutionRequested {
        header: Header::now(),
        execution_id: next,
        project: run.project.clone(),
        job_id: run.job_id,
        job: rec.job,
        options: run.options.clone(),
        requested_by: run.requested_by.clone(),
        parent: None,
        retry: Some(attempt),
    });
    let id = format!("{}.retry.{}", run.execution_id.simple(), run.nonce.simple());
    let duplicate =
        bus::publish_event_as(&ctx.js, &event, subjects::CONTROL_PLANE_SOURCE, &id).await?;
    if !duplicate {
        tracing::info!(execution_id = %run.execution_id, retry_execution_id = %next, attempt = retry.attempt() + 1, "execution failed; retrying it");
    }
    Ok(())
}

fn store_err(e: crate::store::StoreError) -> ServiceError {
    match e {
        crate::store::StoreError::Service(e) => e,
        other => ServiceError::Invalid(other.to_string()),
    }
}

/// Publishes a control-plane event under its logical dedup id, so that a
/// repeat after a crash is stored once.
async fn publish_control(ctx: &Ctx, event: &Event) -> Result<(), ServiceError> {
    bus::publish_event_as(
        &ctx.js,
        event,
        subjects::CONTROL_PLANE_SOURCE,
        &event.dedup_id(),
    )
    .await?;
    Ok(())
}
