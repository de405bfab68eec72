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

use outpost_schemas::{subjects, Header, LogChunk, LogEntry, StepNo};
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
