//! The Outpost runner.
//!
//! A runner sits inside a private network, connects outbound to NATS (over
//! WebSocket, directly or through a leaf node), long-polls the dispatch
//! consumers of the tag sets it satisfies, and runs steps as local processes.
//! Entry point: [`Runner::run`]. The control plane embeds the same code as
//! its local runner.

pub mod executor;
pub mod log_filters;
pub mod logs;
pub mod mask;
pub mod node_run;
pub mod node_source;
pub mod outbox;
pub mod plugins;
mod runner;
pub mod script;
pub mod ssh;

pub use runner::{Runner, RunnerError, RunnerOptions, DEFAULT_CAPACITY};

// The shared NATS plumbing, under the name the runner's modules use.
use outpost_bus as bus;
