//! The job model, in Rundeck's job YAML shape.
//!
//! Keys follow Rundeck's export format (`loglevel`, `sequence.keepgoing`,
//! `runnerSelector`, …) so that a Rundeck user's YAML loads unchanged. Unknown
//! keys are rejected rather than ignored: a misspelt `keepgoing` that silently
//! did nothing would be worse than an error. Semantic checks run inside
//! deserialisation (`try_from`) so that the YAML parser can attach a line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod arg_string;
mod compat;
mod jobref;
mod nodes;
mod option;
mod step;
mod target;

pub use compat::{flag, Flag, NotYet, NOT_SUPPORTED_YET};
pub use jobref::*;
pub use nodes::*;
pub use option::*;
pub use step::*;
pub use target::*;

/// Longest tag, option or runner name we accept; keeps subject tokens short.
pub const MAX_NAME_LEN: usize = 64;

/// One job definition: one element of Rundeck's YAML job list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawJob")]
pub struct Job {
    /// Stable identity. Generated (UUIDv7) when the YAML has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    pub name: String,
    /// Slash-separated group path, as in Rundeck (`ops/web`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub loglevel: LogLevel,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<JobOption>,
    pub sequence: Sequence,
    /// Where the job's steps run; absent means the control plane's local runner.
    #[serde(
        rename = "runnerSelector",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runner_selector: Option<RunnerSelector>,
    #[serde(rename = "executionEnabled", default = "yes")]
    pub execution_enabled: bool,
    /// Node dispatch: the job's steps run on the nodes the filter selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodefilters: Option<NodeFilters>,
}

fn yes() -> bool {
    true
}

/// What the YAML may hold before semantic checks. Includes keys that Rundeck
/// exports but that carry no behaviour here (`defaultTab`, …) so that exports
/// import cleanly.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawJob {
    #[serde(default)]
    uuid: Option<String>,
    /// Rundeck exports carry both `id` and `uuid`, with the same value.
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    loglevel: LogLevel,
    #[serde(default)]
    options: Vec<JobOption>,
    sequence: Sequence,
    #[serde(rename = "runnerSelector", default)]
    runner_selector: Option<RunnerSelector>,
    #[serde(
        rename = "executionEnabled",
        default = "yes",
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    execution_enabled: bool,
    // Accepted for Rundeck compatibility; no behaviour (UI hints, and a
    // project the import's own project overrides, as in Rundeck).
    #[serde(rename = "defaultTab", default)]
    _default_tab: Option<String>,
    #[serde(rename = "scheduleEnabled", default)]
    _schedule_enabled: Option<Flag>,
    #[serde(rename = "nodeFilterEditable", default)]
    _node_filter_editable: Option<Flag>,
    #[serde(rename = "project", default)]
    _project: Option<String>,
    /// Outpost runs a job's executions side by side, as Rundeck does with
    /// `multipleExecutions: true`; `false` (a limit of one) is not built.
    #[serde(rename = "multipleExecutions", default)]
    multiple_executions: Option<Flag>,
    #[serde(default)]
    nodefilters: Option<NodeFilters>,
    #[serde(rename = "nodesSelectedByDefault", default)]
    _nodes_selected_by_default: Option<Flag>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "schedule", default)]
    _schedule: NotYet,
    #[serde(rename = "schedules", default)]
    _schedules: NotYet,
    #[serde(rename = "timeZone", default)]
    _time_zone: NotYet,
    #[serde(rename = "notification", default)]
    _notification: NotYet,
    #[serde(rename = "notifyAvgDurationThreshold", default)]
    _notify_avg_duration_threshold: NotYet,
    #[serde(rename = "retry", default)]
    _retry: NotYet,
    #[serde(rename = "retryDelay", default)]
    _retry_delay: NotYet,
    #[serde(rename = "timeout", default)]
    _timeout: NotYet,
    #[serde(rename = "loglimit", default)]
    _loglimit: NotYet,
    #[serde(rename = "loglimitAction", default)]
    _loglimit_action: NotYet,
    #[serde(rename = "loglimitStatus", default)]
    _loglimit_status: NotYet,
    #[serde(rename = "maxMultipleExecutions", default)]
    _max_multiple_executions: NotYet,
    #[serde(rename = "orchestrator", default)]
    _orchestrator: NotYet,
    #[serde(rename = "plugins", default)]
    _plugins: NotYet,
    #[serde(rename = "excludeFilterUncheck", default)]
    _exclude_filter_uncheck: NotYet,
    #[serde(rename = "user", default)]
    _user: NotYet,
}

impl TryFrom<RawJob> for Job {
    type Error = String;

