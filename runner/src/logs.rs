//! Turns step output into ordered, sequence-numbered chunks on the log
//! stream, one subject (and one sequence) per step.
//!
//! Batching needs no timer: while one chunk's publish waits for its ack, new
//! lines queue up and go out together in the next chunk. An idle step's line
//! is published at once; a chatty step's lines go out in chunks of up to
//! [`CHUNK_BYTES`]. Chunks are published one at a time, each acknowledged
//! before the next, so the stream holds them in order.

use std::collections::BTreeMap;

use async_nats::jetstream;
use outpost_schemas::{subjects, Header, LogChunk, LogEntry, StepNo};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::bus::{self, BusError};

/// Upper bound on a chunk's text, well under NATS's 1 MiB payload limit.
pub const CHUNK_BYTES: usize = 128 * 1024;
/// JSON overhead we budget per entry (timestamp, stream, level, quoting).
const ENTRY_OVERHEAD: usize = 96;

/// Publishes everything received on `rx` until it closes; returns the number
/// of chunks published per step. A chunk holds lines of one step only.
pub async fn pump(
    js: jetstream::Context,
    execution_id: Uuid,
    runner_id: String,
    dedup_salt: Uuid,
    mut rx: mpsc::Receiver<(StepNo, LogEntry)>,
) -> Result<BTreeMap<StepNo, u64>, BusError> {
    let mut seqs: BTreeMap<StepNo, u64> = BTreeMap::new();
    let mut carry: Option<(StepNo, LogEntry)> = None;
    loop {
        let (step, first) = match carry.take() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => break,
            },
        };
        let mut size = first.log.len() + ENTRY_OVERHEAD;
        let mut entries = vec![first];
        while size < CHUNK_BYTES {
            match rx.try_recv() {
                Ok((s, e)) if s == step => {
                    size += e.log.len() + ENTRY_OVERHEAD;
                    entries.push(e);
                }
                Ok(other) => {
                    carry = Some(other);
                    break;
                }
                Err(_) => break,
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
        bus::publish_json(&js, &subject, &msg_id, &chunk).await?;
    }
    Ok(seqs)
}
