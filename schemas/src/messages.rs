//! Every message published on an Outpost subject.
//!
//! Each carries a [`Header`]: schema version, a UUIDv7 message id (sorts by
//! time, and is the JetStream `Nats-Msg-Id` where dedup matters) and a
//! timestamp. Fields are only ever added; a change of meaning bumps
//! [`SCHEMA_VERSION`] and the schema file names.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::{Job, LogLevel, Target};

mod command;
mod node_run;
pub use command::*;
pub use node_run::*;

pub const SCHEMA_VERSION: u32 = 1;

/// Common to every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Header {
    /// Schema version of this message; see `schemas/json/*.v{N}.json`.
    pub schema_version: u32,
    /// UUIDv7 of this message.
    pub message_id: Uuid,
    /// When the publisher created the message (UTC).
    pub time: DateTime<Utc>,
}

impl Header {
    pub fn now() -> Self {
        Header {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::now_v7(),
            time: Utc::now(),
        }
    }
}

impl Default for Header {
    fn default() -> Self {
        Header::now()
    }
}

/// 1-based step number, as in Rundeck's `stepctx`.
pub type StepNo = u32;

/// Published by the API when a run is accepted. Carries a snapshot of the job
/// so that later edits to the job do not change a running execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionRequested {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub project: String,
    pub job_id: Uuid,
    pub job: Job,
    /// Option values after defaults were applied; secure options are not
    /// here (their values are sealed in `OUTPOST_SECRETS`).
    pub options: BTreeMap<String, String>,
    /// Who asked: the API token's name (for a child, its parent's).
    pub requested_by: String,
    /// Set when a job reference step of another execution started this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentExecution>,
    /// Set when this execution retries a failed one (the job's `retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryAttempt>,
}

/// Which attempt of a retried execution this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetryAttempt {
    /// 1 for the first retry (Rundeck's `job.retryAttempt`).
    pub attempt: u32,
    /// The attempt that failed and is retried by this one.
    pub previous_execution_id: Uuid,
    /// The first attempt.
    pub original_execution_id: Uuid,
    /// Not started before this: the failure's time plus the job's retry
    /// delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// The execution, and the step of it, that runs a job as a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParentExecution {
    pub execution_id: Uuid,
    pub step: StepNo,
    /// The jobs from the root execution down to the parent, to refuse a
    /// reference cycle and bound the depth.
    pub chain: Vec<JobLink>,
    /// The parent's node this child runs for (a `nodeStep: true` reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The project whose nodes the child's filter selects from, when not
    /// its own (a reference into another project without `childNodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_project: Option<String>,
    /// `nodeIntersect`: the child runs only on those of its nodes named
    /// here (the parent's nodes, or the one it runs for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intersect: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobLink {
    pub job_id: Uuid,
    pub job_name: String,
}

/// A unit of work on a dispatch subject (and, for the record, on the event
/// stream). Everything a runner needs to run the step is inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepDispatched {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub project: String,
    pub job_id: Uuid,
    pub job_name: String,
    pub target: Target,
    pub command: StepCommand,
    /// Extra environment for the step (`RD_OPTION_*`, `RD_JOB_*`).
    pub env: BTreeMap<String, String>,
    /// Options whose values the runner fetches after claiming the step
    /// (`outpost.rpc.<runner>.secrets`); they are in no message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_options: Vec<String>,
    /// Secure options no step sees (Rundeck's Secure Remote
    /// Authentication): fetched with the others, given only to the
    /// runner's SSH executor (`ssh-password-option`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_options: Vec<String>,
    /// Secure options whose default is a key in the claiming runner's key
    /// store, used when the run gave no value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub option_storage: BTreeMap<String, OptionStorage>,
    pub loglevel: LogLevel,
    /// For a job with `nodefilters`: the whole workflow, to run on these
    /// nodes. `step` and `command` are then its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_run: Option<NodeRunDispatch>,
    /// Run when `command` fails, with `${result.*}` describing the failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<StepCommand>,
    /// The step's own work already failed elsewhere (a job reference's
    /// child execution): `command` is its error handler, to run with this
    /// failure as `${result.*}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovering: Option<StepFailure>,
    /// The job's log limit, which the runner applies to the output it reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loglimit: Option<crate::job::LogLimit>,
    /// The output the execution's earlier steps wrote, which counts
    /// toward `loglimit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_used: Option<crate::job::LogUsage>,
    /// The plain context (`option.x`, `job.x`): the runner replaces script
    /// `@key@` tokens with it, and, with each node's, `${node.x}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// The step's log filters, which the runner runs over its output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_filters: Vec<crate::job::LogFilter>,
}

