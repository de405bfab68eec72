//! A node job's node run on the wire: the dispatch of node steps × nodes,
//! and what the runner reports per node.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{HandlerOutcome, Header, StepCommand, StepNo, StepOutcome};

/// Node steps × nodes, as one unit of work for one runner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeRunDispatch {
    /// In dispatch order (ranked). Runner-reported nodes come without
    /// credential attributes; the runner restores them from its own source.
    pub nodes: Vec<crate::node::Node>,
    pub steps: Vec<NodeStepCommand>,
    pub strategy: crate::job::Strategy,
    pub threadcount: u32,
    /// `nodefilters.dispatch.keepgoing`.
    pub node_keepgoing: bool,
    /// `sequence.keepgoing`.
    pub step_keepgoing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStepCommand {
    pub step: StepNo,
    pub command: StepCommand,
    /// Run on a node where `command` failed, with `${result.*}` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<StepCommand>,
    /// The handler's `keepgoingOnSuccess`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keepgoing_on_success: bool,
    /// The step's log filters (the workflow's first), which the runner
    /// runs over each node's output of the step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_filters: Vec<crate::job::LogFilter>,
}

/// A node step started on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStepStarted {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub node: String,
    pub runner_id: String,
}

/// A node step ended on one node, or (`outcome` absent) never ran there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStepFinished {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub node: String,
    pub runner_id: String,
    /// The node's result, after its error handler when one ran: Rundeck
    /// replaces a failed node's result with its handler's when the
    /// workflow may go on (`handled_outcome`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What the step's error handler did on this node, if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<HandlerOutcome>,
}
