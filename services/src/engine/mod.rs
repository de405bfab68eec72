//! Executions: the orchestrator drives them, the projector folds their
//! events into state, both through one consumer loop, and provenance
//! decides which runner may report on a step.

mod consume;
pub mod deadline;
mod jobref;
pub mod orchestrator;
pub mod plan;
pub mod projection;
pub mod projector;
pub mod provenance;

pub use consume::{consume, lane_of, MAX_FAILED_DELIVERIES, MAX_PANICS};
pub(crate) use consume::{event_consumer, event_execution, handle_event, Handled};
