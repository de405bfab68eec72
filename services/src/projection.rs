//! The execution projection: a pure fold of events into [`ExecutionState`].
//!
//! The fold is idempotent and order-tolerant: statuses only move forward
//! ([`StepStatus`] and [`ExecutionStatus`] are ordered by progress), and
//! timestamps are first-writer-wins. Folding a redelivered or replayed event
//! leaves the state as it was.

use outpost_schemas::state::{ExecutionState, ExecutionStatus, StepState, StepStatus};
use outpost_schemas::{Event, ExecutionOutcome, StepOutcome};

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
                })
                .collect(),
            last_event_at: r.header.time,
        },
        (None, _) => return Folded::NeedsRequest,
        (Some(s), _) => s.clone(),
    };
    let time = event.header().time;
    next.last_event_at = next.last_event_at.max(time);

    match event {
        Event::ExecutionRequested(_) => {}
        Event::StepDispatched(d) => {
            if let Some(st) = step_mut(&mut next, d.step) {
                advance(st, StepStatus::Dispatched);
                earliest(&mut st.dispatched_at, time);
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
        Event::StepFinished(f) => {
            if let Some(st) = step_mut(&mut next, f.step) {
                let status = match f.outcome {
                    StepOutcome::Succeeded => StepStatus::Succeeded,
                    StepOutcome::Failed => StepStatus::Failed,
                    StepOutcome::Aborted => StepStatus::Aborted,
                };
                // The first finished event wins; a later one (a lost runner's
                // late report) changes nothing.
                if !st.status.is_terminal() {
                    st.status = status;
                    st.exit_code = f.exit_code;
                    st.reason = f.reason.clone();
                    st.log_chunks = f.log_chunks;
                    st.finished_at = Some(time);
                    st.runner_id.get_or_insert_with(|| f.runner_id.clone());
                }
            }
        }
        Event::ExecutionFinished(f) => {
            let status = match f.outcome {
                ExecutionOutcome::Succeeded => ExecutionStatus::Succeeded,
                ExecutionOutcome::Failed => ExecutionStatus::Failed,
                ExecutionOutcome::Aborted => ExecutionStatus::Aborted,
            };
            if !next.status.is_terminal() {
                next.status = status;
                next.finished_at = Some(time);
            }
            for n in &f.skipped_steps {
                if let Some(st) = step_mut(&mut next, *n) {
                    if !st.status.is_terminal() {
                        st.status = if f.outcome == ExecutionOutcome::Aborted {
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