impl StepDispatched {
    /// The integration plugins (Rundeck types) a runner needs to run this
    /// dispatch: its command's and its error handler's, and in a node run
    /// every node step's and each node's plugin node executor. They choose
    /// its lane ([`crate::subjects::lane`]).
    pub fn plugins(&self) -> std::collections::BTreeSet<String> {
        let node_steps = self.node_run.iter().flat_map(|r| &r.steps);
        let executors = self
            .node_run
            .iter()
            .flat_map(|r| &r.nodes)
            .map(|n| n.executor())
            .filter(|e| {
                [
                    crate::job::ansible::NODE_EXECUTOR,
                    crate::job::winrm::NODE_EXECUTOR,
                    crate::job::kubernetes::NODE_EXECUTOR,
                ]
                .contains(e)
            });
        std::iter::once(&self.command)
            .chain(self.errorhandler.as_ref())
            .chain(node_steps.flat_map(|s| std::iter::once(&s.command).chain(&s.errorhandler)))
            .filter_map(StepCommand::plugin)
            .chain(executors)
            .map(str::to_string)
            .collect()
    }
}

/// Where a secure option's default lives in the runner's key store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OptionStorage {
    /// `keys/...`, as the job wrote it.
    pub path: String,
    /// A required option whose key is missing fails the step before it
    /// starts; an optional one is empty, with a warning in the log.
    #[serde(default)]
    pub required: bool,
}

/// What `${result.*}` tells an error handler, in Rundeck's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepFailure {
    /// `result.reason`: `NonZeroResultCode`, `JobFailed`, `NotFound`, …
    pub reason: String,
    /// `result.message`.
    pub message: String,
    /// `result.resultCode`: the exit code, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_code: Option<i32>,
}

impl StepFailure {
    /// The `result.*` values for substitution and the environment.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::from([
            ("result.reason".to_string(), self.reason.clone()),
            ("result.message".to_string(), self.message.clone()),
        ]);
        if let Some(code) = self.result_code {
            vars.insert("result.resultCode".into(), code.to_string());
        }
        vars
    }
}

/// The orchestrator found no live runner for a dispatched step. The step stays
/// queued and is taken as soon as a matching runner appears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepWaiting {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub reason: String,
}

/// The control plane granted a step's claim to a runner: only the registry
/// publishes it, right after it created the claim and before the runner
/// hears so. It is what the provenance check reads to decide which runner may
/// report on the step, so that verdict lives as long as the events do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepGranted {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    /// The claim's holder.
    pub runner_id: String,
    pub replica_id: Uuid,
    /// The last step the claim covers: a node job's node run covers its
    /// steps `step..=last_step`. Absent in grants from before node runs
    /// were split, which covered a node job's whole workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<StepNo>,
}

/// A runner took a step off its dispatch subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepClaimed {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub runner_id: String,
    pub replica_id: Uuid,
    pub hostname: String,
}

/// The step's process is running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepStarted {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub runner_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by the runner itself (exit status, errors).
    System,
}

/// One line (or one piece of an over-long line) of step output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogEntry {
    pub time: DateTime<Utc>,
    pub stream: LogStream,
    /// Rundeck's level: `NORMAL` for stdout, `ERROR` for stderr.
    pub level: String,
    /// The text, without its trailing newline.
    pub log: String,
    /// The node the line came from, for node steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Rundeck's log metadata: `content-data-type` marks the entry as data
    /// of that type (`application/json`), for a viewer to render.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl LogEntry {
    /// A line written now, on no node, with no metadata.
    pub fn now(stream: LogStream, level: &str, log: impl Into<String>) -> Self {
        LogEntry {
            time: Utc::now(),
            stream,
            level: level.into(),
            log: log.into(),
            node: None,
            meta: BTreeMap::new(),
        }
    }
}

