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

use compat::Values;
pub use compat::{flag, Flag, NotYet, NOT_SUPPORTED_YET};

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

/// A job option (Rundeck's `options` list entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawJobOption")]
pub struct JobOption {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Default value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Allowed values; enforced only when `enforced` is true.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default)]
    pub enforced: bool,
    /// A secret: its value is sealed at rest, handed only to the runner that
    /// claims the step, and masked as `[SECURE]` in the output. It can have
    /// no default (the job definition is stored in plain text), nor allowed
    /// `values`.
    #[serde(default)]
    pub secure: bool,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawJobOption {
    name: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    required: bool,
    #[serde(default)]
    value: Option<ScalarString>,
    #[serde(default)]
    values: Option<Values>,
    /// Splits `values` when it is one string (Rundeck's default `,`).
    #[serde(rename = "valuesListDelimiter", default)]
    values_list_delimiter: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    enforced: bool,
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    secure: bool,
    /// Only matters with `storagePath`, which is not built.
    #[serde(rename = "valueExposed", default)]
    _value_exposed: Option<Flag>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "regex", default)]
    _regex: NotYet,
    #[serde(rename = "multivalued", default)]
    _multivalued: NotYet,
    #[serde(rename = "delimiter", default)]
    _delimiter: NotYet,
    #[serde(rename = "multivalueAllSelected", default)]
    _multivalue_all_selected: NotYet,
    #[serde(rename = "valuesUrl", default)]
    _values_url: NotYet,
    #[serde(rename = "configRemoteUrl", default)]
    _config_remote_url: NotYet,
    #[serde(rename = "remoteUrlAuthenticationType", default)]
    _remote_url_authentication_type: NotYet,
    #[serde(rename = "storagePath", default)]
    _storage_path: NotYet,
    #[serde(rename = "isDate", default)]
    _is_date: NotYet,
    #[serde(rename = "dateFormat", default)]
    _date_format: NotYet,
    #[serde(rename = "hidden", default)]
    _hidden: NotYet,
    #[serde(rename = "sortValues", default)]
    _sort_values: NotYet,
    #[serde(rename = "sortIndex", default)]
    _sort_index: NotYet,
    #[serde(rename = "type", default)]
    _option_type: NotYet,
    #[serde(rename = "config", default)]
    _config: NotYet,
    #[serde(rename = "optionValuesPluginType", default)]
    _option_values_plugin_type: NotYet,
}

/// YAML writes `value: 3` as a number; Rundeck treats every option as text.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
enum ScalarString {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl From<ScalarString> for String {
    fn from(s: ScalarString) -> String {
        match s {
            ScalarString::S(s) => s,
            ScalarString::I(i) => i.to_string(),
            ScalarString::F(f) => f.to_string(),
            ScalarString::B(b) => b.to_string(),
        }
    }
}

impl TryFrom<RawJobOption> for JobOption {
    type Error = String;
    fn try_from(raw: RawJobOption) -> Result<Self, String> {
        check_name("option name", &raw.name, |c| {
            c == '_' || c == '-' || c == '.'
        })?;
        let value: Option<String> = raw.value.map(Into::into);
        let values: Vec<String> = raw
            .values
            .map(|v| v.into_list(raw.values_list_delimiter.as_deref().unwrap_or(",")))
            .unwrap_or_default();
        if raw.secure && (value.is_some() || !values.is_empty()) {
            return Err(format!(
                "option `{}` is secure, so it can have no `value` or `values`: the job definition is stored in plain text; pass the value at run time",
                raw.name
            ));
        }
        if raw.enforced {
            if values.is_empty() {
                return Err(format!(
                    "option `{}` is `enforced` but lists no `values`",
                    raw.name
                ));
            }
            if let Some(v) = &value {
                if !values.contains(v) {
                    return Err(format!(
                        "option `{}`: default `{v}` is not one of its `values`",
                        raw.name
                    ));
                }
            }
        }
        Ok(JobOption {
            name: raw.name,
            label: raw.label,
            description: raw.description,
            required: raw.required,
            value,
            values,
            enforced: raw.enforced,
            secure: raw.secure,
        })
    }
}

/// `sequence:` — the workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawSequence")]
pub struct Sequence {
    /// Run the remaining steps after a failure (the execution still fails).
    #[serde(default)]
    pub keepgoing: bool,
    #[serde(default)]
    pub strategy: Strategy,
    pub commands: Vec<Command>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawSequence {
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    keepgoing: bool,
    #[serde(default)]
    strategy: Strategy,
    #[serde(deserialize_with = "non_empty_commands")]
    commands: Vec<Command>,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "pluginConfig", default)]
    _plugin_config: NotYet,
    /// Read by Rundeck, never exported by it.
    #[serde(rename = "threadcount", default)]
    _threadcount: NotYet,
}

