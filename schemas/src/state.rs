//! Projected state: what the projector folds the event stream into, stored in
//! the `OUTPOST_EXECUTIONS` bucket and served by the API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::Target;
use crate::messages::StepNo;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Accepted; no step has started yet.
    Queued,
    Running,
    Succeeded,
    Failed,
    Aborted,
    /// Stopped by the job's `timeout`, as Rundeck's `timedout`.
    TimedOut,
    /// Failed (or timed out), and retried by another execution.
    #[serde(rename = "failed-with-retry")]
    FailedWithRetry,
}

impl ExecutionStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Aborted | Self::TimedOut | Self::FailedWithRetry
        )
    }
}

/// Ordered by progress: the projector never moves a step backwards, which is
/// what makes the fold indifferent to redelivery and reordering.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Dispatched,
    /// Dispatched, but no live runner matches; see `reason`.
    Waiting,
    Claimed,
    Running,
    Succeeded,
    Failed,
    Aborted,
    /// Never ran: an earlier step failed without `keepgoing`, or an abort.
    Skipped,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        self >= Self::Succeeded
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepState {
    pub step: StepNo,
    pub label: String,
    pub target: Target,
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the step waits or did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub log_chunks: u64,
    /// Per node, for node steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, NodeStepState>,
    /// A job reference step: the child execution it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<Uuid>,
    /// The step has an error handler: whether and how it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<HandlerState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HandlerState {
    pub keepgoing_on_success: bool,
    /// Absent until it ran (it runs only when the step's own work failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStepState {
    pub status: StepStatus,
    /// The child execution a `nodeStep: true` job reference ran for this
    /// node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionState {
    pub id: Uuid,
    pub project: String,
    pub job_id: Uuid,
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_group: Option<String>,
    pub status: ExecutionStatus,
    pub options: BTreeMap<String, String>,
    pub requested_by: String,
    pub keepgoing: bool,
    pub requested_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub abort_requested: bool,
    pub steps: Vec<StepState>,
    /// The job dispatches to nodes (`nodefilters`).
    #[serde(default)]
    pub node_dispatch: bool,
    /// Target nodes of a node-dispatch job, in dispatch order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Nodes on which every step that ran succeeded (Rundeck's `successfulNodes`).
    #[serde(
        rename = "successfulNodes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub successful_nodes: Vec<String>,
    /// Nodes on which a step failed (Rundeck's `failedNodes`).
    #[serde(rename = "failedNodes", default, skip_serializing_if = "Vec::is_empty")]
    pub failed_nodes: Vec<String>,
    /// Time of the latest event folded in (the maximum, so order does not matter).
    pub last_event_at: DateTime<Utc>,
    /// Set when a job reference step of another execution started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step: Option<StepNo>,
    /// This execution retries a failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<crate::messages::RetryAttempt>,
    /// The execution that retries this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_execution_id: Option<Uuid>,
}
