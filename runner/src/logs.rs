//! Turns step output into ordered, sequence-numbered chunks on the log
//! stream, one subject (and one sequence) per step.
//!
//! Chunks go through the outbox, on the step's lane, so they are stored in
//! order and survive a link cut or a restart. Batching needs no timer while
//! the link is healthy: an idle step's line goes out at once, and while one
//! chunk waits for its ack new lines gather for the next, up to
//! [`CHUNK_BYTES`]. When acks stop coming (NATS unreachable), lines are
//! still written to the outbox at least every [`LINGER`], so that the step
//! never blocks on its output and a crash loses at most that much.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_schemas::job::{LimitAction, LogLimit, LogUsage, Verdict};
use outpost_schemas::{subjects, Header, LogChunk, LogEntry, LogStream, StepNo};
use tokio::sync::mpsc::{self, error::TryRecvError};
use uuid::Uuid;

use crate::outbox::{Outbox, Receipt};

/// Upper bound on a chunk's text, well under NATS's 1 MiB payload limit.
pub const CHUNK_BYTES: usize = 128 * 1024;
/// Longest a line waits in memory before it is written to the outbox.
pub const LINGER: Duration = Duration::from_millis(200);
/// JSON overhead we budget per entry (timestamp, stream, level, quoting).
const ENTRY_OVERHEAD: usize = 96;

/// Writes everything received on `rx` to the outbox until `rx` closes;
/// returns the number of chunks per step. A chunk holds lines of one step
/// only.
pub async fn pump(
    outbox: Outbox,
    lane: String,
    execution_id: Uuid,
    runner_id: String,
    dedup_salt: Uuid,
    mut rx: mpsc::Receiver<(StepNo, LogEntry)>,
) -> Result<BTreeMap<StepNo, u64>, crate::RunnerError> {
    let mut seqs: BTreeMap<StepNo, u64> = BTreeMap::new();
    let mut carry: Option<(StepNo, LogEntry)> = None;
    let mut last: Option<Receipt> = None;
    loop {
        let (step, first) = match carry.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        let linger = tokio::time::Instant::now() + LINGER;
        let mut size = first.log.len() + ENTRY_OVERHEAD;
        let mut entries = vec![first];
        while size < CHUNK_BYTES {
            let next = match rx.try_recv() {
                Ok(next) => Some(next),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Nothing queued: send now unless the last chunk is
                    // still on its way, in which case gather until it is
                    // acknowledged or LINGER passes.
                    let Some(pending) = last.as_mut().filter(|r| !r.is_settled()) else {
                        break;
                    };
                    tokio::select! {
                        got = rx.recv() => match got {
                            Some(next) => Some(next),
                            None => break,
                        },
                        acked = pending.acked() => {
                            if !acked {
                                break;
                            }
                            None
                        }
                        _ = tokio::time::sleep_until(linger) => break,
                    }
                }
            };
            match next {
                Some((s, e)) if s == step => {
                    size += e.log.len() + ENTRY_OVERHEAD;
                    entries.push(e);
                }
                Some(other) => {
                    carry = Some(other);
                    break;
                }
                None => {}
            }
        }
        let seq = seqs.entry(step).or_default();
        *seq += 1;
        let chunk = LogChunk {
            header: Header::now(),
            execution_id,
            step,
            runner_id: runner_id.clone(),
            seq: *seq,
            entries,
        };
        // Salted with the claiming replica's id, which other runners cannot
        // read: a runner that guessed plain `<exec>.<step>.<seq>` ids could
        // otherwise publish first and have this chunk dropped as a duplicate.
        let msg_id = format!(
            "{}.{step}.{}.{}",
            execution_id.simple(),
            dedup_salt.simple(),
            chunk.seq
        );
        let subject = subjects::log(execution_id, step, &runner_id);
        let payload = crate::bus::encode(&subject, &chunk)?;
        last = Some(outbox.push(&lane, subject, msg_id, payload).await?);
    }
    Ok(seqs)
}

/// The job's log limit, applied to a step's output before it reaches the
/// pump: lines past the limit never leave the runner.
pub struct Limiter {
    limit: LogLimit,
    used: LogUsage,
}

/// What becomes of one output entry.
#[derive(Debug, PartialEq)]
pub enum Admit {
    Forward(LogEntry),
    /// The entry passed the limit: forward the limit's message in its place;
    /// with `halt`, stop the step.
    Exceeded {
        message: LogEntry,
        halt: bool,
    },
    Drop,
}

impl Limiter {
    /// None when the job has no limit.
    pub fn new(limit: Option<LogLimit>, used: Option<LogUsage>) -> Option<Self> {
        Some(Limiter {
            limit: limit?,
            used: used.unwrap_or_default(),
        })
    }

    /// Counts the step's own output (stdout and stderr). The runner's own
    /// lines (`exit code 2`) are not the step's output and pass, but not
    /// once a halting limit has stopped the step.
    pub fn admit(&mut self, e: LogEntry) -> Admit {
        if e.stream == LogStream::System {
            let halted = self.used.exceeded && self.limit.action == LimitAction::Halt;
            return if halted {
                Admit::Drop
            } else {
                Admit::Forward(e)
            };
        }
        let node = e.node.clone().unwrap_or_default();
        match self.used.count(&self.limit, &node, e.log.len() as u64) {
            Verdict::Keep => Admit::Forward(e),
            Verdict::Drop => Admit::Drop,
            Verdict::Exceeded => Admit::Exceeded {
                message: LogEntry {
                    node: e.node,
                    ..LogEntry::now(LogStream::System, "ERROR", self.limit.exceeded_message())
                },
                halt: self.limit.action == LimitAction::Halt,
            },
        }
    }

    pub fn used(&self) -> &LogUsage {
        &self.used
    }

    pub fn limit(&self) -> &LogLimit {
        &self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_schemas::job::{HaltStatus, LogMeasure};

    fn line(stream: LogStream, text: &str) -> LogEntry {
        LogEntry::now(stream, "NORMAL", text)
    }

    #[test]
    fn a_limit_carries_across_steps_and_truncation_keeps_the_runners_own_lines() {
        let limit = LogLimit {
            measure: LogMeasure::Lines,
            max: 3,
            action: LimitAction::Truncate,
            status: HaltStatus::Failed,
        };
        // Two lines were written by an earlier step, on another runner.
        let earlier = LogUsage {
            lines: 2,
            ..Default::default()
        };
        let mut l = Limiter::new(Some(limit), Some(earlier)).unwrap();
        assert!(matches!(
            l.admit(line(LogStream::Stdout, "a")),
            Admit::Forward(_)
        ));
        let Admit::Exceeded { message, halt } = l.admit(line(LogStream::Stderr, "b")) else {
            panic!("the fourth line passes the limit");
        };
        assert!(!halt);
        assert_eq!(
            message.log,
            "Log output limit exceeded: Maximum Line count: 3, action: truncate"
        );
        assert_eq!(l.admit(line(LogStream::Stdout, "c")), Admit::Drop);
        assert!(matches!(
            l.admit(line(LogStream::System, "exit code 1")),
            Admit::Forward(_)
        ));
        assert!(l.used().exceeded);

        let mut halting = Limiter::new(
            Some(LogLimit {
                action: LimitAction::Halt,
                max: 0,
                ..limit
            }),
            None,
        )
        .unwrap();
        assert!(matches!(
            halting.admit(line(LogStream::Stdout, "x")),
            Admit::Exceeded { halt: true, .. }
        ));
        assert_eq!(
            halting.admit(line(LogStream::System, "killed")),
            Admit::Drop
        );
    }
}