impl TryFrom<RawSequence> for Sequence {
    type Error = String;
    fn try_from(raw: RawSequence) -> Result<Self, String> {
        Ok(Sequence {
            keepgoing: raw.keepgoing,
            strategy: raw.strategy,
            commands: raw.commands,
        })
    }
}

fn non_empty_commands<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    let v = Vec::<Command>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom(
            "`commands` is empty; a job needs at least one step",
        ));
    }
    Ok(v)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Strategy {
    #[default]
    #[serde(rename = "node-first")]
    NodeFirst,
    #[serde(rename = "sequential", alias = "step-first")]
    Sequential,
    #[serde(rename = "parallel")]
    Parallel,
}

/// One workflow step: `exec` (a command line) or `script` (+ `args`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawCommand")]
pub struct Command {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// e.g. `bash -e` or `python3`; the script file's path is appended.
    #[serde(rename = "scriptInterpreter", skip_serializing_if = "Option::is_none")]
    pub script_interpreter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-step runner selection, an Outpost extension over Rundeck.
    #[serde(rename = "runnerSelector", skip_serializing_if = "Option::is_none")]
    pub runner_selector: Option<RunnerSelector>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    #[serde(default)]
    exec: Option<String>,
    #[serde(default)]
    script: Option<String>,
    #[serde(default)]
    args: Option<String>,
    #[serde(rename = "scriptInterpreter", default)]
    script_interpreter: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(rename = "runnerSelector", default)]
    runner_selector: Option<RunnerSelector>,
    /// A plugin step's type. Rundeck 5.0 and 5.1 exported `exec` and
    /// `script` steps as the built-in types `exec-command` and
    /// `script-inline`; those are read as such.
    #[serde(rename = "type", default)]
    step_type: Option<String>,
    #[serde(rename = "nodeStep", default)]
    _node_step: Option<Flag>,
    #[serde(default)]
    configuration: Option<BTreeMap<String, ScalarString>>,
    // Defaults Rundeck writes for every script step: accepted when they ask
    // for nothing.
    #[serde(rename = "interpreterArgsQuoted", default)]
    _interpreter_args_quoted: NotYet,
    #[serde(rename = "expandTokenInScriptFile", default)]
    _expand_token_in_script_file: NotYet,
    #[serde(rename = "autoSecureInput", default)]
    _auto_secure_input: NotYet,
    #[serde(rename = "passSecureInput", default)]
    _pass_secure_input: NotYet,
    // Documented by Rundeck, not built yet: refused unless empty.
    #[serde(rename = "jobref", default)]
    _jobref: NotYet,
    #[serde(rename = "scriptfile", default)]
    _scriptfile: NotYet,
    #[serde(rename = "scripturl", default)]
    _scripturl: NotYet,
    #[serde(rename = "fileExtension", default)]
    _file_extension: NotYet,
    #[serde(rename = "errorhandler", default)]
    _errorhandler: NotYet,
    #[serde(rename = "keepgoingOnSuccess", default)]
    _keepgoing_on_success: NotYet,
    #[serde(rename = "plugins", default)]
    _plugins: NotYet,
    #[serde(rename = "conditionGroups", default)]
    _condition_groups: NotYet,
    #[serde(rename = "subSteps", default)]
    _sub_steps: NotYet,
}

/// The built-in step types' configuration keys, as Rundeck 5.0 and 5.1
/// exported them, and the step keys they stand for.
const BUILTIN_STEP_KEYS: &[(&str, &str)] = &[
    ("adhocRemoteString", "exec"),
    ("adhocLocalString", "script"),
    ("argString", "args"),
    ("scriptInterpreter", "scriptInterpreter"),
    ("interpreterArgsQuoted", "interpreterArgsQuoted"),
    ("fileExtension", "fileExtension"),
    ("expandTokenInScriptFile", "expandTokenInScriptFile"),
];

