//! The orchestrator's per-execution record in `OUTPOST_RUNS`: the planned
//! steps, the step in flight, failures and how the run ended. The
//! orchestrator writes it (compare-and-set); the registry reads it to judge
//! claims. Runners cannot read it. It is internal to the control plane, so
//! no JSON Schema is published for it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{JobRef, LogLevel, NodeDispatch, Strategy, Target};
use crate::node::Node;
use crate::{ExecutionOutcome, ParentExecution, StepCommand, StepFailure, StepNo};

/// One workflow step as planned: work for a runner (`command`), or a job
/// reference the orchestrator runs as a child execution (`jobref`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<StepCommand>,
    /// With `args` and the node filter substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobref: Option<JobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<PlannedHandler>,
    /// A step the orchestrator itself carries out (`flow-control`,
    /// `export-var`): no runner is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlStep>,
    /// Run by the runner over the step's output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_filters: Vec<crate::job::LogFilter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ControlStep {
    /// Go on, or end the run: succeeded or failed.
    FlowControl { halt: Option<bool> },
    /// Set `${group.name}` for the later steps.
    ExportVar { key: String, value: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedHandler {
    pub command: StepCommand,
    pub keepgoing_on_success: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub execution_id: Uuid,
    /// Random, set by the orchestrator when it stores the run, and known
    /// only to the control plane (runners cannot read `OUTPOST_RUNS`). It
    /// salts the dedup ids of the control plane's events, so that a runner
    /// cannot pre-empt them by publishing first under a guessed id.
    #[serde(default, skip_serializing_if = "Uuid::is_nil")]
    pub nonce: Uuid,
    pub project: String,
    pub job_id: Uuid,
    pub job_name: String,
    pub keepgoing: bool,
    pub loglevel: LogLevel,
    pub env: BTreeMap<String, String>,
    /// The plain context (`option.x`, `job.x`) the runner replaces script
    /// tokens and node references with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// What `export-var` steps set (`export.name`), for the later steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exports: BTreeMap<String, String>,
    /// Options whose values only the claiming runner receives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_options: Vec<String>,
    /// Secure options only the runner's SSH executor reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_options: Vec<String>,
    /// Secure options whose default is a key in the runner's key store.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub option_storage: BTreeMap<String, crate::messages::OptionStorage>,
    pub steps: Vec<PlannedStep>,
    /// The step in flight (1-based).
    pub current: StepNo,
    pub failed: Vec<StepNo>,
    pub abort_requested: bool,
    /// The abort came from the job's `timeout`: the run ends `timedout`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// When the job's `timeout` (as this run read it) passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Deadline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglimit: Option<crate::job::LogLimit>,
    /// The job's retry policy as this run read it, and where this run is in
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RunRetry>,
    /// The output written so far, as the last finished step reported it.
    #[serde(default, skip_serializing_if = "crate::job::LogUsage::is_empty")]
    pub log_used: crate::job::LogUsage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finish>,
    /// For a job with `nodefilters`: each run of consecutive node steps is
    /// one dispatch, split around the steps that run once (job references,
    /// flow steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_run: Option<NodeRunPlan>,
    /// The plain option values, which a job reference with `importOptions`
    /// passes on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub requested_by: String,
    /// Set when a job reference step of another execution runs this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentExecution>,
    /// The child execution each job reference step started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<StepNo, Uuid>,
    /// A `nodeStep: true` reference's children, one per node of the run,
    /// in the run's node order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_children: BTreeMap<StepNo, Vec<NodeChild>>,
    /// The current step is a job reference whose child failed: its error
    /// handler is dispatched, with this failure as `${result.*}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovering: Option<StepFailure>,
}

/// One node's child of a `nodeStep: true` job reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeChild {
    pub node: String,
    /// Recorded (compare-and-set) before the child is requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
    /// When it was recorded: its request may be published again (a crash
    /// between the two) only well within the stream's dedup window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::StepOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRetry {
    /// How many retries the job allows.
    pub max: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<u64>,
    /// This run's place: none for the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<crate::RetryAttempt>,
    /// The execution that retries this one, chosen (with compare-and-set)
    /// before this one's end is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Uuid>,
    /// Why a retry the policy allows is not made (the job was deleted, or
    /// its executions disabled, as Rundeck declines it then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<String>,
}

impl RunRetry {
    /// 0 for the first attempt.
    pub fn attempt(&self) -> u32 {
        self.of.as_ref().map_or(0, |r| r.attempt)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deadline {
    pub at: chrono::DateTime<chrono::Utc>,
    /// The timeout's text, options substituted (`6h 30m`).
    pub timeout: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRunPlan {
    /// The filter with `${option.*}` substituted.
    pub filter: String,
    pub dispatch: NodeDispatch,
    pub strategy: Strategy,
    pub step_keepgoing: bool,
    /// Resolved by the orchestrator from the inventory, ranked.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub outcome: ExecutionOutcome,
    pub skipped: Vec<StepNo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
