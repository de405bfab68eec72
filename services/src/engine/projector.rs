//! The projector: folds the event stream into `OUTPOST_EXECUTIONS`.
//!
//! Writes are compare-and-set on the key's revision, and the fold itself is
//! idempotent, so replicas, redeliveries and replays all converge on the same
//! state. `rebuild` replays the whole stream into a fresh bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv};
use futures::StreamExt;
use outpost_schemas::state::ExecutionState;
use outpost_schemas::{subjects, Event};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use std::sync::Arc;

use crate::engine::projection::{fold, Folded};
use crate::engine::Handled;
use crate::store::bucket::{Bucket, Cas};
use crate::store::execution_index;
use crate::ServiceError;

const CONCURRENCY: usize = 32;

pub struct Projector {
    js: jetstream::Context,
}

impl Projector {
    pub fn new(js: jetstream::Context) -> Self {
        Projector { js }
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let store = Bucket::open(&self.js, subjects::EXECUTIONS_BUCKET).await?;
        let index = Bucket::open(&self.js, subjects::EXECUTION_INDEX_BUCKET).await?;
        match execution_index::backfill(&store, &index).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                executions = n,
                "execution index filled from the projected state"
            ),
            Err(err) => {
                tracing::warn!(error = %err, "cannot fill the execution index; lists miss older executions")
            }
        }
        let provenance =
            Arc::new(crate::engine::provenance::ProvenanceCheck::new(self.js.clone()).await?);
        let consumer =
            crate::engine::event_consumer(&self.js, subjects::PROJECTOR_CONSUMER).await?;
        tracing::info!("projector started");
        crate::engine::consume(
            consumer,
            shutdown,
            CONCURRENCY,
            crate::engine::event_execution,
            move |msg| {
                let (store, index, provenance) = (store.clone(), index.clone(), provenance.clone());
                async move { handle(&store, &index, &provenance, msg).await }
            },
        )
        .await;
        tracing::info!("projector stopped");
        Ok(())
    }
}

/// An event whose execution's request never arrives is handed back this
/// many times (about a minute) before it is dead-lettered.
const MAX_NOT_YET_DELIVERIES: i64 = 300;

async fn handle(
    store: &Bucket,
    index: &Bucket,
    provenance: &crate::engine::provenance::ProvenanceCheck,
    msg: jetstream::Message,
) {
    crate::engine::handle_event(
        subjects::PROJECTOR_CONSUMER,
        provenance,
        msg,
        |event, delivered| async move {
            // Listed before it is projected: a list then never misses a
            // projected execution (an index entry without state is skipped).
            if let Event::ExecutionRequested(r) = &event {
                execution_index::record(index, &r.project, r.execution_id).await?;
            }
            Ok(match apply(store, &event).await? {
                true => Handled::Done,
                // Its request is not folded yet (another replica has it in hand).
                false if delivered < MAX_NOT_YET_DELIVERIES => {
                    Handled::NotYet(Duration::from_millis(200))
                }
                false => Handled::Refuse(format!(
                    "{} for an execution whose request never arrived",
                    event.kind()
                )),
            })
        },
    )
    .await
}

/// Folds one event into the stored state. Returns false when the event must
/// wait for its execution's request.
pub async fn apply(store: &Bucket, event: &Event) -> Result<bool, ServiceError> {
    let key = subjects::execution_key(event.execution_id());
    store
        .modify(&key, |current: Option<ExecutionState>| {
            Ok::<_, ServiceError>(match fold(current.as_ref(), event) {
                Folded::Unchanged => Cas::Keep(true),
                Folded::NeedsRequest => Cas::Keep(false),
                Folded::Changed(next) => Cas::Write(*next, true),
            })
        })
        .await
}

/// What `outpost projector rebuild` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RebuildReport {
    pub bucket: String,
    pub events: u64,
    pub executions: usize,
    /// Events whose execution's request is no longer in the stream.
    pub orphans: u64,
}

/// Replays the event stream from its first message into `bucket`, which is
/// deleted and created afresh. Folds in memory, then writes each execution.
pub async fn rebuild(js: &jetstream::Context, bucket: &str) -> Result<RebuildReport, ServiceError> {
    if bucket == subjects::EXECUTIONS_BUCKET {
        return Err(ServiceError::Invalid(
            "refusing to rebuild into the live bucket; name a fresh one".into(),
        ));
    }
    let _ = js.delete_key_value(bucket).await;
    let store = js
        .create_key_value(kv::Config {
            bucket: bucket.into(),
            description: "Execution state rebuilt from the event stream".into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let (stream, state) = crate::stream_with_state(js, subjects::EVENTS_STREAM).await?;
    // Replay what is there now; events published meanwhile are the live
    // projector's business.
    let last = if state.messages == 0 {
        0
    } else {
        state.last_sequence
    };
    let mut states: BTreeMap<Uuid, ExecutionState> = BTreeMap::new();
    let (mut events, mut orphans) = (0u64, 0u64);
    let provenance = crate::engine::provenance::ProvenanceCheck::new(js.clone()).await?;
    if last > 0 {
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: "outpost.ev.>".into(),
                ..Default::default()
            })
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| ServiceError::Nats(e.to_string()))?;
            let (seq, pending) = msg
                .info()
                .map(|i| (i.stream_sequence, i.pending))
                .unwrap_or((last, 0));
            match serde_json::from_slice::<Event>(&msg.payload) {
                Ok(event) => {
                    events += 1;
                    let id = event.execution_id();
                    // A forged event was refused (and audited) when it arrived.
                    let genuine = provenance.check(&msg.subject, &event).await?
                        == crate::engine::provenance::Provenance::Genuine;
                    match fold(states.get(&id), &event) {
                        _ if !genuine => {}
                        Folded::Changed(s) => {
                            states.insert(id, *s);
                        }
                        Folded::Unchanged => {}
                        Folded::NeedsRequest => orphans += 1,
                    }
                }
                Err(err) => tracing::warn!(error = %err, seq, "skipping malformed event"),
            }
            if seq >= last || pending == 0 {
                break;
            }
        }
    }
    for (id, state) in &states {
        let value = serde_json::to_vec(state).expect("state serialises");
        store
            .put(subjects::execution_key(*id), value.into())
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    }
    Ok(RebuildReport {
        bucket: bucket.into(),
        events,
        executions: states.len(),
        orphans,
    })
}

/// Every execution state in a bucket, by id.
pub async fn read_all(
    js: &jetstream::Context,
    bucket: &str,
) -> Result<BTreeMap<String, ExecutionState>, ServiceError> {
    let store = Bucket::open(js, bucket).await?;
    let mut keys = store
        .raw()
        .keys()
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let mut out = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| ServiceError::Nats(e.to_string()))?;
        if let Some((state, _)) = store.get::<ExecutionState>(&key).await? {
            out.insert(key, state);
        }
    }
    Ok(out)
}