impl RawCommand {
    /// A built-in plugin step (`type: exec-command`, `script-inline`) read
    /// as the `exec` or `script` step it is.
    fn builtin(mut self) -> Result<Self, String> {
        let Some(step_type) = self.step_type.take() else {
            if self.configuration.is_some() {
                return Err("`configuration` goes with a plugin step's `type`".into());
            }
            return Ok(self);
        };
        if self.exec.is_some() || self.script.is_some() {
            return Err(format!(
                "a step has both `type: {step_type}` and `exec` or `script`; use one"
            ));
        }
        if !matches!(step_type.as_str(), "exec-command" | "script-inline") {
            return Err(format!(
                "{NOT_SUPPORTED_YET}: plugin step type `{step_type}` (so far Outpost runs `exec` and `script` steps, also written as the built-in types `exec-command` and `script-inline`)"
            ));
        }
        for (key, value) in self.configuration.take().unwrap_or_default() {
            let value = String::from(value);
            let Some((_, step_key)) = BUILTIN_STEP_KEYS.iter().find(|(k, _)| *k == key) else {
                return Err(format!("`{step_type}` has no configuration key `{key}`"));
            };
            // Rundeck writes every key, unset ones empty or `false`.
            if value.is_empty() || value.eq_ignore_ascii_case("false") {
                continue;
            }
            let slot = match *step_key {
                "exec" => &mut self.exec,
                "script" => &mut self.script,
                "args" => &mut self.args,
                "scriptInterpreter" => &mut self.script_interpreter,
                other => {
                    return Err(format!(
                        "{NOT_SUPPORTED_YET}: configuration.{key} (the step's `{other}`)"
                    ))
                }
            };
            *slot = Some(value);
        }
        match step_type.as_str() {
            "exec-command" if self.exec.is_none() => {
                Err("`exec-command` needs configuration.adhocRemoteString".into())
            }
            "script-inline" if self.script.is_none() => {
                Err("`script-inline` needs configuration.adhocLocalString".into())
            }
            _ => Ok(self),
        }
    }
}

impl TryFrom<RawCommand> for Command {
    type Error = String;
    fn try_from(raw: RawCommand) -> Result<Self, String> {
        let raw = raw.builtin()?;
        match (&raw.exec, &raw.script) {
            (Some(_), Some(_)) => return Err("a step has both `exec` and `script`; use one".into()),
            (None, None) => return Err("a step needs `exec` or `script`".into()),
            (Some(e), None) if e.trim().is_empty() => return Err("`exec` is empty".into()),
            (Some(_), None) if raw.args.is_some() => {
                return Err("`args` goes with `script`, not `exec`".into())
            }
            (Some(_), None) if raw.script_interpreter.is_some() => {
                return Err("`scriptInterpreter` goes with `script`, not `exec`".into())
            }
            _ => {}
        }
        Ok(Command {
            exec: raw.exec,
            script: raw.script,
            args: raw.args,
            script_interpreter: raw.script_interpreter,
            description: raw.description,
            runner_selector: raw.runner_selector,
        })
    }
}

impl Command {
    /// Every text in which `${option.X}` may appear.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        [&self.exec, &self.script, &self.args]
            .into_iter()
            .filter_map(|t| t.as_deref())
    }

    /// A one-line label for listings.
    pub fn label(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        match (&self.exec, &self.script) {
            (Some(e), _) => e.clone(),
            (_, Some(s)) => format!("script: {}", s.lines().next().unwrap_or("")),
            _ => String::new(),
        }
    }
}

