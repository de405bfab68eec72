//! The registered tag sets and plugin lanes, kept in memory by a watch on `OUTPOST_TAGSETS`
//! that the registry owns, so that a runner's `tagsets` request (one per
//! runner per heartbeat) reads memory, not the bucket: a key scan creates a
//! JetStream consumer each time, and a fleet of runners made them faster
//! than the server retires them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use outpost_schemas::job::{TagSet, Target};
use outpost_schemas::rpc::LaneTarget;
use outpost_schemas::subjects;
use tokio_util::sync::CancellationToken;

use crate::store::bucket::Bucket;
use crate::store::watched::{keep_following, watch_all, Ready};

#[derive(Clone, Default)]
pub struct TagSetIndex {
    sets: Arc<RwLock<BTreeMap<String, TagSet>>>,
    /// Plugin lanes, by their key (`_lane.<lane>.<target>`).
    lanes: Arc<RwLock<BTreeMap<String, LaneTarget>>>,
    /// The watch has delivered every entry that existed when it started.
    ready: Ready,
}

impl TagSetIndex {
    /// The registered sets that `tags` satisfies, as tokens; `None` while
    /// the index has not caught up with the bucket (for at most `wait`).
    pub async fn satisfied_by(&self, tags: &TagSet, wait: Duration) -> Option<Vec<String>> {
        if !self.ready.wait(wait).await {
            return None;
        }
        let sets = self.sets.read().unwrap();
        Some(
            sets.values()
                .filter(|set| set.satisfied_by(tags))
                .map(TagSet::token)
                .collect(),
        )
    }

    /// The registered plugin lanes whose target `tags` satisfies (`None`:
    /// the local runner's), every one whatever its plugins: the runner
    /// keeps those it can run. `None` outside as for [`Self::satisfied_by`].
    pub async fn lanes_for(
        &self,
        tags: Option<&TagSet>,
        wait: Duration,
    ) -> Option<Vec<LaneTarget>> {
        if !self.ready.wait(wait).await {
            return None;
        }
        let lanes = self.lanes.read().unwrap();
        Some(
            lanes
                .values()
                .filter(|l| match (&l.target, tags) {
                    (Target::Local, None) => true,
                    (Target::Tags(set), Some(tags)) => set.satisfied_by(tags),
                    _ => false,
                })
                .cloned()
                .collect(),
        )
    }

    /// Follows the bucket until `shutdown`, starting again (from the whole
    /// history) when the watch ends, as it does when NATS restarts. Each
    /// set it learns of is announced on `outpost.tagsets.changed`, so that
    /// runners which asked before this index had it ask again.
    pub async fn maintain(
        self,
        client: async_nats::Client,
        bucket: Bucket,
        shutdown: CancellationToken,
    ) {
        keep_following("tag sets", shutdown.clone(), || {
            self.follow(&client, &bucket, &shutdown)
        })
        .await
    }

    async fn follow(
        &self,
        client: &async_nats::Client,
        bucket: &Bucket,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
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
            let learned = self.apply(&entry);
            if entry.delta == 0 {
                self.ready.set();
            }
            if learned && self.ready.is_set() {
                let _ = client
                    .publish(subjects::TAGSETS_CHANGED, bytes::Bytes::new())
                    .await;
            }
        }
    }

    /// Returns whether the entry added a set not known before.
    fn apply(&self, entry: &kv::Entry) -> bool {
        if entry.key.starts_with("_lane.") {
            let mut lanes = self.lanes.write().unwrap();
            if entry.operation != kv::Operation::Put {
                lanes.remove(&entry.key);
                return false;
            }
            return match serde_json::from_slice::<LaneTarget>(&entry.value) {
                Ok(lane) => lanes.insert(entry.key.clone(), lane).is_none(),
                Err(err) => {
                    tracing::warn!(error = %err, key = %entry.key, "skipping an unreadable plugin lane");
                    false
                }
            };
        }
        let mut sets = self.sets.write().unwrap();
        if entry.operation != kv::Operation::Put {
            sets.remove(&entry.key);
            return false;
        }
        match serde_json::from_slice::<TagSet>(&entry.value) {
            Ok(set) => sets.insert(entry.key.clone(), set).is_none(),
            Err(err) => {
                tracing::warn!(error = %err, key = %entry.key, "skipping an unreadable tag set");
                false
            }
        }
    }
}
