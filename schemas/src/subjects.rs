//! Subjects, streams and buckets: the NATS topology's names.
//!
//! ```text
//! outpost.dispatch.<target>.<execution_id>.<step>     OUTPOST_DISPATCH (work queue)
//! outpost.pdispatch.<lane>.<target>.<exec>.<step>     OUTPOST_DISPATCH_P_<lane> (work queue)
//! outpost.ev.<kind>.<execution_id>.<source>           OUTPOST_EVENTS
//! outpost.log.<execution_id>.<step>.<runner_id>       OUTPOST_LOGS
//! outpost.hb.<runner_id>.<replica_id>                 OUTPOST_HEARTBEATS
//! outpost.nodes.<runner_id>                           OUTPOST_NODE_REPORTS
//! outpost.abort.<runner_id>.<execution_id>            core NATS (no stream)
//! outpost.rpc.<runner_id>.<op>                        core NATS request/reply
//! outpost.tagsets.changed                             core NATS (no payload)
//! outpost.audit.<source>                              OUTPOST_AUDIT
//! ```
//!
//! **Runner subject space.** Everything a runner publishes carries its id in
//! a fixed token, so that one permission pattern per subject kind confines a
//! runner to its own space (see `ARCHITECTURE.md`, "Security model"). A
//! runner asks the control plane for what it may not read itself (claims,
//! the tag sets it serves, secure option values) over `outpost.rpc.<id>.*`;
//! the responder trusts the id in the subject, which the runner's NATS
//! permissions fix.
//!
//! **Partitioning.** `<target>` is `_local` for the control plane's local runner,
//! or the canonical token of a tag set: its tags sorted, deduplicated and
//! joined by `+` (`linux+prod`). Each distinct token has exactly one durable
//! pull consumer, `dispatch_<token>`, filtered on `outpost.dispatch.<token>.>`.
//! Filters of different tokens never overlap, as a work-queue stream demands.
//! A runner binds to the consumer of every registered tag set that is a subset
//! of its own tags; runners and replicas bound to one consumer share its
//! messages, each delivered to one of them. Tag sets are registered in the
//! `OUTPOST_TAGSETS` bucket by the orchestrator before the first dispatch to
//! them; it then announces `outpost.tagsets.changed`, and each runner asks
//! `outpost.rpc.<id>.tagsets` which sets it serves.
//!
//! **Plugin lanes.** A step that needs integration plugins (a plugin step,
//! a plugin error handler, a node run with plugin node steps) goes to the
//! lane of that set of plugins instead: a work-queue stream of its own,
//! `OUTPOST_DISPATCH_P_<lane>`, with one consumer per target named as in
//! `OUTPOST_DISPATCH` (`dispatch_<token>`). A runner binds a lane's
//! consumers only when it can run every plugin of the lane (installed and
//! allowed), so a step reaches no runner that would have to hand it back.
//! The lane is in the stream's name and the target in the consumer's, so
//! a runner's permissions (`MSG.NEXT.*.dispatch_<token>`) still name only
//! its own tag sets, whatever plugins exist.

use std::collections::BTreeSet;

use uuid::Uuid;

pub const DISPATCH_STREAM: &str = "OUTPOST_DISPATCH";
pub const EVENTS_STREAM: &str = "OUTPOST_EVENTS";
pub const LOGS_STREAM: &str = "OUTPOST_LOGS";
pub const HEARTBEATS_STREAM: &str = "OUTPOST_HEARTBEATS";
pub const NODE_REPORTS_STREAM: &str = "OUTPOST_NODE_REPORTS";
pub const AUDIT_STREAM: &str = "OUTPOST_AUDIT";
/// Messages a consumer could not read, with why (headers).
pub const DEADLETTER_STREAM: &str = "OUTPOST_DEADLETTER";
/// Header of a dead letter: the subject it was received on.
pub const DLQ_SUBJECT_HEADER: &str = "Outpost-Dlq-Subject";
/// Header of a dead letter: why it could not be handled.
pub const DLQ_ERROR_HEADER: &str = "Outpost-Dlq-Error";
/// Header of a dead letter: its stream sequence where it was received.
pub const DLQ_SEQUENCE_HEADER: &str = "Outpost-Dlq-Sequence";
/// Audit events of the API.
pub const AUDIT_API: &str = "outpost.audit.api";