/// Rundeck Enterprise's runner selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawRunnerSelector")]
pub struct RunnerSelector {
    /// Comma-separated tags; a runner must carry all of them.
    #[serde(default)]
    pub filter: String,
    #[serde(rename = "runnerFilterMode")]
    pub mode: RunnerFilterMode,
    #[serde(rename = "runnerFilterType")]
    pub filter_type: RunnerFilterType,
    /// The canonical tag set parsed from `filter` (sorted, deduplicated).
    #[serde(skip)]
    #[schemars(skip)]
    tags: Vec<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRunnerSelector {
    #[serde(default)]
    filter: String,
    #[serde(rename = "runnerFilterMode", default)]
    mode: Option<RunnerFilterMode>,
    #[serde(rename = "runnerFilterType", default)]
    filter_type: Option<RunnerFilterType>,
}

impl TryFrom<RawRunnerSelector> for RunnerSelector {
    type Error = String;
    fn try_from(raw: RawRunnerSelector) -> Result<Self, String> {
        let (mode, filter_type) = match (raw.mode, raw.filter_type) {
            (Some(RunnerFilterMode::Local), None | Some(RunnerFilterType::LocalRunner))
            | (None, Some(RunnerFilterType::LocalRunner)) => {
                (RunnerFilterMode::Local, RunnerFilterType::LocalRunner)
            }
            (Some(RunnerFilterMode::Tags) | None, Some(RunnerFilterType::TagFilterAnd) | None) => {
                (RunnerFilterMode::Tags, RunnerFilterType::TagFilterAnd)
            }
            (m, t) => {
                return Err(format!(
                    "runnerSelector: runnerFilterMode {m:?} does not go with runnerFilterType {t:?}; use TAGS with TAG_FILTER_AND, or LOCAL with LOCAL_RUNNER"
                ))
            }
        };
        let tags = if mode == RunnerFilterMode::Tags {
            let tags = parse_tag_list(&raw.filter).map_err(|e| format!("runnerSelector: {e}"))?;
            if tags.is_empty() {
                return Err("runnerSelector: mode TAGS needs at least one tag in `filter`".into());
            }
            tags
        } else {
            Vec::new()
        };
        Ok(RunnerSelector {
            filter: raw.filter,
            mode,
            filter_type,
            tags,
        })
    }
}

impl RunnerSelector {
    pub fn local() -> Self {
        RunnerSelector {
            filter: String::new(),
            mode: RunnerFilterMode::Local,
            filter_type: RunnerFilterType::LocalRunner,
            tags: Vec::new(),
        }
    }

    pub fn tags(tags: &[&str]) -> Result<Self, String> {
        RawRunnerSelector {
            filter: tags.join(","),
            mode: Some(RunnerFilterMode::Tags),
            filter_type: Some(RunnerFilterType::TagFilterAnd),
        }
        .try_into()
    }

