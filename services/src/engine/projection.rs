//! The execution projection: a pure fold of events into [`ExecutionState`].
//!
//! The fold is idempotent and order-tolerant: statuses only move forward
//! ([`StepStatus`] and [`ExecutionStatus`] are ordered by progress), and
//! timestamps are first-writer-wins. Folding a redelivered or replayed event
//! leaves the state as it was.

use outpost_schemas::state::{
    ExecutionState, ExecutionStatus, HandlerState, NodeStepState, StepState, StepStatus,
};
use outpost_schemas::{handled_outcome, Event, ExecutionOutcome, StepOutcome};

#[derive(Debug, Clone, PartialEq)]
pub enum Folded {
    /// The state changed; store it.
    Changed(Box<ExecutionState>),
    /// Nothing to store (a duplicate, or a step that is already further on).
    Unchanged,
    /// The event belongs to an execution whose request was not folded yet;
    /// retry it later.
    NeedsRequest,
}

pub fn fold(state: Option<&ExecutionState>, event: &Event) -> Folded {
    let mut next = match (state, event) {
        (None, Event::ExecutionRequested(r)) => ExecutionState {
            id: r.execution_id,
            project: r.project.clone(),
            job_id: r.job_id,
            job_name: r.job.name.clone(),
            job_group: r.job.group.clone(),
            status: ExecutionStatus::Queued,
            options: r.options.clone(),
            requested_by: r.requested_by.clone(),
            keepgoing: r.job.sequence.keepgoing,
            requested_at: r.header.time,
            started_at: None,
            finished_at: None,
            abort_requested: false,
            steps: r
                .job
                .sequence
                .commands
                .iter()
                .enumerate()
                .map(|(i, c)| StepState {
                    step: i as u32 + 1,
                    label: c.label(),
                    target: r.job.step_target(i),
                    status: StepStatus::Pending,
                    runner_id: None,
                    hostname: None,
                    dispatched_at: None,
                    claimed_at: None,
                    started_at: None,
                    finished_at: None,
                    exit_code: None,
                    reason: None,
                    log_chunks: 0,
                    nodes: Default::default(),
                    child_execution_id: None,
                    errorhandler: c.errorhandler.as_ref().map(|h| HandlerState {
                        keepgoing_on_success: h.keepgoing_on_success,
                        status: None,
                        exit_code: None,
                        reason: None,
                    }),
                })
                .collect(),
            node_dispatch: r.job.nodefilters.is_some(),
            nodes: Vec::new(),
            successful_nodes: Vec::new(),
            failed_nodes: Vec::new(),
            last_event_at: r.header.time,
            parent_execution_id: r.parent.as_ref().map(|p| p.execution_id),
            parent_step: r.parent.as_ref().map(|p| p.step),
            retry: r.retry.clone(),
            retry_execution_id: None,
        },
        (None, _) => return Folded::NeedsRequest,
        (Some(s), _) => s.clone(),
    };
    let time = event.header().time;
    next.last_event_at = next.last_event_at.max(time);

    match event {
        Event::ExecutionRequested(_) => {}
        Event::StepDispatched(d) => {
            let covered: Vec<u32> = match &d.node_run {
                Some(nr) => nr.steps.iter().map(|s| s.step).collect(),
                None => vec![d.step],
            };
            for n in covered {
                if let Some(st) = step_mut(&mut next, n) {
                    advance(st, StepStatus::Dispatched);
                    earliest(&mut st.dispatched_at, time);
                }
            }
            if let Some(nr) = &d.node_run {
                let names: Vec<String> = nr.nodes.iter().map(|n| n.nodename.clone()).collect();
                next.nodes = names.clone();
                for s in &nr.steps {
                    if let Some(st) = step_mut(&mut next, s.step) {
                        for name in &names {
                            st.nodes.entry(name.clone()).or_insert(NodeStepState {
                                child_execution_id: None,
                                status: StepStatus::Pending,
                                started_at: None,
                                finished_at: None,
                                exit_code: None,
                                reason: None,
                            });
                        }
                        // Node results folded before this event count now.
                        settle_node_step(st, time);
                    }
                }
                settle_nodes(&mut next);
            }
        }
        Event::NodeStepStarted(e) => {
            if let Some(st) = step_mut(&mut next, e.step) {
                let ns = node_mut(st, &e.node);
                if ns.status < StepStatus::Running {
                    ns.status = StepStatus::Running;
                }
                earliest(&mut ns.started_at, time);
                advance(st, StepStatus::Running);
                earliest(&mut st.started_at, time);
                st.runner_id.get_or_insert_with(|| e.runner_id.clone());
            }
            advance_exec(&mut next, ExecutionStatus::Running);
            earliest(&mut next.started_at, time);
        }
        Event::NodeStepFinished(e) => {
            if let Some(st) = step_mut(&mut next, e.step) {
                let ns = node_mut(st, &e.node);
                if !ns.status.is_terminal() {
                    ns.status = match e.outcome {
                        Some(StepOutcome::Succeeded) => StepStatus::Succeeded,
                        Some(StepOutcome::Failed) => StepStatus::Failed,
                        Some(StepOutcome::Aborted) => StepStatus::Aborted,
                        None => StepStatus::Skipped,
                    };
                    ns.exit_code = e.exit_code;
                    ns.reason = e.reason.clone();
                    ns.finished_at = Some(time);
                }
                // A node step's handler, over all its nodes: failed if it
                // failed on any.
                if let (Some(h), Some(state)) = (&e.handler, st.errorhandler.as_mut()) {
                    if state.status != Some(StepStatus::Failed) {
                        state.status = Some(status_of(h.outcome));
                        state.exit_code = h.exit_code;
                        state.reason = h.reason.clone();
                    }
                }
                st.runner_id.get_or_insert_with(|| e.runner_id.clone());
            }
            // Until the dispatch (with every target node) is folded, a step
            // cannot know that all its nodes are done.
            if !next.nodes.is_empty() {
                if let Some(st) = step_mut(&mut next, e.step) {
                    settle_node_step(st, time);
                }
                settle_nodes(&mut next);
            }
        }
        Event::StepWaiting(w) => {
            if let Some(st) = step_mut(&mut next, w.step) {
                if st.status <= StepStatus::Waiting {
                    st.status = StepStatus::Waiting;
                    st.reason = Some(w.reason.clone());
                }
            }
        }
        // The claim's holder, recorded by the control plane; the runner's own
        // `StepClaimed` follows with its hostname.
        Event::StepGranted(g) => {
            if let Some(st) = step_mut(&mut next, g.step) {
                st.runner_id.get_or_insert_with(|| g.runner_id.clone());
            }
        }
        Event::StepClaimed(c) => {
            if let Some(st) = step_mut(&mut next, c.step) {
                if advance(st, StepStatus::Claimed) {
                    st.reason = None;
                }
                earliest(&mut st.claimed_at, time);
                st.runner_id.get_or_insert_with(|| c.runner_id.clone());
                st.hostname.get_or_insert_with(|| c.hostname.clone());
            }
            advance_exec(&mut next, ExecutionStatus::Running);
            earliest(&mut next.started_at, time);
        }
        Event::StepStarted(s) => {
            if let Some(st) = step_mut(&mut next, s.step) {
                advance(st, StepStatus::Running);
                earliest(&mut st.started_at, time);
                st.runner_id.get_or_insert_with(|| s.runner_id.clone());
            }
            advance_exec(&mut next, ExecutionStatus::Running);
            earliest(&mut next.started_at, time);
        }
        // A node run's StepFinished summarises its steps, whose statuses
        // come from their node results instead. Steps that run once in a
        // node job (flow steps) end as in any job.
        Event::StepFinished(f)
            if next.node_dispatch
                && f.runner_id != outpost_schemas::subjects::CONTROL_PLANE_SOURCE => {}
        Event::StepFinished(f) => {
            let keepgoing = next.keepgoing;
            if let Some(st) = step_mut(&mut next, f.step) {
                let mut outcome = f.outcome;
                let mut reason = f.reason.clone();
                if let (Some(h), Some(state)) = (&f.handler, st.errorhandler.as_mut()) {
                    if !st.status.is_terminal() {
                        state.status = Some(status_of(h.outcome));
                        state.exit_code = h.exit_code;
                        state.reason = h.reason.clone();
                    }
                    if f.outcome == StepOutcome::Failed {
                        outcome = handled_outcome(h, keepgoing, state.keepgoing_on_success);
                        let own = f.reason.as_deref().unwrap_or("failed");
                        reason = Some(match (outcome, h.outcome) {
                            (StepOutcome::Succeeded, _) => {
                                format!("{own}; recovered by its error handler")
                            }
                            (_, StepOutcome::Succeeded) => format!(
                                "{own}; its error handler succeeded, but neither keepgoing nor keepgoingOnSuccess lets the workflow go on"
                            ),
                            _ => format!(
                                "{own}; its error handler failed too ({})",
                                h.reason.as_deref().unwrap_or("failed")
                            ),
                        });
                    }
                }
                // The first finished event wins; a later one (a lost runner's
                // late report) changes nothing.
                if !st.status.is_terminal() {
                    st.status = status_of(outcome);
                    st.exit_code = f.exit_code;
                    st.reason = reason;
                    st.log_chunks = f.log_chunks;
                    st.finished_at = Some(time);
                    if f.runner_id != outpost_schemas::subjects::CONTROL_PLANE_SOURCE {
                        st.runner_id.get_or_insert_with(|| f.runner_id.clone());
                    }
                }
            }
        }
        Event::JobRefStarted(e) => {
            if let Some(st) = step_mut(&mut next, e.step) {
                advance(st, StepStatus::Running);
                earliest(&mut st.started_at, time);
                match &e.node {
                    Some(node) => {
                        let ns = node_mut(st, node);
                        ns.child_execution_id = Some(e.child_execution_id);
                        if ns.status < StepStatus::Running {
                            ns.status = StepStatus::Running;
                        }
                        earliest(&mut ns.started_at, time);
                    }
                    None => st.child_execution_id = Some(e.child_execution_id),
                }
            }
            if let Some(node) = e.node.as_ref().filter(|n| !next.nodes.contains(n)) {
                next.nodes.push(node.clone());
            }
            advance_exec(&mut next, ExecutionStatus::Running);
            earliest(&mut next.started_at, time);
        }
        // One node's child of a `nodeStep: true` reference.
        Event::JobRefFinished(e) if e.node.is_some() => {
            if let Some(node) = e.node.as_ref().filter(|n| !next.nodes.contains(n)) {
                next.nodes.push(node.clone());
            }
            if let Some(st) = step_mut(&mut next, e.step) {
                let ns = node_mut(st, e.node.as_deref().expect("a node"));
                if e.child_execution_id.is_some() {
                    ns.child_execution_id = e.child_execution_id;
                }
                if !ns.status.is_terminal() {
                    ns.status = status_of(e.outcome);
                    ns.reason = e.failure.as_ref().map(|f| f.message.clone());
                    ns.finished_at = Some(time);
                }
            }
            settle_nodes(&mut next);
        }
        Event::JobRefFinished(e) => {
            let abort_requested = next.abort_requested;
            if let Some(st) = step_mut(&mut next, e.step) {
                if e.child_execution_id.is_some() {
                    st.child_execution_id = e.child_execution_id;
                }
                let message = e.failure.as_ref().map(|f| f.message.clone());
                // The orchestrator runs no handler once an abort came
                // (they share the stream's order): the step ends here.
                let handled = e.outcome == StepOutcome::Failed
                    && st.errorhandler.is_some()
                    && !abort_requested;
                if handled {
                    // Its handler runs next, as a dispatch of this step,
                    // and that decides the step.
                    if !st.status.is_terminal() {
                        st.reason = message.map(|m| format!("{m}; running its error handler"));
                    }
                } else if !st.status.is_terminal() {
                    st.status = status_of(e.outcome);
                    st.reason = message;
                    st.finished_at = Some(time);
                }
                // Nodes whose child never started (a failure stopped new
                // ones, or an abort).
                for name in &e.skipped_nodes {
                    let ns = node_mut(st, name);
                    if !ns.status.is_terminal() {
                        ns.status = StepStatus::Skipped;
                        ns.finished_at = Some(time);
                    }
                }
            }
            for name in &e.skipped_nodes {
                if !next.nodes.contains(name) {
                    next.nodes.push(name.clone());
                }
            }
            settle_nodes(&mut next);
        }
        Event::ExecutionFinished(f) => {
            let status = match f.outcome {
                ExecutionOutcome::Succeeded => ExecutionStatus::Succeeded,
                ExecutionOutcome::Failed => ExecutionStatus::Failed,
                ExecutionOutcome::Aborted => ExecutionStatus::Aborted,
                ExecutionOutcome::TimedOut => ExecutionStatus::TimedOut,
            };
            // Rundeck shows a retried attempt as `failed-with-retry`, even
            // when it timed out.
            let status = match f.retry_execution_id {
                Some(_) if status != ExecutionStatus::Succeeded => ExecutionStatus::FailedWithRetry,
                _ => status,
            };
            if next.retry_execution_id.is_none() {
                next.retry_execution_id = f.retry_execution_id;
            }
            if !next.status.is_terminal() {
                next.status = status;
                next.finished_at = Some(time);
            }
            for n in &f.skipped_steps {
                if let Some(st) = step_mut(&mut next, *n) {
                    if !st.status.is_terminal() {
                        st.status = if matches!(
                            f.outcome,
                            ExecutionOutcome::Aborted | ExecutionOutcome::TimedOut
                        ) {
                            StepStatus::Aborted
                        } else {
                            StepStatus::Skipped
                        };
                        st.reason = f
                            .reason
                            .clone()
                            .or_else(|| Some("an earlier step failed".into()));
                    }
                }
            }
        }
        Event::AbortRequested(_) => {
            next.abort_requested = true;
        }
    }
    match state {
        Some(old) if *old == next => Folded::Unchanged,
        _ => Folded::Changed(Box::new(next)),
    }
}