pub const JOBS_BUCKET: &str = "OUTPOST_JOBS";
pub const EXECUTIONS_BUCKET: &str = "OUTPOST_EXECUTIONS";
/// Each project's executions: keys `<project>.<exec>`, empty values.
pub const EXECUTION_INDEX_BUCKET: &str = "OUTPOST_EXECUTION_INDEX";
pub const RUNS_BUCKET: &str = "OUTPOST_RUNS";
/// Each job's running executions, for `multipleExecutions` limits.
pub const RUNNING_BUCKET: &str = "OUTPOST_RUNNING";
/// Running executions' timeout deadlines, which the orchestrator watches.
pub const DEADLINES_BUCKET: &str = "OUTPOST_DEADLINES";
pub const TAGSETS_BUCKET: &str = "OUTPOST_TAGSETS";
pub const PROJECTS_BUCKET: &str = "OUTPOST_PROJECTS";
pub const CLAIMS_BUCKET: &str = "OUTPOST_CLAIMS";
pub const NODES_BUCKET: &str = "OUTPOST_NODES";
/// Enrolled runner identities (public keys and state; no secrets).
pub const RUNNERS_BUCKET: &str = "OUTPOST_RUNNERS";
/// API tokens: SHA-256 hashes and roles, never the tokens.
pub const TOKENS_BUCKET: &str = "OUTPOST_TOKENS";
/// Steps claimed and not yet known finished: what the lost-runner sweep
/// watches.
pub const ACTIVE_BUCKET: &str = "OUTPOST_ACTIVE";
/// Secure option values, sealed with the control plane's secrets key.
pub const SECRETS_BUCKET: &str = "OUTPOST_SECRETS";

/// Audit events of the control plane's checks on runner events.
pub const AUDIT_EVENTS: &str = "outpost.audit.events";
/// Announced (no payload) when a tag set is registered.
pub const TAGSETS_CHANGED: &str = "outpost.tagsets.changed";

/// Runner requests to the control plane.
pub mod rpc {
    pub const CLAIM: &str = "claim";
    pub const TAGSETS: &str = "tagsets";
    pub const SECRETS: &str = "secrets";
    pub const ROTATED: &str = "rotated";
    /// Queue group of the responders, so that each request is answered once.
    pub const QUEUE: &str = "outpost-registry";
}

pub fn rpc(runner_id: &str, op: &str) -> String {
    format!("outpost.rpc.{runner_id}.{op}")
}

/// Requests of every runner, for the responder.
pub fn rpc_all(op: &str) -> String {
    format!("outpost.rpc.*.{op}")
}

pub const ORCHESTRATOR_CONSUMER: &str = "orchestrator";
pub const PROJECTOR_CONSUMER: &str = "projector";

/// Dispatch token of the local runner. Tags cannot start with `_`.
pub const LOCAL_TOKEN: &str = "_local";
/// Runner id of the embedded local runner.
pub const LOCAL_RUNNER_ID: &str = "_local";
/// Event source token of control-plane services. Runner ids cannot start with `_`.
pub const CONTROL_PLANE_SOURCE: &str = "_cp";

pub const DEFAULT_PROJECT: &str = "default";

pub fn dispatch(token: &str, execution_id: Uuid, step: u32) -> String {
    format!("outpost.dispatch.{token}.{}.{step}", execution_id.simple())
}

pub fn dispatch_filter(token: &str) -> String {
    format!("outpost.dispatch.{token}.>")
}

pub fn dispatch_consumer(token: &str) -> String {
    format!("dispatch_{token}")
}

/// Prefix of every plugin lane's stream.
pub const LANE_STREAM_PREFIX: &str = "OUTPOST_DISPATCH_P_";
/// Lane names longer than this are hashed, to keep stream names short.
const MAX_LANE_NAME: usize = 64;

/// The lane of a step that needs `plugins` (Rundeck types), or none when it
/// needs none. Each type gives the last part of its name, lowercased
/// (`edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`: `httpworkflowstepplugin`);
/// several are sorted and joined by `_`, and a long join is hashed.
///
/// Two sets can share a readable name (`com.a.Step` and `org.b.step`);
/// the control plane then puts the second on [`hashed_lane`], see
/// `topology::ensure_lane`.
pub fn lane(plugins: &BTreeSet<String>) -> Option<String> {
    if plugins.is_empty() {
        return None;
    }
    let mut names: Vec<String> = plugins.iter().map(|p| lane_part(p)).collect();
    names.sort();
    names.dedup();
    let joined = names.join("_");
    if joined.len() <= MAX_LANE_NAME {
        return Some(joined);
    }
    Some(hashed_lane(plugins))
}

/// The lane name of `plugins` from a hash of their full names.
pub fn hashed_lane(plugins: &BTreeSet<String>) -> String {
    // FNV-1a: stable across builds and replicas, which is all it needs.
    let hash = plugins
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("x{hash:016x}")
}

