//! A node job's dispatch: its steps on each matched node, by the job's
//! strategy, over SSH or locally.

use std::sync::{Arc, Mutex};

use outpost_schemas::{
    Event, Header, LogEntry, StepDispatched, StepFinished, StepOutcome, StepStarted,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::outbox::Receipt;

use super::step::{halted_by, limited};
use super::{report, CancelReason, RunnerError, Shared};

/// What the claim resolved for the steps: the secure values to mask, and
/// the context scripts' tokens are replaced with.
pub(super) struct Values {
    pub secrets: crate::mask::Secrets,
    pub tokens: std::collections::BTreeMap<String, String>,
    /// Authentication options, for SSH logins only.
    pub auth: std::collections::BTreeMap<String, String>,
    /// Said in the log before the first node starts.
    pub warnings: Vec<String>,
}

/// Runs a node job's steps on its nodes, reporting each node step, then one
/// `StepFinished` for the whole dispatch.
pub(super) async fn run_nodes(
    shared: &Shared,
    lane: &str,
    d: &StepDispatched,
    nr: &outpost_schemas::NodeRunDispatch,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
    values: Values,
) -> Result<Receipt, RunnerError> {
    let Values {
        secrets,
        tokens,
        auth,
        warnings,
    } = values;
    use crate::node_run::{self, NodeEvent, NodeRunSpec};
    let runner_id = shared.opts.runner_id.clone();
    let execution_id = d.execution_id;
    report(
        &shared.outbox,
        lane,
        &Event::StepStarted(StepStarted {
            header: Header::now(),
            execution_id,
            step: d.step,
            runner_id: runner_id.clone(),
            pid: None,
        }),
    )
    .await?;
    // Nodes this runner reported come back without credential attributes:
    // use its own, complete, entries for them.
    let nodes = nr
        .nodes
        .iter()
        .map(|n| {
            shared
                .local_nodes
                .iter()
                .find(|l| l.nodename == n.nodename)
                .cloned()
                .unwrap_or_else(|| n.clone())
        })
        .collect();
    let spec = NodeRunSpec {
        nodes,
        steps: nr
            .steps
            .iter()
            .map(|s| (s.step, s.command.clone()))
            .collect(),
        handlers: nr
            .steps
            .iter()
            .filter_map(|s| {
                let h = s.errorhandler.clone()?;
                Some((s.step, (h, s.keepgoing_on_success)))
            })
            .collect(),
        strategy: nr.strategy,
        threadcount: nr.threadcount as usize,
        node_keepgoing: nr.node_keepgoing,
        step_keepgoing: nr.step_keepgoing,
        env: d.env.clone(),
        vars: tokens,
        secrets,
        log_filters: nr
            .steps
            .iter()
            .map(|s| (s.step, s.log_filters.clone()))
            .collect(),
        loglevel: d.loglevel,
        auth,
    };
    let (etx, mut erx) = mpsc::channel::<NodeEvent>(256);
    let (ltx, lrx) = mpsc::channel(1024);
    // Every node's output passes the job's log limit before the pump.
    let (raw_tx, mut raw_rx) = mpsc::channel::<(outpost_schemas::StepNo, LogEntry)>(1024);
    for w in warnings {
        let _ = raw_tx.send((d.step, super::step::warning_line(w))).await;
    }
    let mut limiter = crate::logs::Limiter::new(d.loglimit, d.log_used.clone());
    // After each node step's log filters (in `node_run`), as Rundeck
    // counts what its filters and log level let through.
    let limit = {
        let (cancel, reason) = (cancel.clone(), reason.clone());
        tokio::spawn(async move {
            while let Some((step, e)) = raw_rx.recv().await {
                let Some(e) = limited(&mut limiter, e, &reason, &cancel) else {
                    continue;
                };
                if ltx.send((step, e)).await.is_err() {
                    break;
                }
            }
            limiter
        })
    };
    let pump = tokio::spawn(crate::logs::pump(
        shared.outbox.clone(),
        lane.to_string(),
        execution_id,
        runner_id.clone(),
        shared.replica_id,
        lrx,
    ));
    let outbox = shared.outbox.clone();
    let rid = runner_id.clone();
    let node_lane = lane.to_string();
    // Node events go out in the order they happen, on the step's lane.
    let reporter = tokio::spawn(async move {
        while let Some(ev) = erx.recv().await {
            let event = match ev {
                NodeEvent::Started { step, node } => {
                    Event::NodeStepStarted(outpost_schemas::NodeStepStarted {
                        header: Header::now(),
                        execution_id,
                        step,
                        node,
                        runner_id: rid.clone(),
                    })
                }
                NodeEvent::Finished(r) => {
                    Event::NodeStepFinished(outpost_schemas::NodeStepFinished {
                        header: Header::now(),
                        execution_id,
                        step: r.step,
                        node: r.node,
                        runner_id: rid.clone(),
                        outcome: r.outcome,
                        exit_code: r.exit_code,
                        reason: r.reason,
                        handler: r.handler,
                    })
                }
            };
            report(&outbox, &node_lane, &event).await?;
        }
        Ok::<(), RunnerError>(())
    });
    let results = node_run::run(
        spec,
        shared.node_context(),
        etx.clone(),
        raw_tx,
        cancel.clone(),
    )
    .await;
    let limiter = limit.await.ok().flatten();
    // Pairs that never ran are reported too, so state says so.
    for r in results.iter().filter(|r| r.outcome.is_none()) {
        let _ = etx.send(NodeEvent::Finished(r.clone())).await;
    }
    drop(etx);
    if let Err(err) = reporter.await.expect("reporter does not panic") {
        pump.abort();
        return Err(err);
    }
    let log_chunks: u64 = pump.await.expect("log pump does not panic")?.values().sum();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == Some(StepOutcome::Failed))
        .map(|r| {
            format!(
                "{} (step {}: {})",
                r.node,
                r.step,
                r.reason.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let all_ok = results
        .iter()
        .all(|r| r.outcome == Some(StepOutcome::Succeeded));
    // A cancel that came after every node step succeeded changes nothing.
    let cancelled = !all_ok && cancel.is_cancelled();
    let deadline = *reason.lock().unwrap() == Some(CancelReason::ShutdownDeadline);
    let halted = if cancelled {
        halted_by(&reason, limiter.as_ref())
    } else {
        None
    };
    let (outcome, reason) = if let (Some(status), Some(l)) = (halted, &limiter) {
        (status.step_outcome(), Some(l.limit().exceeded_message()))
    } else if cancelled && deadline {
        (
            StepOutcome::Failed,
            Some("runner shutdown deadline passed; node steps killed".to_string()),
        )
    } else if cancelled {
        (StepOutcome::Aborted, Some("aborted".to_string()))
    } else if all_ok {
        (StepOutcome::Succeeded, None)
    } else if failed.is_empty() {
        (
            StepOutcome::Failed,
            Some("not every node step ran".to_string()),
        )
    } else {
        (
            StepOutcome::Failed,
            Some(format!("failed on {}", failed.join("; "))),
        )
    };
    let node_data = results
        .iter()
        .filter(|r| !r.data.is_empty())
        .map(|r| outpost_schemas::NodeData {
            step: r.step,
            node: r.node.clone(),
            data: r.data.clone(),
        })
        .collect();
    report(
        &shared.outbox,
        lane,
        &Event::StepFinished(StepFinished {
            data: Default::default(),
            node_data,
            header: Header::now(),
            execution_id,
            step: d.step,
            runner_id,
            outcome,
            exit_code: None,
            reason,
            log_chunks,
            handler: None,
            log_used: limiter.map(|l| l.used().clone()),
            halted,
        }),
    )
    .await
}
