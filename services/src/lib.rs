//! Outpost's control plane.
//!
//! Three stateless services, each a component with `run(self, shutdown)`:
//! [`api::Api`], [`engine::orchestrator::Orchestrator`] and
//! [`engine::projector::Projector`].
//! [`control_plane::ControlPlane`] runs any set of them (plus the embedded
//! local runner) in one process; `outpost up` adds `nats-server` and a remote
//! runner for a single-machine system.

pub mod api;
pub mod cli;
pub mod config;
pub mod contract;
pub mod control_plane;
pub mod engine;
pub mod fleet;
pub mod formats;
pub mod remote_values;
pub mod security;
pub mod store;
pub mod up;

use async_nats::jetstream;

use store::topology;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Bus(#[from] outpost_bus::BusError),
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