fn lane_part(plugin: &str) -> String {
    plugin
        .rsplit('.')
        .next()
        .unwrap_or(plugin)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

pub fn lane_stream(lane: &str) -> String {
    format!("{LANE_STREAM_PREFIX}{lane}")
}

pub fn lane_subjects(lane: &str) -> String {
    format!("outpost.pdispatch.{lane}.>")
}

pub fn lane_dispatch(lane: &str, token: &str, execution_id: Uuid, step: u32) -> String {
    format!(
        "outpost.pdispatch.{lane}.{token}.{}.{step}",
        execution_id.simple()
    )
}

pub fn lane_dispatch_filter(lane: &str, token: &str) -> String {
    format!("outpost.pdispatch.{lane}.{token}.>")
}

/// The stream a dispatch to `lane` (none: `OUTPOST_DISPATCH`) goes to.
pub fn dispatch_stream(lane: Option<&str>) -> String {
    match lane {
        None => DISPATCH_STREAM.to_string(),
        Some(l) => lane_stream(l),
    }
}

/// The subject of a dispatch, on its lane's stream.
pub fn dispatch_on(lane: Option<&str>, token: &str, execution_id: Uuid, step: u32) -> String {
    match lane {
        None => dispatch(token, execution_id, step),
        Some(l) => lane_dispatch(l, token, execution_id, step),
    }
}

/// KV key of a registered lane target in `OUTPOST_TAGSETS`: tags cannot
/// start with `_`, so these never meet a tag set's key.
pub fn lane_key(lane: &str, token_parts: &[String]) -> String {
    format!("_lane.{lane}.{}", token_parts.join("."))
}

pub fn event(kind: &str, execution_id: Uuid, source: &str) -> String {
    format!("outpost.ev.{kind}.{}.{source}", execution_id.simple())
}

/// All events of one execution, for replay.
pub fn events_of(execution_id: Uuid) -> String {
    format!("outpost.ev.*.{}.*", execution_id.simple())
}

/// Event kinds that drive the orchestrator.
pub fn orchestrator_filters() -> Vec<String> {
    [
        "execution_requested",
        "step_finished",
        "abort_requested",
        "jobref_finished",
    ]
    .iter()
    .map(|k| format!("outpost.ev.{k}.>"))
    .collect()
}

pub fn log(execution_id: Uuid, step: u32, runner_id: &str) -> String {
    format!("outpost.log.{}.{step}.{runner_id}", execution_id.simple())
}

/// One execution's whole log.
pub fn logs_of(execution_id: Uuid) -> String {
    format!("outpost.log.{}.>", execution_id.simple())
}

pub fn heartbeat(runner_id: &str, replica_id: Uuid) -> String {
    format!("outpost.hb.{runner_id}.{}", replica_id.simple())
}

/// Where `source` (`_cp` or a runner id) dead-letters what `consumer`
/// could not read.
pub fn dead_letter(source: &str, consumer: &str) -> String {
    format!("outpost.dlq.{source}.{consumer}")
}

pub fn node_report(runner_id: &str) -> String {
    format!("outpost.nodes.{runner_id}")
}

/// An abort notice, sent to the runner that claimed the execution's step.
pub fn abort(runner_id: &str, execution_id: Uuid) -> String {
    format!("outpost.abort.{runner_id}.{}", execution_id.simple())
}

/// Control notices to a runner's replicas: `ping`, `drain`.
pub fn runner_control(runner_id: &str, what: &str) -> String {
    format!("outpost.ctl.{runner_id}.{what}")
}

pub fn runner_abort_prefix(runner_id: &str) -> String {
    format!("outpost.abort.{runner_id}")
}

/// KV key of a step's claim: whoever creates it runs the step.
pub fn claim_key(execution_id: Uuid, step: u32) -> String {
    format!("{}.{step}", execution_id.simple())
}

/// KV key of an execution's state (and of its orchestration cursor).
pub fn execution_key(execution_id: Uuid) -> String {
    execution_id.simple().to_string()
}

/// KV key of a registered tag set: its tags joined by `.` (KV keys allow no `+`).
pub fn tagset_key(tags: &[String]) -> String {
    tags.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(types: &[&str]) -> BTreeSet<String> {
        types.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn each_plugin_has_its_own_lane() {
        let mut seen = BTreeSet::new();
        for (t, _, _) in crate::job::STEP_TYPES {
            let lane = lane(&set(&[t])).unwrap();
            assert!(seen.insert(lane.clone()), "{t} shares lane {lane}");
            assert!(lane.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        }
    }

    #[test]
    fn lanes_are_named_by_their_plugins() {
        let http = "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin";
        let node = "edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin";
        let ansible = "com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowNodeStep";
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&[http], Some("httpworkflowstepplugin")),
            (
                &[node, http],
                Some("httpworkflownodestepplugin_httpworkflowstepplugin"),
            ),
            (&[node, http, ansible], Some("x9485c698d3640f5f")),
        ];
        for (types, want) in cases {
            assert_eq!(lane(&set(types)).as_deref(), *want, "{types:?}");
        }
        assert_eq!(
            lane_stream("httpworkflowstepplugin"),
            "OUTPOST_DISPATCH_P_httpworkflowstepplugin"
        );
    }
}
