//! Executions: their state, their output, and aborts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use outpost_schemas::job::Target;
use outpost_schemas::state::{
    ExecutionState, ExecutionStatus, NodeStepState, StepState, StepStatus,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An execution and each of its steps, as the projector last folded them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Execution {
    pub id: Uuid,
    pub project: String,
    pub job_id: Uuid,
    pub job_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_group: Option<String>,
    pub status: ExecutionStatus,
    /// The plain option values it runs with (never the secure ones).
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
    pub steps: Vec<Step>,
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
    /// Time of the latest event folded in.
    pub last_event_at: DateTime<Utc>,
    /// The execution whose job reference step started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_execution_id: Option<Uuid>,
    /// That step, in the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step: Option<u32>,
    /// This execution retries a failed one (the job's `retry`): which
    /// attempt, and of which executions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<outpost_schemas::RetryAttempt>,
    /// The execution that retries this one (its status is then
    /// `failed-with-retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_execution_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Step {
    /// 1-based.
    pub step: u32,
    pub label: String,
    pub target: Target,
    pub status: StepStatus,
    /// The runner that holds (or held) the step.
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
    pub nodes: BTreeMap<String, NodeStep>,
    /// A job reference step: the child execution it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<Uuid>,
    /// The step has an error handler: whether and how it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<ErrorHandler>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorHandler {
    pub keepgoing_on_success: bool,
    /// Absent until it ran (it runs only when the step's own work failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<outpost_schemas::state::HandlerState> for ErrorHandler {
    fn from(h: outpost_schemas::state::HandlerState) -> Self {
        ErrorHandler {
            keepgoing_on_success: h.keepgoing_on_success,
            status: h.status,
            exit_code: h.exit_code,
            reason: h.reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeStep {
    pub status: StepStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The child execution a `nodeStep: true` job reference ran for this
    /// node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<Uuid>,
}

impl From<ExecutionState> for Execution {
    fn from(s: ExecutionState) -> Self {
        Execution {
            id: s.id,
            project: s.project,
            job_id: s.job_id,
            job_name: s.job_name,
            job_group: s.job_group,
            status: s.status,
            options: s.options,
            requested_by: s.requested_by,
            keepgoing: s.keepgoing,
            requested_at: s.requested_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            abort_requested: s.abort_requested,
            steps: s.steps.into_iter().map(Step::from).collect(),
            node_dispatch: s.node_dispatch,
            nodes: s.nodes,
            successful_nodes: s.successful_nodes,
            failed_nodes: s.failed_nodes,
            last_event_at: s.last_event_at,
            parent_execution_id: s.parent_execution_id,
            parent_step: s.parent_step,
            retry: s.retry.clone(),
            retry_execution_id: s.retry_execution_id,
        }
    }
}

impl From<StepState> for Step {
    fn from(s: StepState) -> Self {
        Step {
            step: s.step,
            label: s.label,
            target: s.target,
            status: s.status,
            runner_id: s.runner_id,
            hostname: s.hostname,
            dispatched_at: s.dispatched_at,
            claimed_at: s.claimed_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason,
            log_chunks: s.log_chunks,
            nodes: s
                .nodes
                .into_iter()
                .map(|(n, st)| (n, NodeStep::from(st)))
                .collect(),
            child_execution_id: s.child_execution_id,
            errorhandler: s.errorhandler.map(ErrorHandler::from),
        }
    }
}

impl From<NodeStepState> for NodeStep {
    fn from(s: NodeStepState) -> Self {
        NodeStep {
            status: s.status,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason,
            child_execution_id: s.child_execution_id,
        }
    }
}

/// `GET /project/{project}/executions`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionList {
    pub executions: Vec<Execution>,
}

/// One output line, in Rundeck's `/execution/{id}/output` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputEntry {
    /// `HH:MM:SS`, UTC.
    pub time: String,
    pub absolute_time: DateTime<Utc>,
    pub level: String,
    pub log: String,
    /// 1-based step number, as a string like Rundeck's.
    pub stepctx: String,
    pub runner: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The node, for node steps (Rundeck's `node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Rundeck's log metadata, set by log filters: `content-data-type`
    /// (`application/json`, `text/csv`, …) marks data to render, and
    /// `content-meta:*` keys say how.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
}

/// A page of output (`GET /execution/{id}/output`), and the data of each
/// `output` event of its live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutputPage {
    pub id: Uuid,
    /// Pass back as `offset` to continue after the last entry returned.
    pub offset: String,
    /// The execution is over and every entry has been returned.
    pub completed: bool,
    #[serde(rename = "execCompleted")]
    pub exec_completed: bool,
    /// The execution's status word.
    #[serde(rename = "execState")]
    pub exec_state: String,
    pub entries: Vec<OutputEntry>,
}

/// `POST /execution/{id}/abort`, in Rundeck's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AbortReply {
    pub abort: AbortOutcome,
    pub execution: ExecutionRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AbortOutcome {
    pub status: AbortStatus,
    /// Why it failed: the execution had already ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AbortStatus {
    /// Requested: running steps are being ended.
    Pending,
    Failed,
}

/// An execution and its status at the time of the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionRef {
    pub id: Uuid,
    pub status: ExecutionStatus,
}