/// A batch of output lines of one step, in order. `seq` counts from 1 per
/// step with no gaps, so a consumer can tell when something is missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogChunk {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub runner_id: String,
    pub seq: u64,
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepOutcome {
    Succeeded,
    Failed,
    Aborted,
}

/// The step ended. Published only after every log chunk of the step was
/// acknowledged by JetStream, so `log_chunks` chunks are already stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepFinished {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub runner_id: String,
    pub outcome: StepOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why, when it did not succeed: `exit code 2`, `killed by signal 9`,
    /// `runner-lost`, `aborted`, `shutdown deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub log_chunks: u64,
    /// The step's error handler ran (its own work failed): how it ended.
    /// `outcome` and `reason` above stay those of the step's own work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<HandlerOutcome>,
    /// With a log limit: the execution's output so far, this step's
    /// included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_used: Option<crate::job::LogUsage>,
    /// The step halted the whole execution (its log limit passed, with
    /// `loglimitAction: halt`): the execution ends with this status,
    /// whatever `keepgoing` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<crate::job::HaltStatus>,
    /// What the step's `key-value-data` log filters captured from its
    /// output: `${data.KEY}` for the later steps.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// A node run's: what each node step's `key-value-data` log filters
    /// captured, in step then node order: `${data.KEY@NODE}`,
    /// `${N:data.KEY@NODE}` and `${data.KEY*}` for the later steps, and
    /// `${data.KEY}` for that node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_data: Vec<NodeData>,
}

/// What one node captured in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeData {
    pub step: StepNo,
    pub node: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HandlerOutcome {
    pub outcome: StepOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a step whose own work failed ends once its error handler ran, as
/// Rundeck decides it: recovered (a success) when the handler succeeded
/// and the workflow may go on (`keepgoing`, or the handler's
/// `keepgoingOnSuccess`); failed otherwise.
pub fn handled_outcome(
    handler: &HandlerOutcome,
    keepgoing: bool,
    keepgoing_on_success: bool,
) -> StepOutcome {
    match handler.outcome {
        StepOutcome::Succeeded if keepgoing || keepgoing_on_success => StepOutcome::Succeeded,
        StepOutcome::Aborted => StepOutcome::Aborted,
        _ => StepOutcome::Failed,
    }
}

/// A job reference step started its child execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRefStarted {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    pub child_execution_id: Uuid,
    pub job_id: Uuid,
    pub job_name: String,
    /// The parent's node it runs for, for a `nodeStep: true` reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A job reference step's own work ended: its child execution finished,
/// or no child could start (`child_execution_id` absent: the job was not
/// found, is disabled, or its options were refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRefFinished {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub step: StepNo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_execution_id: Option<Uuid>,
    pub outcome: StepOutcome,
    /// Rundeck's `result.reason` and message, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
    /// For a `nodeStep: true` reference: the node whose child ended. The
    /// step's own end, once every node's child is over, has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In that end: the nodes whose child never started (a failure without
    /// node keepgoing, or an abort, stopped new ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionOutcome {
    Succeeded,
    Failed,
    Aborted,
    /// Stopped by the job's `timeout` (Rundeck's `timedout`).
    TimedOut,
}

/// The orchestrator decided the execution is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecutionFinished {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub outcome: ExecutionOutcome,
    /// Step numbers that failed (with `keepgoing`, there may be several).
    pub failed_steps: Vec<StepNo>,
    /// Steps never run because an earlier one failed or the run was aborted.
    pub skipped_steps: Vec<StepNo>,
    /// Why, when it did not succeed in the ordinary way (`aborted by …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The execution that retries this one (the job's `retry`); this one
    /// then shows Rundeck's `failed-with-retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_execution_id: Option<Uuid>,
}

