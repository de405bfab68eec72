//! Each project's executions, for `GET /project/{p}/executions`. The
//! projector records `<project>.<exec>` in `OUTPOST_EXECUTION_INDEX` when
//! it folds an execution's request; each API replica follows that bucket
//! with one watch it owns and answers lists from memory. A list then reads
//! only the executions it returns: no scan of every execution, and no
//! JetStream consumer per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::bucket::Bucket;
use crate::ServiceError;

/// The index key of an execution. Project names are KV-safe (letters,
/// digits, `_`, `-`).
pub fn key(project: &str, execution: Uuid) -> String {
    format!("{project}.{}", execution.simple())
}

/// Records that `execution` belongs to `project`; idempotent.
pub async fn record(index: &Bucket, project: &str, execution: Uuid) -> Result<(), ServiceError> {
    index
        .raw()
        .put(key(project, execution), bytes::Bytes::new())
        .await
        .map_err(|e| ServiceError::Nats(format!("{}: {e}", index.name())))?;
    Ok(())
}

/// Fills an empty index from the executions bucket, once: for executions
/// projected before the index existed. Returns how many it recorded.
pub async fn backfill(executions: &Bucket, index: &Bucket) -> Result<usize, ServiceError> {
    let nats = |e: String| ServiceError::Nats(format!("index backfill: {e}"));
    if index
        .raw()
        .status()
        .await
        .map_err(|e| nats(e.to_string()))?
        .values()
        > 0
    {
        return Ok(0);
    }
    let mut keys = match executions.raw().keys().await {
        Ok(k) => k,
        Err(e) => return Err(nats(e.to_string())),
    };
    let mut recorded = 0;
    while let Some(k) = keys.next().await {
        let k = k.map_err(|e| nats(e.to_string()))?;
        let Some((state, _)) = executions
            .get::<outpost_schemas::state::ExecutionState>(&k)
            .await?
        else {
            continue;
        };
        record(index, &state.project, state.id).await?;
        recorded += 1;
    }
    Ok(recorded)
}

#[derive(Clone)]
pub struct ExecutionIndex {
    /// Per project, its executions' ids: UUIDv7s, so in creation order.
    by_project: Arc<RwLock<HashMap<String, BTreeSet<Uuid>>>>,
    /// The watch has delivered every entry that existed when it started.
    ready: watch::Sender<bool>,
}

impl Default for ExecutionIndex {
    fn default() -> Self {
        ExecutionIndex {
            by_project: Default::default(),
            ready: watch::channel(false).0,
        }
    }
}

impl ExecutionIndex {
    /// The newest `max` executions of `project`, newest first; `None`
    /// while the index has not caught up with the bucket (for at most `wait`).
    pub async fn newest(&self, project: &str, max: usize, wait: Duration) -> Option<Vec<Uuid>> {
        let mut ready = self.ready.subscribe();
        tokio::time::timeout(wait, ready.wait_for(|r| *r))
            .await
            .ok()?
            .ok()?;
        let by_project = self.by_project.read().unwrap();
        Some(
            by_project
                .get(project)
                .map(|ids| ids.iter().rev().take(max).copied().collect())
                .unwrap_or_default(),
        )
    }

    /// Follows the bucket until `shutdown`, starting again (from the whole
    /// history) when the watch ends, as it does when NATS restarts.
    pub async fn maintain(self, bucket: Bucket, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(err) = self.follow(&bucket, &shutdown).await {
                tracing::warn!(error = %err, "execution index watch failed; starting it again");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    async fn follow(&self, bucket: &Bucket, shutdown: &CancellationToken) -> Result<(), String> {
        // An empty bucket delivers nothing to say "caught up".
        let existing = bucket
            .raw()
            .status()
            .await
            .map_err(|e| e.to_string())?
            .values();
        let mut watch = bucket
            .raw()
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        if existing == 0 {
            self.ready.send_replace(true);
        }
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Some(entry) = entry else {
                return Err("the watch ended".into());
            };
            let entry = entry.map_err(|e| e.to_string())?;
            self.apply(&entry);
            if entry.delta == 0 {
                self.ready.send_replace(true);
            }
        }
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some((project, id)) = entry
            .key
            .split_once('.')
            .and_then(|(p, id)| Some((p, Uuid::try_parse(id).ok()?)))
        else {
            tracing::warn!(key = %entry.key, "skipping an unreadable execution index key");
            return;
        };
        let mut by_project = self.by_project.write().unwrap();
        if entry.operation == kv::Operation::Put {
            by_project
                .entry(project.to_string())
                .or_default()
                .insert(id);
        } else if let Some(ids) = by_project.get_mut(project) {
            ids.remove(&id);
        }
    }
}
