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
pub mod data_refs;
mod duration;
mod jobref;
mod log_filter;
mod loglimit;
mod nodes;
mod notification;
mod option;
mod plugin;
mod retry;
mod schedule;
mod step;
mod target;

use compat::is_false;
pub use compat::{flag, Flag, NotYet, NOT_SUPPORTED_YET};
pub use duration::parse_timeout;
pub use jobref::*;
pub use log_filter::*;
pub use loglimit::*;
pub use nodes::*;
pub use notification::{Notifications, Notify, TRIGGERS};
pub use option::*;
pub use plugin::{
    ansible, copyfile, http, known_types, kubernetes, stored_keys, winrm, FlowControl, PluginStep,
    Support, STEP_TYPES,
};
pub use retry::{JobRetry, RetryPolicy};
pub use schedule::Schedule;
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
    /// Rundeck's `multipleExecutions`: off (and absent, as in Rundeck) allows
    /// one running execution at a time; see [`Job::running_limit`].
    #[serde(
        rename = "multipleExecutions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub multiple_executions: bool,
    /// With `multipleExecutions`, how many may run at once; none is no
    /// limit. Written as text, as Rundeck writes it.
    #[serde(
        rename = "maxMultipleExecutions",
        default,
        skip_serializing_if = "Option::is_none",
        with = "max_text"
    )]
    #[schemars(with = "Option<String>")]
    pub max_multiple_executions: Option<u32>,
    /// Rundeck's `timeout`: `120` (seconds), `6h 30m`, or text with
    /// `${option.x}`, read for each run; see [`Job::timeout_for`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "timeout_text"
    )]
    pub timeout: Option<String>,
    /// Rundeck's `loglimit` text (`1000`, `1000/node`, `100MB`); see
    /// [`Job::log_limit`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "loglimit_text"
    )]
    pub loglimit: Option<String>,
    #[serde(
        rename = "loglimitAction",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub loglimit_action: Option<LimitAction>,
    #[serde(
        rename = "loglimitStatus",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "halt_status"
    )]
    pub loglimit_status: Option<HaltStatus>,
    /// Rundeck's `retry`; see [`Job::retry_for`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub retry: Option<JobRetry>,
    /// Stored and exported; it fires once the scheduler exists (see
    /// [`Job::inactive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub schedule: Option<Schedule>,
    #[serde(
        rename = "scheduleEnabled",
        default = "yes",
        skip_serializing_if = "is_true"
    )]
    pub schedule_enabled: bool,
    /// The schedule's time zone (`Europe/Paris`).
    #[serde(rename = "timeZone", default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Stored and exported; sent once notifications exist (see
    /// [`Job::inactive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub notification: Option<Notifications>,
    #[serde(
        rename = "notifyAvgDurationThreshold",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub notify_avg_duration_threshold: Option<String>,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// `timeout`, checked at import unless it refers to options, which each
/// run supplies.
fn timeout_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    compat::checked_text(d, |t| {
        if t.contains("${") {
            Ok(())
        } else {
            parse_timeout(t).map(drop)
        }
    })
}

fn retry_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    compat::checked_text(d, retry::check_delay)
}

fn time_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    compat::checked_text(d, |t| {
        if t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c))
        {
            Ok(())
        } else {
            Err(format!(
                "timeZone `{t}` is not a time zone name (`Europe/Paris`, `UTC`)"
            ))
        }
    })
}

/// Rundeck's average-duration threshold: `+30`, `20%`, `30s`, `5m`, or an
/// option reference.
fn threshold<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    compat::checked_text(d, |t| {
        if t.contains("${") {
            return Ok(());
        }
        let body = t.trim_start_matches('+');
        let ok = match body.strip_suffix('%') {
            Some(n) => n.parse::<u32>().is_ok(),
            None => parse_timeout(body).is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "notifyAvgDurationThreshold `{t}`: use a percentage (`20%`), a time to add (`+30`, `+5m`) or a time (`30s`)"
            ))
        }
    })
}

fn loglimit_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    compat::checked_text(d, |t| parse_log_limit(t).map(drop))
}

fn halt_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<HaltStatus>, D::Error> {
    let Some(text) = compat::checked_text(d, |t| parse_halt_status(t).map(drop))? else {
        return Ok(None);
    };
    Ok(parse_halt_status(&text).ok())
}