/// Someone asked to stop an execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AbortRequested {
    #[serde(flatten)]
    pub header: Header,
    pub execution_id: Uuid,
    pub requested_by: String,
    #[serde(default)]
    pub cause: AbortCause,
}

/// Why an execution is stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AbortCause {
    /// Someone asked (the API, or a parent's abort).
    #[default]
    Requested,
    /// The job's `timeout` passed; the execution ends `timedout`.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunnerState {
    Running,
    Draining,
    Stopped,
}

/// Sent by every runner process about every 5 s, and once on graceful stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunnerHeartbeat {
    #[serde(flatten)]
    pub header: Header,
    pub runner_id: String,
    /// One per process; replicas share `runner_id`.
    pub replica_id: Uuid,
    pub version: String,
    pub hostname: String,
    pub tags: Vec<String>,
    pub local: bool,
    pub running_steps: u32,
    pub capacity: u32,
    pub state: RunnerState,
    /// The steps this replica holds (their claim keys, `<exec>.<step>`):
    /// the lost-runner sweep ends a claimed step its live holder no longer
    /// lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// Step events and log chunks waiting in this replica's outbox for
    /// JetStream's ack, and their size: non-zero after a link cut, until
    /// they are published.
    #[serde(default)]
    pub outbox_entries: u64,
    #[serde(default)]
    pub outbox_bytes: u64,
    /// The integration plugins this replica runs (installed and allowed),
    /// with their versions. A runner binds only the plugin lanes whose
    /// every plugin is here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginVersion>,
    /// Plugins this replica has but its allow-list (`--allowed-plugins`)
    /// leaves out, so that a step that waits for one can say why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins_not_allowed: Vec<String>,
}

/// A plugin a runner can run: its Rundeck type and the version of what
/// runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PluginVersion {
    #[serde(rename = "type")]
    pub plugin_type: String,
    pub version: String,
}

/// The nodes a runner serves from its own node source, sent at start. The
/// runner strips credential attributes first (`Node::redacted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeReport {
    #[serde(flatten)]
    pub header: Header,
    pub runner_id: String,
    pub replica_id: Uuid,
    pub nodes: Vec<crate::node::Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditResult {
    /// Recorded before a mutating API call runs, so that none runs
    /// unrecorded; its outcome follows in a second record with the same
    /// `request_id`. An attempt with no outcome means the API stopped
    /// mid-call (the change may or may not have happened).
    Attempted,
    Success,
    /// Refused for lack of authentication or permission.
    Denied,
    /// Refused as invalid, or failed.
    Error,
}

/// One audited action, on `OUTPOST_AUDIT`: who did what to what, when, from
/// where, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEvent {
    #[serde(flatten)]
    pub header: Header,
    /// Who: the authenticated principal (`anonymous` until API tokens exist).
    pub actor: String,
    /// What: e.g. `POST /api/v1/job/{id}/run`, with the route's placeholders.
    pub action: String,
    /// On what: the concrete path, e.g. `/api/v1/job/0192…/run`.
    pub target: String,
    /// From where: the client's address.
    pub source: String,
    pub result: AuditResult,
    /// The HTTP status returned (403 for refusals outside HTTP, such as a
    /// forged runner event); 0 in an `attempted` record, which has none yet.
    pub status: u16,
    /// Ties an API call's `attempted` record to its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Uuid>,
    /// Why, when the result is not a success and the reason is not obvious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The `<kind>` token of [`StepGranted`] events.
pub const STEP_GRANTED: &str = "step_granted";

/// Everything on the event stream, tagged by `type`.
// An event is decoded, handled and dropped, never kept in bulk: boxing the
// request (which carries its whole job) would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    ExecutionRequested(ExecutionRequested),
    StepDispatched(StepDispatched),
    StepWaiting(StepWaiting),
    StepGranted(StepGranted),
    StepClaimed(StepClaimed),
    StepStarted(StepStarted),
    StepFinished(StepFinished),
    ExecutionFinished(ExecutionFinished),
    AbortRequested(AbortRequested),
    NodeStepStarted(NodeStepStarted),
    NodeStepFinished(NodeStepFinished),
    JobRefStarted(JobRefStarted),
    JobRefFinished(JobRefFinished),
}

