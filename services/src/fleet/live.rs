//! The latest heartbeat of every runner replica, kept in memory by one
//! ordered consumer on `OUTPOST_HEARTBEATS` (the last message of each
//! subject, then each new one). A dispatch asks whether any live runner
//! serves its target; reading every heartbeat from the stream for that
//! cost one request per replica of the whole fleet, per dispatch, and was
//! what bounded the drain rate with a large fleet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use futures::StreamExt;
use outpost_schemas::job::Target;
use outpost_schemas::{subjects, RunnerHeartbeat};
use tokio_util::sync::CancellationToken;

use crate::store::watched::{keep_following, Ready};

/// Heartbeats older than this are gone from the stream (its max age).
const KEPT_FOR: chrono::Duration = chrono::Duration::days(1);

#[derive(Clone, Default)]
pub struct LiveHeartbeats {
    /// By subject, `outpost.hb.<runner>.<replica>`.
    latest: Arc<RwLock<HashMap<String, RunnerHeartbeat>>>,
    /// Every heartbeat stored when the consumer started has been read.
    ready: Ready,
}

impl LiveHeartbeats {
    /// Starts following the stream until `shutdown`.
    pub fn start(js: jetstream::Context, shutdown: CancellationToken) -> Self {
        let live = LiveHeartbeats::default();
        tokio::spawn(live.clone().maintain(js, shutdown));
        live
    }

    /// Why a step for `target` cannot start now (see
    /// [`super::health::why_waiting`]), judged in place, without copying the
    /// fleet's heartbeats for each dispatch; `None` inside when a live runner
    /// serves it, and `None` outside while the view has not caught up (for
    /// at most `wait`).
    pub async fn why_waiting(
        &self,
        target: &Target,
        plugins: &BTreeSet<String>,
        wait: Duration,
    ) -> Option<Option<String>> {
        if !self.ready.wait(wait).await {
            return None;
        }
        let oldest = chrono::Utc::now() - KEPT_FOR;
        let latest = self.latest.read().unwrap();
        Some(super::health::why_waiting(
            latest.values().filter(|h| h.header.time > oldest),
            target,
            plugins,
        ))
    }

    async fn maintain(self, js: jetstream::Context, shutdown: CancellationToken) {
        keep_following("heartbeats", shutdown.clone(), || {
            self.follow(&js, &shutdown)
        })
        .await
    }

    async fn follow(
        &self,
        js: &jetstream::Context,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let (stream, state) = crate::stream_with_state(js, subjects::HEARTBEATS_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        // An empty stream delivers nothing to say "caught up".
        if state.messages == 0 {
            self.ready.set();
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: "outpost.hb.>".into(),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Some(msg) = msg else {
                return Err("the heartbeat consumer ended".into());
            };
            let msg = msg.map_err(|e| e.to_string())?;
            let (stored, pending) = match msg.info() {
                Ok(i) => (
                    chrono::DateTime::<chrono::Utc>::from_timestamp(
                        i.published.unix_timestamp(),
                        i.published.nanosecond(),
                    )
                    .unwrap_or_else(chrono::Utc::now),
                    i.pending,
                ),
                Err(_) => (chrono::Utc::now(), 1),
            };
            match serde_json::from_slice::<RunnerHeartbeat>(&msg.payload) {
                Ok(mut hb) => {
                    // As the stream reader does: the subject names the
                    // sender, and the server's clock dates it.
                    hb.runner_id = msg
                        .subject
                        .split('.')
                        .nth(2)
                        .unwrap_or_default()
                        .to_string();
                    hb.header.time = stored;
                    self.latest
                        .write()
                        .unwrap()
                        .insert(msg.subject.to_string(), hb);
                }
                Err(err) => {
                    tracing::warn!(error = %err, subject = %msg.subject, "malformed heartbeat")
                }
            }
            if pending == 0 {
                self.ready.set();
            }
        }
    }
}