    fn try_from(raw: RawJob) -> Result<Self, String> {
        let parse_uuid = |key: &str, s: &str| {
            Uuid::parse_str(s)
                .map_err(|e| format!("job `{}`: `{key}` is not a UUID: {e}", raw.name))
        };
        let uuid = match (&raw.uuid, &raw.id) {
            (Some(u), Some(i)) if u != i => {
                return Err(format!(
                    "job `{}`: `id` ({i}) and `uuid` ({u}) differ",
                    raw.name
                ))
            }
            (Some(u), _) => Some(parse_uuid("uuid", u)?),
            (None, Some(i)) => Some(parse_uuid("id", i)?),
            (None, None) => None,
        };
        let name = raw.name.trim().to_string();
        if name.is_empty() {
            return Err("job `name` is empty".into());
        }
        if raw.multiple_executions == Some(Flag(false)) {
            return Err(format!(
                "job `{name}`: {NOT_SUPPORTED_YET}: multipleExecutions: false (a limit of one execution at a time); Outpost runs a job's executions side by side, as with `multipleExecutions: true`"
            ));
        }
        if name.contains('/') {
            return Err(format!(
                "job name `{name}` contains `/`; put the path in `group`"
            ));
        }
        let group = match raw.group.as_deref().map(|g| g.trim().trim_matches('/')) {
            None | Some("") => None,
            Some(g) => {
                if g.split('/').any(|seg| seg.trim().is_empty()) {
                    return Err(format!(
                        "job `{name}`: group `{g}` has an empty path segment"
                    ));
                }
                Some(g.to_string())
            }
        };
        let mut seen = BTreeSet::new();
        for opt in &raw.options {
            if !seen.insert(opt.name.as_str()) {
                return Err(format!(
                    "job `{name}`: option `{}` is defined twice",
                    opt.name
                ));
            }
        }
        let defined: BTreeSet<&str> = raw.options.iter().map(|o| o.name.as_str()).collect();
        for (i, cmd) in raw.sequence.commands.iter().enumerate() {
            for text in cmd.texts() {
                for reference in option_references(text) {
                    if !defined.contains(reference) {
                        return Err(format!(
                            "job `{name}`: step {} uses ${{option.{reference}}}, but the job defines no option `{reference}`",
                            i + 1
                        ));
                    }
                }
            }
        }
        if raw.nodefilters.is_some() {
            for (i, c) in raw.sequence.commands.iter().enumerate() {
                let what = match (&c.jobref, &c.errorhandler) {
                    (Some(_), _) => "a jobref step",
                    (None, Some(_)) => "an errorhandler",
                    (None, None) => continue,
                };
                return Err(format!(
                    "job `{name}`: step {}: {NOT_SUPPORTED_YET}: {what} in a job with nodefilters (a node job's workflow runs as one unit on one runner; see ARCHITECTURE.md, \"Job references and error handlers\")",
                    i + 1
                ));
            }
            if let Some(i) = raw
                .sequence
                .commands
                .iter()
                .position(|c| c.runner_selector.is_some())
            {
                return Err(format!(
                    "job `{name}`: step {} has its own runnerSelector, but node steps run through one runner; set runnerSelector on the job",
                    i + 1
                ));
            }
        }
        Ok(Job {
            uuid,
            name,
            group,
            description: raw.description.unwrap_or_default(),
            loglevel: raw.loglevel,
            options: raw.options,
            sequence: raw.sequence,
            runner_selector: raw.runner_selector,
            execution_enabled: raw.execution_enabled,
            nodefilters: raw.nodefilters,
        })
    }
}

impl Job {
    /// `group/name`, or just `name`: how Rundeck users refer to a job.
    pub fn full_name(&self) -> String {
        match &self.group {
            Some(g) => format!("{g}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The job references of its steps.
    pub fn references(&self) -> impl Iterator<Item = &JobRef> {
        self.sequence
            .commands
            .iter()
            .filter_map(|c| c.jobref.as_ref())
    }

    /// Where step `index` (0-based) runs: its own selector, else the job's.
    pub fn step_target(&self, index: usize) -> Target {
        self.sequence.commands[index]
            .runner_selector
            .as_ref()
            .or(self.runner_selector.as_ref())
            .map(RunnerSelector::target)
            .unwrap_or(Target::Local)
    }
}

/// The names used in `${option.NAME}` references inside `text`.
pub fn option_references(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("${option.").filter_map(move |(at, m)| {
        let rest = &text[at + m.len()..];
        let end = rest.find('}')?;
        Some(&rest[..end])
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    Debug,
    Verbose,
    #[default]
    Info,
    Warn,
    Error,
}

/// Replaces `${key}` for every known key; unknown references stay as they are.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) if vars.contains_key(&after[..end]) => {
                out.push_str(&vars[&after[..end]]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The environment variable of an option, as Rundeck names it:
/// `RD_OPTION_` and the name in upper case, other characters as `_`.
pub fn option_env_name(name: &str) -> String {
    let suffix: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("RD_OPTION_{suffix}")
}