    pub fn target(&self) -> Target {
        match self.mode {
            RunnerFilterMode::Local => Target::Local,
            RunnerFilterMode::Tags => Target::Tags(TagSet(self.tags.clone())),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RunnerFilterMode {
    Tags,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunnerFilterType {
    TagFilterAnd,
    LocalRunner,
}

/// Where a step is routed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "tags")]
pub enum Target {
    /// The control plane's embedded local runner.
    Local,
    /// Any runner that carries every tag.
    Tags(TagSet),
}

impl Target {
    /// The subject token and consumer suffix for this target; see
    /// [`crate::subjects`] for the partitioning scheme.
    pub fn token(&self) -> String {
        match self {
            Target::Local => crate::subjects::LOCAL_TOKEN.to_string(),
            Target::Tags(t) => t.token(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Local => f.write_str("local runner"),
            Target::Tags(t) => match t.0.first().and_then(|x| x.strip_prefix(RUNNER_TAG_PREFIX)) {
                Some(id) if t.0.len() == 1 => write!(f, "runner {id}"),
                _ => write!(f, "runners tagged {}", t.0.join("+")),
            },
        }
    }
}

/// A canonical tag set: sorted, deduplicated, each tag `[A-Za-z0-9][A-Za-z0-9_-]*`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(try_from = "Vec<String>")]
pub struct TagSet(Vec<String>);

/// On the wire a set may also hold a runner's implicit tag (`_r_<id>`),
/// which users cannot write.
impl TryFrom<Vec<String>> for TagSet {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for t in v {
            let name = t.strip_prefix(RUNNER_TAG_PREFIX).unwrap_or(&t);
            check_name("tag", name, |c| c == '_' || c == '-')?;
            out.insert(t);
        }
        Ok(TagSet(out.into_iter().collect()))
    }
}

impl TagSet {
    pub fn new<S: AsRef<str>>(tags: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let mut out = BTreeSet::new();
        for t in tags {
            let t = t.as_ref().trim();
            check_name("tag", t, |c| c == '_' || c == '-')?;
            out.insert(t.to_string());
        }
        Ok(TagSet(out.into_iter().collect()))
    }

    pub fn tags(&self) -> &[String] {
        &self.0
    }

    /// `a+b+c`: one subject token, one consumer per distinct set.
    pub fn token(&self) -> String {
        self.0.join("+")
    }

    /// A runner carrying `runner_tags` may take work for this set.
    pub fn satisfied_by(&self, runner_tags: &TagSet) -> bool {
        self.0
            .iter()
            .all(|t| runner_tags.0.binary_search(t).is_ok())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The set only runner `runner_id` satisfies: it carries this tag
    /// implicitly, and user tags cannot start with `_`.
    pub fn runner(runner_id: &str) -> TagSet {
        TagSet(vec![format!("{RUNNER_TAG_PREFIX}{runner_id}")])
    }

    /// These tags plus the runner's implicit one.
    pub fn with_runner(&self, runner_id: &str) -> TagSet {
        let mut t = self.0.clone();
        t.push(format!("{RUNNER_TAG_PREFIX}{runner_id}"));
        t.sort();
        t.dedup();
        TagSet(t)
    }
}

/// Prefix of the implicit tag each runner carries (`_r_<id>`).
pub const RUNNER_TAG_PREFIX: &str = "_r_";

/// Parses Rundeck's comma-separated tag filter (`"linux, prod"`).
pub fn parse_tag_list(filter: &str) -> Result<Vec<String>, String> {
    let parts: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    Ok(TagSet::new(parts)?.0)
}

/// Names that end up in subject tokens or KV keys: ASCII letters, digits and
/// a few separators, starting with a letter or digit.
pub fn check_name(what: &str, s: &str, extra: impl Fn(char) -> bool) -> Result<(), String> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s.chars().all(|c| c.is_ascii_alphanumeric() || extra(c));
    if !ok_first || !ok_rest || s.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} `{s}` is not valid: use letters, digits, `_` or `-` (starting with a letter or digit, at most {MAX_NAME_LEN} characters)"
        ));
    }
    Ok(())
}

/// Rundeck's `nodefilters`: which nodes, and how to dispatch to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, try_from = "RawNodeFilters")]
pub struct NodeFilters {
    /// Rundeck node filter (`tags: web+prod !name: web2`); may use `${option.*}`.
    pub filter: String,
    #[serde(default)]
    pub dispatch: NodeDispatch,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawNodeFilters {
    filter: String,
    #[serde(default)]
    dispatch: NodeDispatch,
}

impl TryFrom<RawNodeFilters> for NodeFilters {
    type Error = String;
    fn try_from(raw: RawNodeFilters) -> Result<Self, String> {
        // A filter with option references is checked once substituted.
        if !raw.filter.contains("${") {
            let parsed = crate::node_filter::parse(&raw.filter)
                .map_err(|e| format!("nodefilters.filter: {e}"))?;
            if parsed.is_blank() {
                return Err("nodefilters.filter is empty; use `.*` for every node".into());
            }
        }
        Ok(NodeFilters {
            filter: raw.filter,
            dispatch: raw.dispatch,
        })
    }
}

/// `nodefilters.dispatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeDispatch {
    /// Nodes run at once.
    #[serde(default = "one", deserialize_with = "count")]
    pub threadcount: u32,
    /// Go on to other nodes after a node fails.
    #[serde(default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    pub keepgoing: bool,
    /// Dispatch order attribute (default: the node name).
    #[serde(
        rename = "rankAttribute",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rank_attribute: Option<String>,
    #[serde(rename = "rankOrder", default)]
    pub rank_order: RankOrder,
    /// Exclusions win over inclusions (Rundeck's default).
    #[serde(
        rename = "excludePrecedence",
        default = "yes",
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    pub exclude_precedence: bool,
    /// Succeed, running nothing, when no node matches; otherwise fail.
    #[serde(
        rename = "successOnEmptyNodeFilter",
        default,
        deserialize_with = "flag"
    )]
    #[schemars(with = "Flag")]
    pub success_on_empty_node_filter: bool,
}

impl Default for NodeDispatch {
    fn default() -> Self {
        NodeDispatch {
            threadcount: 1,
            keepgoing: false,
            rank_attribute: None,
            rank_order: RankOrder::Ascending,
            exclude_precedence: true,
            success_on_empty_node_filter: false,
        }
    }
}

fn one() -> u32 {
    1
}

/// Rundeck exports `threadcount` as a number or as a string.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n: u32 = match ScalarString::deserialize(d)? {
        ScalarString::I(i) => u32::try_from(i)
            .map_err(|_| serde::de::Error::custom("threadcount must be at least 1"))?,
        ScalarString::S(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("threadcount `{s}` is not a whole number"))
        })?,
        _ => {
            return Err(serde::de::Error::custom(
                "threadcount must be a whole number",
            ))
        }
    };
    if n == 0 {
        return Err(serde::de::Error::custom("threadcount must be at least 1"));
    }
    Ok(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RankOrder {
    #[default]
    Ascending,
    Descending,
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