impl Event {
    pub fn execution_id(&self) -> Uuid {
        match self {
            Event::ExecutionRequested(e) => e.execution_id,
            Event::StepDispatched(e) => e.execution_id,
            Event::StepWaiting(e) => e.execution_id,
            Event::StepGranted(e) => e.execution_id,
            Event::StepClaimed(e) => e.execution_id,
            Event::StepStarted(e) => e.execution_id,
            Event::StepFinished(e) => e.execution_id,
            Event::ExecutionFinished(e) => e.execution_id,
            Event::AbortRequested(e) => e.execution_id,
            Event::NodeStepStarted(e) => e.execution_id,
            Event::NodeStepFinished(e) => e.execution_id,
            Event::JobRefStarted(e) => e.execution_id,
            Event::JobRefFinished(e) => e.execution_id,
        }
    }

    pub fn header(&self) -> &Header {
        match self {
            Event::ExecutionRequested(e) => &e.header,
            Event::StepDispatched(e) => &e.header,
            Event::StepWaiting(e) => &e.header,
            Event::StepGranted(e) => &e.header,
            Event::StepClaimed(e) => &e.header,
            Event::StepStarted(e) => &e.header,
            Event::StepFinished(e) => &e.header,
            Event::ExecutionFinished(e) => &e.header,
            Event::AbortRequested(e) => &e.header,
            Event::NodeStepStarted(e) => &e.header,
            Event::NodeStepFinished(e) => &e.header,
            Event::JobRefStarted(e) => &e.header,
            Event::JobRefFinished(e) => &e.header,
        }
    }

    /// The `<kind>` token of the event's subject.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ExecutionRequested(_) => "execution_requested",
            Event::StepDispatched(_) => "step_dispatched",
            Event::StepWaiting(_) => "step_waiting",
            Event::StepGranted(_) => STEP_GRANTED,
            Event::StepClaimed(_) => "step_claimed",
            Event::StepStarted(_) => "step_started",
            Event::StepFinished(_) => "step_finished",
            Event::ExecutionFinished(_) => "execution_finished",
            Event::AbortRequested(_) => "abort_requested",
            Event::NodeStepStarted(_) => "node_step_started",
            Event::NodeStepFinished(_) => "node_step_finished",
            Event::JobRefStarted(_) => "jobref_started",
            Event::JobRefFinished(_) => "jobref_finished",
        }
    }

    /// Who published it: a runner id, or the control plane.
    pub fn source(&self) -> &str {
        match self {
            Event::StepClaimed(e) => &e.runner_id,
            Event::StepStarted(e) => &e.runner_id,
            Event::StepFinished(e) => &e.runner_id,
            Event::NodeStepStarted(e) => &e.runner_id,
            Event::NodeStepFinished(e) => &e.runner_id,
            _ => crate::subjects::CONTROL_PLANE_SOURCE,
        }
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        crate::subjects::event(self.kind(), self.execution_id(), self.source())
    }

    /// Dedup id: one per logical event, so a retried publish is stored once.
    pub fn dedup_id(&self) -> String {
        match self {
            // One per step: a redelivered finished event re-dispatches nothing twice.
            Event::StepDispatched(e) => format!("{}.{}.dispatched", e.execution_id, e.step),
            // A claim is created once, so it is granted once.
            Event::StepGranted(e) => format!("{}.{}.granted", e.execution_id, e.step),
            Event::ExecutionFinished(e) => format!("{}.finished", e.execution_id),
            Event::JobRefStarted(e) => match &e.node {
                None => format!("{}.{}.jobref-started", e.execution_id, e.step),
                Some(n) => format!("{}.{}.jobref-started.{}", e.execution_id, e.step, n),
            },
            Event::JobRefFinished(e) => match &e.node {
                None => format!("{}.{}.jobref-finished", e.execution_id, e.step),
                Some(n) => format!("{}.{}.jobref-finished.{}", e.execution_id, e.step, n),
            },
            other => other.header().message_id.to_string(),
        }
    }
}
