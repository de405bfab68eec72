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
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::bucket::Bucket;
use crate::store::watched::{keep_following, watch_all, Ready};
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

#[derive(Clone, Default)]
pub struct ExecutionIndex {
    /// Per project, its executions' ids: UUIDv7s, so in creation order.
    by_project: Arc<RwLock<HashMap<String, BTreeSet<Uuid>>>>,
    /// The watch has delivered every entry that existed when it started.
    ready: Ready,
}

impl ExecutionIndex {
    /// The newest `max` executions of `project`, newest first; `None`
    /// while the index has not caught up with the bucket (for at most `wait`).
    pub async fn newest(&self, project: &str, max: usize, wait: Duration) -> Option<Vec<Uuid>> {
        if !self.ready.wait(wait).await {
            return None;
        }
        let by_project = self.by_project.read().unwrap();
        Some(
            by_project
                .get(project)
                .map(|ids| ids.iter().rev().take(max).copied().collect())
                .unwrap_or_default(),
        )
    }

    /// Follows the bucket until `shutdown`.
    pub async fn maintain(self, bucket: Bucket, shutdown: CancellationToken) {
        keep_following("execution index", shutdown.clone(), || {
            self.follow(&bucket, &shutdown)
        })
        .await
    }

    async fn follow(&self, bucket: &Bucket, shutdown: &CancellationToken) -> Result<(), String> {
        let mut watch = watch_all(bucket, &self.ready).await?;
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
                self.ready.set();
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
