//! The orchestrator: turns execution requests into step dispatches, and each
//! finished step into the next dispatch or the execution's end.
//!
//! It keeps no state between messages. What it must remember per execution
//! (the plan and the step in flight) is a [`Run`] in `OUTPOST_RUNS`, updated
//! by compare-and-set; every side effect is a publish with a dedup id, so
//! redoing a message after a crash repeats nothing.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, AckKind};
use outpost_runner::bus;
use outpost_schemas::job::Target;
use outpost_schemas::{subjects, Event, Header, StepWaiting};
use tokio_util::sync::CancellationToken;

use crate::plan::{self, Run};
use crate::{fleet, topology, ServiceError};

/// Messages handled at once; transitions of one execution are serialised by
/// compare-and-set, not by this limit.
const CONCURRENCY: usize = 32;
/// Claim owner recorded when an abort beats every runner to a step.
pub const ABORTED_CLAIM: &str = "_aborted";

pub struct Orchestrator {
    js: jetstream::Context,
    client: async_nats::Client,
}

struct Ctx {
    js: jetstream::Context,
    client: async_nats::Client,
    runs: kv::Store,
    claims: kv::Store,
    tagsets: kv::Store,
}

impl Orchestrator {
    pub fn new(client: async_nats::Client, js: jetstream::Context) -> Self {
        Orchestrator { js, client }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let ctx = Ctx {
            runs: crate::bucket(&self.js, subjects::RUNS_BUCKET).await?,
            claims: crate::bucket(&self.js, subjects::CLAIMS_BUCKET).await?,
            tagsets: crate::bucket(&self.js, subjects::TAGSETS_BUCKET).await?,
            js: self.js,
            client: self.client,
        };
        let consumer: jetstream::consumer::Consumer<pull::Config> = ctx
            .js
            .get_consumer_from_stream(subjects::ORCHESTRATOR_CONSUMER, subjects::EVENTS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        tracing::info!("orchestrator started");
        crate::consume(consumer, shutdown, CONCURRENCY, |msg| handle(&ctx, msg)).await;
        tracing::info!("orchestrator stopped");
        Ok(())
    }
}

async fn handle(ctx: &Ctx, msg: jetstream::Message) {
    let event: Event = match serde_json::from_slice(&msg.payload) {
        Ok(e) => e,
        Err(err) => {
            tracing::error!(error = %err, subject = %msg.subject, "malformed event; terminating it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let execution_id = event.execution_id();
    match on_event(ctx, &event).await {
        Ok(()) => {
            let _ = msg.ack().await;
        }
        Err(err) => {
            tracing::warn!(error = %err, execution_id = %execution_id, kind = event.kind(), "handling failed; will retry");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

async fn on_event(ctx: &Ctx, event: &Event) -> Result<(), ServiceError> {
    let key = subjects::execution_key(event.execution_id());
    let run = match event {
        Event::ExecutionRequested(req) => {
            let run = plan::plan(req);
            match ctx.runs.create(&key, encode(&run)).await {
                Ok(_) => {
                    tracing::info!(execution_id = %req.execution_id, job = %run.job_name, "execution planned");
                    Some(run)
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    load(&ctx.runs, &key).await?
                }
                Err(e) => return Err(ServiceError::Nats(e.to_string())),
            }
        }
        Event::StepFinished(f) => update(&ctx.runs, &key, |run| run.on_step_finished(f)).await?,
        Event::AbortRequested(_) => {
            let Some(run) = load(&ctx.runs, &key).await? else {
                return Ok(());
            };
            if run.finished.is_some() {
                Some(run)
            } else {
                // Whoever creates the claim runs the step: if we win, no runner
                // ever will, and the run ends now.
                let claim = subjects::claim_key(run.execution_id, run.current);
                let unclaimed = ctx
                    .claims
                    .create(&claim, ABORTED_CLAIM.into())
                    .await
                    .is_ok();
                let run = update(&ctx.runs, &key, |r| {
                    r.on_abort(unclaimed && r.current == run.current)
                })
                .await?;
                if !unclaimed {
                    ctx.client
                        .publish(subjects::abort(event.execution_id()), "abort".into())
                        .await
                        .map_err(|e| ServiceError::Nats(e.to_string()))?;
                }
                run
            }
        }
        _ => return Ok(()),
    };
    match run {
        Some(run) => effects(ctx, &run).await,
        None => {
            tracing::warn!(execution_id = %event.execution_id(), kind = event.kind(), "event for an execution the orchestrator does not know; ignoring");
            Ok(())
        }
    }
}

/// Makes the world match the run: its end published, or its current step
/// dispatched. Idempotent through dedup ids.
async fn effects(ctx: &Ctx, run: &Run) -> Result<(), ServiceError> {
    if let Some(fin) = run.finished_event() {
        tracing::info!(execution_id = %run.execution_id, outcome = ?fin.outcome, "execution finished");
        bus::publish_event(&ctx.js, &Event::ExecutionFinished(fin)).await?;
        return Ok(());
    }
    let dispatch = run.dispatch();
    if let Target::Tags(set) = &dispatch.target {
        topology::ensure_tag_set(&ctx.js, &ctx.tagsets, set).await?;
    }
    let token = dispatch.target.token();
    let subject = subjects::dispatch(&token, run.execution_id, run.current);
    let msg_id = format!("{}.{}.dispatch", run.execution_id.simple(), run.current);
    let duplicate = bus::publish_json(&ctx.js, &subject, &msg_id, &dispatch).await?;
    let target = dispatch.target.clone();
    bus::publish_event(&ctx.js, &Event::StepDispatched(dispatch)).await?;
    if !duplicate {
        tracing::debug!(execution_id = %run.execution_id, step = run.current, target = %token, "step dispatched");
        if let Some(reason) = fleet::why_waiting(&ctx.js, &target).await {
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

async fn load(runs: &kv::Store, key: &str) -> Result<Option<Run>, ServiceError> {
    let Some(entry) = runs
        .entry(key)
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?
    else {
        return Ok(None);
    };
    if entry.operation != kv::Operation::Put {
        return Ok(None);
    }
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| ServiceError::Corrupt(format!("run {key}: {e}")))
}

/// Compare-and-set loop: applies `change` to the stored run until the write
/// lands on the revision it read.
async fn update(
    runs: &kv::Store,
    key: &str,
    change: impl Fn(&mut Run) -> bool,
) -> Result<Option<Run>, ServiceError> {
    loop {
        let Some(entry) = runs
            .entry(key)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?
        else {
            return Ok(None);
        };
        let mut run: Run = serde_json::from_slice(&entry.value)
            .map_err(|e| ServiceError::Corrupt(format!("run {key}: {e}")))?;
        if !change(&mut run) {
            return Ok(Some(run));
        }
        match runs.update(key, encode(&run), entry.revision).await {
            Ok(_) => return Ok(Some(run)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(ServiceError::Nats(e.to_string())),
        }
    }
}
