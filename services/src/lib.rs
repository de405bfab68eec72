//! Outpost's control plane.
//!
//! Three stateless services, each a component with `run(self, shutdown)`:
//! [`api::Api`], [`orchestrator::Orchestrator`] and [`projector::Projector`].
//! [`control_plane::ControlPlane`] runs any set of them (plus the embedded
//! local runner) in one process; `outpost up` adds `nats-server` and a remote
//! runner for a single-machine system.

pub mod api;
pub mod cli;
pub mod config;
pub mod control_plane;
pub mod fleet;
pub mod job_yaml;
pub mod orchestrator;
pub mod plan;
pub mod projection;
pub mod projector;
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

/// Pulls from a durable consumer until `shutdown`, handling up to
/// `concurrency` messages at once. The pull is a long poll, so a message is
/// handled as soon as it is stored.
pub(crate) async fn consume<F, Fut>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    shutdown: CancellationToken,
    concurrency: usize,
    handler: F,
) where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()>,
{
    while !shutdown.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await;
        let messages = match messages {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!(error = %err, "cannot pull; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        messages
            .take_until(shutdown.cancelled())
            .for_each_concurrent(concurrency, |m| async {
                match m {
                    Ok(m) => handler(m).await,
                    Err(err) => tracing::debug!(error = %err, "pull interrupted"),
                }
            })
            .await;
    }
}
