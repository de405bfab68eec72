//! Outpost's control plane.
//!
//! Three stateless services, each a component with `run(self, shutdown)`:
//! [`api::Api`], [`orchestrator::Orchestrator`] and [`projector::Projector`].
//! [`control_plane::ControlPlane`] runs any set of them (plus the embedded
//! local runner) in one process; `outpost up` adds `nats-server` and a remote
//! runner for a single-machine system.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod control_plane;
pub mod dev_tls;
pub mod fleet;
pub mod job_yaml;
pub mod orchestrator;
pub mod plan;
pub mod projection;
pub mod projector;
pub mod provenance;
pub mod registry;
pub mod security;
pub mod store;
pub mod topology;
pub mod up;

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Bus(#[from] outpost_runner::bus::BusError),
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, ServiceError> {
    js.get_key_value(name)
        .await
        .map_err(|e| ServiceError::Nats(format!("bucket {name}: {e}")))
}

/// A durable pull consumer on the event stream, created by `topology::ensure`.
pub(crate) async fn event_consumer(
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ServiceError> {
    js.get_consumer_from_stream(name, outpost_schemas::subjects::EVENTS_STREAM)
        .await
        .map_err(|e| ServiceError::Nats(format!("consumer {name}: {e}")))
}

/// A stream and its current state (message count, first and last sequence).
pub(crate) async fn stream_with_state(
    js: &jetstream::Context,
    name: &str,
) -> Result<(jetstream::stream::Stream, jetstream::stream::State), ServiceError> {
    let nats = |e: String| ServiceError::Nats(format!("stream {name}: {e}"));
    let mut stream = js.get_stream(name).await.map_err(|e| nats(e.to_string()))?;
    let state = stream
        .info()
        .await
        .map_err(|e| nats(e.to_string()))?
        .state
        .clone();
    Ok((stream, state))
}

/// Pulls from a durable consumer until `shutdown`, handling messages in
/// `lanes` sequential lanes chosen by `key`: messages with the same key (an
/// execution id) are handled one at a time in stream order, different keys
/// in parallel. The pull is a long poll, so a message is handled as soon as
/// it is stored.
pub(crate) async fn consume<F, Fut>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    shutdown: CancellationToken,
    lanes: usize,
    key: fn(&str) -> &str,
    handler: F,
) where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    use std::hash::{Hash, Hasher};
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
        .map(|_| tokio::sync::mpsc::channel::<jetstream::Message>(64))
        .unzip();
    let workers = futures::future::join_all(receivers.into_iter().map(|mut rx| {
        let handler = &handler;
        async move {
            while let Some(m) = rx.recv().await {
                handler(m).await;
            }
        }
    }));
    let pull = async move {
        while !shutdown.is_cancelled() {
            let messages = consumer
                .stream()
                .max_messages_per_batch(lanes.max(16))
                .expires(Duration::from_secs(5))
                .heartbeat(Duration::from_secs(2))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => Box::pin(m.take_until(shutdown.cancelled())),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot pull; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => break,
                    }
                }
            };
            while let Some(m) = messages.next().await {
                match m {
                    Ok(m) => {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        key(&m.subject).hash(&mut h);
                        let lane = (h.finish() % lanes as u64) as usize;
                        if senders[lane].send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => tracing::debug!(error = %err, "pull interrupted"),
                }
            }
        }
        // Dropping the senders lets the lanes finish what they hold.
    };
    futures::future::join(pull, workers).await;
}

/// The execution id token of an event subject, `outpost.ev.<kind>.<exec>.<source>`.
pub(crate) fn event_execution(subject: &str) -> &str {
    subject.split('.').nth(3).unwrap_or(subject)
}