fn node_mut<'a>(st: &'a mut StepState, node: &str) -> &'a mut NodeStepState {
    st.nodes.entry(node.to_string()).or_insert(NodeStepState {
        child_execution_id: None,
        status: StepStatus::Pending,
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
    })
}

/// A node step is over once every node is: failed if any node failed.
fn settle_node_step(st: &mut StepState, time: chrono::DateTime<chrono::Utc>) {
    if st.status.is_terminal() || st.nodes.values().any(|n| !n.status.is_terminal()) {
        return;
    }
    let failed: Vec<&String> = st
        .nodes
        .iter()
        .filter(|(_, n)| n.status == StepStatus::Failed)
        .map(|(k, _)| k)
        .collect();
    let has = |s: StepStatus| st.nodes.values().any(|n| n.status == s);
    st.status = if !failed.is_empty() {
        StepStatus::Failed
    } else if has(StepStatus::Aborted) {
        StepStatus::Aborted
    } else if has(StepStatus::Succeeded) {
        StepStatus::Succeeded
    } else {
        StepStatus::Skipped
    };
    if !failed.is_empty() {
        st.reason = Some(format!(
            "failed on {}",
            failed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // The last node's end, not the time this event was folded.
    st.finished_at = st
        .nodes
        .values()
        .filter_map(|n| n.finished_at)
        .max()
        .or(Some(time));
}

/// Rundeck's successfulNodes / failedNodes, derived from every node step.
fn settle_nodes(state: &mut ExecutionState) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for name in &state.nodes {
        let statuses: Vec<StepStatus> = state
            .steps
            .iter()
            .filter_map(|s| s.nodes.get(name).map(|n| n.status))
            .collect();
        if statuses
            .iter()
            .any(|s| matches!(s, StepStatus::Failed | StepStatus::Aborted))
        {
            bad.push(name.clone());
        } else if statuses.contains(&StepStatus::Succeeded)
            && statuses.iter().all(|s| s.is_terminal())
        {
            ok.push(name.clone());
        }
    }
    state.successful_nodes = ok;
    state.failed_nodes = bad;
}

/// Keeps the earliest time seen, whatever order the events come in.
fn earliest(slot: &mut Option<chrono::DateTime<chrono::Utc>>, time: chrono::DateTime<chrono::Utc>) {
    *slot = Some(slot.map_or(time, |t| t.min(time)));
}

fn step_mut(state: &mut ExecutionState, step: u32) -> Option<&mut StepState> {
    state.steps.get_mut(step.checked_sub(1)? as usize)
}

/// Moves a step forward only; returns whether it moved.
fn advance(st: &mut StepState, to: StepStatus) -> bool {
    if st.status < to {
        st.status = to;
        true
    } else {
        false
    }
}

fn advance_exec(state: &mut ExecutionState, to: ExecutionStatus) {
    if state.status < to {
        state.status = to;
    }
}

#[cfg(test)]
mod tests;

fn status_of(outcome: StepOutcome) -> StepStatus {
    match outcome {
        StepOutcome::Succeeded => StepStatus::Succeeded,
        StepOutcome::Failed => StepStatus::Failed,
        StepOutcome::Aborted => StepStatus::Aborted,
    }
}
