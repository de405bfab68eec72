//! What the control plane keeps for people to read: nodes, the audit trail
//! and dead letters.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use outpost_schemas::node::Node as NodeDefinition;
use outpost_schemas::AuditEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::store::NodeSource;

/// A node (`GET /project/{project}/resources`): its definition and where it
/// came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    #[serde(flatten)]
    pub node: NodeDefinition,
    pub source: NodeSource,
}

/// `PUT /project/{project}/resources`: how many nodes the project has now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodesLoaded {
    pub project: String,
    pub nodes: usize,
}

/// One record of `GET /audit`: an audit event and its place in the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Its sequence in the trail; pass as `after` to read what follows.
    pub seq: u64,
    /// The event as the audit stream holds it
    /// (`schemas/json/audit_event.v1.json`).
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// `GET /deadletters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetters {
    /// Dead letters per `outpost.dlq.<source>.<consumer>` subject.
    pub counts: BTreeMap<String, u64>,
    /// The newest (at most 50), newest last.
    pub recent: Vec<DeadLetter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    pub seq: u64,
    /// The dead-letter subject: which consumer gave up.
    pub consumer: String,
    /// The subject the message was first published on.
    pub subject: String,
    /// Why it could not be handled.
    pub error: String,
    pub time: DateTime<Utc>,
    /// The payload as text (lossy), at most 4 KiB.
    pub payload: String,
}

impl From<crate::store::NodeView> for Node {
    fn from(v: crate::store::NodeView) -> Self {
        Node {
            node: v.node,
            source: v.source,
        }
    }
}
