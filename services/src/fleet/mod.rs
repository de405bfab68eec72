//! The runner fleet as the control plane sees it: enrolled identities, the
//! runner RPC responder (claims, tag sets, secure values, rotation), the
//! lost-runner sweep, and liveness from heartbeats.

pub mod health;
pub mod live;
pub mod registry;
pub mod tag_index;
