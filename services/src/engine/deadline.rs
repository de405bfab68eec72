//! Job timeouts. The orchestrator records each running execution's
//! deadline in `OUTPOST_DEADLINES` when it plans the run and deletes it when
//! the run ends. Every orchestrator replica watches that bucket and, when a
//! deadline passes, publishes an abort with cause `timeout`; the abort path
//! then kills the step wherever it runs (a local process group, an SSH
//! node's process group, a child execution), and the run ends `timedout`.
//!
//! Every replica publishes under one dedup id (salted with the run's nonce,
//! which runners cannot read), so the stream stores one timeout however
//! many replicas see the deadline; an abort of a run already over changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use outpost_bus as bus;
use outpost_schemas::records::DeadlineRecord;
use outpost_schemas::{subjects, AbortCause, AbortRequested, Event, Header};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::bucket::Bucket;
use crate::store::watched::{keep_following, watch_all, Ready};
use crate::ServiceError;

/// Who a timeout's abort is from, in the event and the execution's reason.
pub const TIMEOUT_REQUESTER: &str = "timeout";

/// A deadline whose abort was published is published again this long
/// after, while its record stays: the record goes only when the run ends,
/// so a publish lost with a NATS restart is made good.
const REPEAT_AFTER: Duration = Duration::from_secs(30);

/// Records `record` unless the run has one already (a redelivered request
/// must not move its deadline).
pub async fn record(bucket: &Bucket, record: &DeadlineRecord) -> Result<(), ServiceError> {
    let key = subjects::execution_key(record.execution_id);
    let value = serde_json::to_vec(record).expect("record serialises");
    match bucket.raw().create(&key, value.into()).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(ServiceError::Nats(format!("{} {key}: {e}", bucket.name()))),
    }
}

/// Forgets the deadline of a run that has ended.
pub async fn forget(bucket: &Bucket, execution: Uuid) -> Result<(), ServiceError> {
    let key = subjects::execution_key(execution);
    bucket
        .raw()
        .purge(&key)
        .await
        .map_err(|e| ServiceError::Nats(format!("{} {key}: {e}", bucket.name())))
}

/// Watches the deadlines and times runs out.
pub struct Deadlines {
    js: jetstream::Context,
}

impl Deadlines {
    pub fn new(js: jetstream::Context) -> Self {
        Deadlines { js }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let bucket = Bucket::open(&self.js, subjects::DEADLINES_BUCKET).await?;
        let js = self.js;
        keep_following("deadlines", shutdown.clone(), || {
            follow(&js, &bucket, &shutdown)
        })
        .await;
        Ok(())
    }
}

async fn follow(
    js: &jetstream::Context,
    bucket: &Bucket,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let mut watch = watch_all(bucket, &Ready::default()).await?;
    let mut pending: BTreeMap<Uuid, DeadlineRecord> = BTreeMap::new();
    // When each pending deadline is next due (its deadline, then repeats).
    let mut due: BTreeSet<(DateTime<Utc>, Uuid)> = BTreeSet::new();
    loop {
        let next = due.first().copied();
        let sleep = match next {
            Some((at, _)) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            entry = watch.next() => {
                let Some(entry) = entry else {
                    return Err("the watch ended".into());
                };
                let entry = entry.map_err(|e| e.to_string())?;
                apply(&entry, &mut pending, &mut due);
            }
            _ = tokio::time::sleep(sleep), if next.is_some() => {
                let (at, id) = next.expect("guarded");
                due.remove(&(at, id));
                if let Some(rec) = pending.get(&id) {
                    if let Err(e) = time_out(js, rec).await {
                        tracing::warn!(execution_id = %id, error = %e, "could not publish a timeout; trying again");
                    }
                    let again = Utc::now() + chrono::Duration::from_std(REPEAT_AFTER).expect("small");
                    due.insert((again, id));
                }
            }
        }
    }
}

fn apply(
    entry: &kv::Entry,
    pending: &mut BTreeMap<Uuid, DeadlineRecord>,
    due: &mut BTreeSet<(DateTime<Utc>, Uuid)>,
) {
    let Ok(id) = Uuid::try_parse(&entry.key) else {
        tracing::warn!(key = %entry.key, "skipping an unreadable deadline key");
        return;
    };
    if let Some(old) = pending.remove(&id) {
        due.retain(|(_, d)| *d != id);
        drop(old);
    }
    if entry.operation != kv::Operation::Put {
        return;
    }
    match serde_json::from_slice::<DeadlineRecord>(&entry.value) {
        Ok(rec) => {
            due.insert((rec.deadline, id));
            pending.insert(id, rec);
        }
        Err(e) => tracing::warn!(execution_id = %id, error = %e, "skipping an unreadable deadline"),
    }
}

async fn time_out(js: &jetstream::Context, rec: &DeadlineRecord) -> Result<(), ServiceError> {
    let event = Event::AbortRequested(AbortRequested {
        header: Header::now(),
        execution_id: rec.execution_id,
        requested_by: TIMEOUT_REQUESTER.into(),
        cause: AbortCause::Timeout,
    });
    let id = format!(
        "{}.timeout.{}",
        rec.execution_id.simple(),
        rec.nonce.simple()
    );
    let duplicate = bus::publish_event_as(js, &event, subjects::CONTROL_PLANE_SOURCE, &id).await?;
    if !duplicate {
        tracing::info!(execution_id = %rec.execution_id, timeout = %rec.timeout, "execution timed out; stopping it");
    }
    Ok(())
}
