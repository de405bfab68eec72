//! Turns a step's log entries into ordered, sequence-numbered chunks on the
//! log stream.
//!
//! Batching needs no timer: while one chunk's publish waits for its ack, new
//! lines queue up and go out together in the next chunk. An idle step's line
//! is published at once; a chatty step's lines go out in chunks of up to
//! [`CHUNK_BYTES`]. Chunks are published one at a time, each acknowledged
//! before the next, so the stream holds them in order.

use async_nats::jetstream;
use outpost_schemas::{subjects, Header, LogChunk, LogEntry};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::bus::{self, BusError};

/// Upper bound on a chunk's text, well under NATS's 1 MiB payload limit.
pub const CHUNK_BYTES: usize = 128 * 1024;
/// JSON overhead we budget per entry (timestamp, stream, level, quoting).
const ENTRY_OVERHEAD: usize = 96;

/// Publishes everything received on `rx` until it closes; returns the number
/// of chunks published.
pub async fn pump(
    js: jetstream::Context,
    execution_id: Uuid,
    step: u32,
    runner_id: String,
    mut rx: mpsc::Receiver<LogEntry>,
) -> Result<u64, BusError> {
    let subject = subjects::log(execution_id, step, &runner_id);
    let mut seq = 0u64;
    while let Some(first) = rx.recv().await {
        let mut size = first.log.len() + ENTRY_OVERHEAD;
        let mut entries = vec![first];
        while size < CHUNK_BYTES {
            match rx.try_recv() {
                Ok(e) => {
                    size += e.log.len() + ENTRY_OVERHEAD;
                    entries.push(e);
                }
                Err(_) => break,
            }
        }
        seq += 1;
        let chunk = LogChunk {
            header: Header::now(),
            execution_id,
            step,
            runner_id: runner_id.clone(),
            seq,
            entries,
        };
        let msg_id = format!("{}.{step}.{seq}", execution_id.simple());
        bus::publish_json(&js, &subject, &msg_id, &chunk).await?;
    }
    Ok(seq)
}