/// `maxMultipleExecutions` as Rundeck stores it: text holding a whole
/// number (its YAML may also hold a plain number); 0 is no limit.
mod max_text {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    fn limit(text: &str) -> Result<Option<u32>, String> {
        match text.parse::<i64>() {
            Ok(n) if n < 0 => Err(format!(
                "maxMultipleExecutions {n} is negative; use 0 (or leave it out) for no limit"
            )),
            Ok(n) => u32::try_from(n)
                .map(|n| (n > 0).then_some(n))
                .map_err(|_| format!("maxMultipleExecutions {n} is too large")),
            Err(_) => Err(format!(
                "maxMultipleExecutions `{text}` is not a whole number"
            )),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let text = super::compat::checked_text(d, |t| limit(t).map(drop))?;
        Ok(text.and_then(|t| limit(&t).ok().flatten()))
    }
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
    #[serde(default, deserialize_with = "option::list_or_map")]
    #[schemars(with = "Vec<JobOption>")]
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
    #[serde(rename = "scheduleEnabled", default = "yes", deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    schedule_enabled: bool,
    #[serde(rename = "nodeFilterEditable", default)]
    _node_filter_editable: Option<Flag>,
    #[serde(rename = "project", default)]
    _project: Option<String>,
    #[serde(rename = "multipleExecutions", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    multiple_executions: bool,
    #[serde(rename = "maxMultipleExecutions", default, with = "max_text")]
    #[schemars(with = "Option<String>")]
    max_multiple_executions: Option<u32>,
    #[serde(default, deserialize_with = "timeout_text")]
    #[schemars(with = "Option<String>")]
    timeout: Option<String>,
    #[serde(default, deserialize_with = "loglimit_text")]
    #[schemars(with = "Option<String>")]
    loglimit: Option<String>,
    #[serde(rename = "loglimitAction", default)]
    loglimit_action: Option<LimitAction>,
    #[serde(rename = "loglimitStatus", default, deserialize_with = "halt_status")]
    #[schemars(with = "Option<HaltStatus>")]
    loglimit_status: Option<HaltStatus>,
    #[serde(default)]
    nodefilters: Option<NodeFilters>,
    #[serde(rename = "nodesSelectedByDefault", default)]
    _nodes_selected_by_default: Option<Flag>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    schedule: Option<Schedule>,
    #[serde(rename = "schedules", default)]
    _schedules: NotYet,
    #[serde(rename = "timeZone", default, deserialize_with = "time_zone")]
    #[schemars(with = "Option<String>")]
    time_zone: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    notification: Option<Notifications>,
    #[serde(
        rename = "notifyAvgDurationThreshold",
        default,
        deserialize_with = "threshold"
    )]
    #[schemars(with = "Option<String>")]
    notify_avg_duration_threshold: Option<String>,
    #[serde(default, deserialize_with = "retry::deserialize")]
    #[schemars(with = "Option<serde_json::Value>")]
    retry: Option<JobRetry>,
    /// Older exports' delay beside a plain `retry` count.
    #[serde(rename = "retryDelay", default, deserialize_with = "retry_delay")]
    #[schemars(with = "Option<String>")]
    retry_delay: Option<String>,
    #[serde(rename = "orchestrator", default)]
    _orchestrator: NotYet,
    #[serde(rename = "plugins", default)]
    _plugins: NotYet,
    #[serde(rename = "excludeFilterUncheck", default)]
    _exclude_filter_uncheck: NotYet,
    // Who last saved the job: Rundeck 5.17 and later write it on every
    // job (its schedules run as that user). No effect: a run here is the
    // requester's.
    #[serde(rename = "user", default)]
    _user: Option<String>,
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
        let auth_only: BTreeSet<&str> = raw
            .options
            .iter()
            .filter(|o| o.auth_only())
            .map(|o| o.name.as_str())
            .collect();
        for (i, cmd) in raw.sequence.commands.iter().enumerate() {
            for text in cmd.texts() {
                for reference in option_references(text) {
                    if !defined.contains(reference) {
                        return Err(format!(
                            "job `{name}`: step {} uses ${{option.{reference}}}, but the job defines no option `{reference}`",
                            i + 1
                        ));
                    }
                    // Rundeck would expand it to nothing, silently.
                    if auth_only.contains(reference) {
                        return Err(format!(
                            "job `{name}`: step {} uses ${{option.{reference}}}, but `{reference}` is a secure option without `valueExposed: true` (Rundeck's Secure Remote Authentication), which only the SSH executor reads; set `valueExposed: true` to give its value to steps",
                            i + 1
                        ));
                    }
                }
            }
            // A password in a plain option would be stored with the run's
            // options; only a secure one reaches the runner alone.
            let password = cmd.configuration.get("password");
            if let Some(opt) = password.and_then(|p| http::password_option(p)) {
                if raw.options.iter().any(|o| o.name == opt && !o.secure) {
                    return Err(format!(
                        "job `{name}`: step {}: configuration.password uses ${{option.{opt}}}, which is not a secure option; make it `secure: true` (and `valueExposed: true`), or use a key storage path",
                        i + 1
                    ));
                }
            }
        }
        if let Some(t) = &raw.timeout {
            if let Some(reference) = option_references(t).find(|r| !defined.contains(r)) {
                return Err(format!(
                    "job `{name}`: timeout `{t}` uses ${{option.{reference}}}, but the job defines no option `{reference}`"
                ));
            }
        }
        if raw.notify_avg_duration_threshold.is_some()
            && raw
                .notification
                .as_ref()
                .is_none_or(Notifications::is_empty)
        {
            return Err(format!(
                "job `{name}`: notifyAvgDurationThreshold without a notification; it has nothing to send"
            ));
        }
        let mut retry = raw.retry;
        match (&mut retry, raw.retry_delay) {
            (Some(r), Some(d)) => match &r.delay {
                Some(own) if *own != d => {
                    return Err(format!(
                        "job `{name}`: retry has delay `{own}` and retryDelay `{d}`; give one"
                    ))
                }
                _ => r.delay = Some(d),
            },
            (None, Some(d)) => {
                return Err(format!(
                    "job `{name}`: retryDelay `{d}` without retry; give both as `retry: {{retry: N, delay: {d}}}`"
                ))
            }
            _ => {}
        }
        if let Some(r) = &retry {
            for text in std::iter::once(&r.retry).chain(&r.delay) {
                if let Some(reference) = option_references(text).find(|o| !defined.contains(o)) {
                    return Err(format!(
                        "job `{name}`: retry `{text}` uses ${{option.{reference}}}, but the job defines no option `{reference}`"
                    ));
                }
            }
        }
        if raw.nodefilters.is_some() {
            let strategy = raw.sequence.strategy;
            for (i, c) in raw.sequence.commands.iter().enumerate() {
                // Steps that run once, between node runs: the workflow is
                // split around them (see ARCHITECTURE.md, "Node jobs").
                let between = c.jobref.is_some()
                    || matches!(
                        c.plugin(),
                        Some(PluginStep::FlowControl(_) | PluginStep::ExportVar { .. })
                    );
                let what = match (&c.jobref, &c.errorhandler) {
                    (_, Some(_)) if between => "an errorhandler on a step that runs once (a job reference or flow step)",
                    _ if c.node_step == Some(false) && !between => "a workflow plugin step",
                    (Some(r), _) if r.node_step && strategy == Strategy::NodeFirst => {
                        "a node-step job reference (`nodeStep: true`) in a node-first workflow (Rundeck runs it between each node's other steps, and Outpost runs a node's steps in one dispatch; use `strategy: sequential`, or `nodeStep: false`)"
                    }
                    _ if between && strategy == Strategy::Parallel => {
                        "a job reference or flow step in a parallel workflow"
                    }
                    _ => continue,
                };
                return Err(format!(
                    "job `{name}`: step {}: {NOT_SUPPORTED_YET}: {what} in a job with nodefilters",
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
        } else {
            for (i, step) in raw.sequence.commands.iter().enumerate() {
                // A step's error handler runs where the step runs.
                let handler = step.errorhandler.as_deref();
                let why = std::iter::once(step)
                    .chain(handler)
                    .find_map(|c| match c.plugin() {
                        Some(PluginStep::OnRunner {
                            plugin,
                            node_step: true,
                        }) => ansible::refused_without_nodes(&plugin, &c.configuration),
                        _ => None,
                    });
                if let Some(why) = why {
                    return Err(format!("job `{name}`: step {}: {why}", i + 1));
                }
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
            multiple_executions: raw.multiple_executions,
            max_multiple_executions: raw.max_multiple_executions,
            timeout: raw.timeout,
            loglimit: raw.loglimit,
            loglimit_action: raw.loglimit_action,
            loglimit_status: raw.loglimit_status,
            retry,
            schedule: raw.schedule,
            schedule_enabled: raw.schedule_enabled,
            time_zone: raw.time_zone,
            notification: raw.notification.filter(|n| !n.is_empty()),
            notify_avg_duration_threshold: raw.notify_avg_duration_threshold,
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

    /// How many of its executions may run at once, as Rundeck decides it
    /// (`multipleExecutions ? maxMultipleExecutions : 1`); none is no
    /// limit. Only runs asked for directly count: a job reference's child
    /// is not held to it, as in Rundeck.
    pub fn running_limit(&self) -> Option<u32> {
        if self.multiple_executions {
            self.max_multiple_executions
        } else {
            Some(1)
        }
    }

    /// How long a run with these option values may take, with the text it
    /// was read from; none is no limit. `${option.x}` takes the run's
    /// value, and one the run does not give is blank, as in Rundeck.
    pub fn timeout_for(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<Option<(String, std::time::Duration)>, String> {
        let Some(text) = &self.timeout else {
            return Ok(None);
        };
        let vars: BTreeMap<String, String> = option_references(text)
            .map(|name| {
                let value = options.get(name).cloned().unwrap_or_default();
                (format!("option.{name}"), value)
            })
            .collect();
        let expanded = substitute(text, &vars);
        match parse_timeout(&expanded) {
            Ok(d) => Ok(d.map(|d| (expanded.trim().to_string(), d))),
            Err(e) if expanded == *text => Err(e),
            Err(e) => Err(format!(
                "timeout `{text}` is `{expanded}` for this run: {e}"
            )),
        }
    }

    /// How a failed run with these option values is retried; none when it
    /// is not.
    pub fn retry_for(
        &self,
        options: &BTreeMap<String, String>,
    ) -> Result<Option<RetryPolicy>, String> {
        match &self.retry {
            None => Ok(None),
            Some(r) => r.policy(options).map(|p| (p.max > 0).then_some(p)),
        }
    }

    /// What the job asks for that is stored but has no effect yet, each with
    /// why: the import warns of it, and the API shows the job `active:
    /// false`.
    pub fn inactive(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.schedule.is_some() {
            why.push(
                "schedule stored, not active yet: Outpost's scheduler is not built, so the job runs only when asked".to_string(),
            );
        }
        if self.notification.is_some() {
            why.push(
                "notification stored, not active yet: Outpost sends no notifications so far"
                    .to_string(),
            );
        }
        why
    }

    /// The log limit its runners apply; none without `loglimit`.
    pub fn log_limit(&self) -> Option<LogLimit> {
        let (measure, max) = parse_log_limit(self.loglimit.as_deref()?).ok()?;
        Some(LogLimit {
            measure,
            max,
            action: self.loglimit_action.unwrap_or_default(),
            status: self.loglimit_status.unwrap_or_default(),
        })
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
    substitute_with(text, |name| vars.get(name).cloned())
}

/// [`substitute`] with a resolver: `value(name)` is the text of `${name}`,
/// `None` to leave it as written.
pub fn substitute_with(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after
            .find('}')
            .and_then(|end| Some((end, value(&after[..end])?)))
        {
            Some((end, v)) => {
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces `@key@` tokens in a script body, as Rundeck's
/// `ReplaceTokenReader` does: a token runs from `@` to the next `@` with no
/// white space between; a known key becomes its value and an unknown one
/// nothing; `@@` is one `@`; text with white space before the closing `@`
/// is left as it is (so `mail me@example.com today` survives).
pub fn replace_tokens(text: &str, vars: &BTreeMap<String, String>) -> String {
    replace_tokens_with(text, |key| vars.get(key).cloned())
}

/// [`replace_tokens`] with a resolver: `value(key)` is the token's value,
/// `None` for an unknown one.
pub fn replace_tokens_with(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after.find(|c: char| c == '@' || c.is_whitespace());
        match end {
            Some(e) if after[e..].starts_with('@') => {
                let key = &after[..e];
                if !key.is_empty() {
                    out.push_str(&value(key).unwrap_or_default());
                } else {
                    out.push('@');
                }
                rest = &after[e + 1..];
            }
            _ => {
                out.push('@');
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
    format!("RD_OPTION_{}", env_suffix(name))
}

/// A context name as Rundeck puts it in an environment variable's name:
/// upper case, every other character `_` (`os-family` is `OS_FAMILY`).
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
