//! The workflow: `sequence`, its strategy and its steps.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{flag, Flag, NotYet, ScalarString, NOT_SUPPORTED_YET};
use super::*;

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
