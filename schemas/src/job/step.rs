//! The workflow: `sequence`, its strategy and its steps.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compat::{flag, is_false, Flag, NotYet, ScalarString, NOT_SUPPORTED_YET};
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
    /// Log filters for every step, run before each step's own.
    #[serde(
        rename = "pluginConfig",
        default,
        skip_serializing_if = "WorkflowPlugins::is_empty"
    )]
    pub plugin_config: WorkflowPlugins,
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
    #[serde(
        rename = "pluginConfig",
        default,
        deserialize_with = "log_filter::workflow_plugins"
    )]
    #[schemars(with = "Option<WorkflowPlugins>")]
    plugin_config: Option<WorkflowPlugins>,
    /// Read by Rundeck, never exported by it.
    #[serde(rename = "threadcount", default)]
    _threadcount: NotYet,
}

impl TryFrom<RawSequence> for Sequence {
    type Error = String;
    fn try_from(raw: RawSequence) -> Result<Self, String> {
        if let Some(i) = raw.commands.iter().position(|c| c.keepgoing_on_success) {
            return Err(format!(
                "step {}: `keepgoingOnSuccess` belongs in the step's errorhandler",
                i + 1
            ));
        }
        Ok(Sequence {
            keepgoing: raw.keepgoing,
            strategy: raw.strategy,
            commands: raw.commands,
            plugin_config: raw.plugin_config.unwrap_or_default(),
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
    /// A script on the runner, read when the step runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scriptfile: Option<String>,
    /// A script the runner fetches (HTTP or HTTPS) when the step runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scripturl: Option<String>,
    /// e.g. `bash -e` or `python3`; the script file's path is appended.
    #[serde(rename = "scriptInterpreter", skip_serializing_if = "Option::is_none")]
    pub script_interpreter: Option<String>,
    /// Pass the script's path and args to the interpreter as one quoted
    /// argument (`sudo -u app bash -c 'script args'`).
    #[serde(
        rename = "interpreterArgsQuoted",
        default,
        skip_serializing_if = "is_false"
    )]
    pub interpreter_args_quoted: bool,
    /// The script file's extension on the host that runs it (`ps1`).
    #[serde(rename = "fileExtension", skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// Replace `@option.x@` tokens in a `scriptfile` or `scripturl` script
    /// too (an inline script always has them replaced).
    #[serde(
        rename = "expandTokenInScriptFile",
        default,
        skip_serializing_if = "is_false"
    )]
    pub expand_token_in_script_file: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-step runner selection, an Outpost extension over Rundeck.
    #[serde(rename = "runnerSelector", skip_serializing_if = "Option::is_none")]
    pub runner_selector: Option<RunnerSelector>,
    /// A plugin step's type (one that runs: see [`PluginStep`]); its
    /// configuration is checked at import and read by [`Command::plugin`].
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub step_type: Option<String>,
    #[serde(rename = "nodeStep", skip_serializing_if = "Option::is_none")]
    pub node_step: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configuration: BTreeMap<String, String>,
    /// Runs another job as a child execution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobref: Option<JobRef>,
    /// Runs when this step fails; its result decides the step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errorhandler: Option<Box<Command>>,
    /// On an error handler: when it succeeds, the workflow goes on even
    /// without `keepgoing`.
    #[serde(
        rename = "keepgoingOnSuccess",
        default,
        skip_serializing_if = "is_false"
    )]
    pub keepgoing_on_success: bool,
    /// Log filters the runner runs over the step's output
    /// (`key-value-data` sets `${data.key}`).
    #[serde(default, skip_serializing_if = "StepPlugins::is_empty")]
    pub plugins: StepPlugins,
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
    #[serde(default)]
    scriptfile: Option<String>,
    #[serde(default)]
    scripturl: Option<String>,
    #[serde(rename = "scriptInterpreter", default)]
    script_interpreter: Option<String>,
    #[serde(rename = "interpreterArgsQuoted", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    interpreter_args_quoted: bool,
    #[serde(rename = "fileExtension", default)]
    file_extension: Option<String>,
    #[serde(rename = "expandTokenInScriptFile", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    expand_token_in_script_file: bool,
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
    node_step: Option<Flag>,
    #[serde(default)]
    configuration: Option<BTreeMap<String, ScalarString>>,
    // Defaults Rundeck writes for every step: accepted when they ask for
    // nothing.
    #[serde(rename = "autoSecureInput", default)]
    _auto_secure_input: NotYet,
    #[serde(rename = "passSecureInput", default)]
    _pass_secure_input: NotYet,
    #[serde(default)]
    jobref: Option<JobRef>,
    #[serde(default)]
    errorhandler: Option<Box<Command>>,
    #[serde(rename = "keepgoingOnSuccess", default, deserialize_with = "flag")]
    #[schemars(with = "Flag")]
    keepgoing_on_success: bool,
    #[serde(default, deserialize_with = "log_filter::step_plugins")]
    #[schemars(with = "Option<StepPlugins>")]
    plugins: Option<StepPlugins>,
    // Documented by Rundeck, not built yet: refused unless empty.
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

/// A flag inside a plugin step's configuration (all text there).
fn flag_text(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!(
            "configuration.{key}: `{value}` is not a flag: use true or false"
        )),
    }
}

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
        if self.exec.is_some() || self.script.is_some() || self.jobref.is_some() {
            return Err(format!(
                "a step has both `type: {step_type}` and `exec`, `script` or `jobref`; use one"
            ));
        }
        if !matches!(step_type.as_str(), "exec-command" | "script-inline") {
            // A plugin step proper: checked in `try_from`.
            self.step_type = Some(step_type);
            return Ok(self);
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
                "fileExtension" => &mut self.file_extension,
                "interpreterArgsQuoted" => {
                    self.interpreter_args_quoted = flag_text(&key, &value)?;
                    continue;
                }
                "expandTokenInScriptFile" => {
                    self.expand_token_in_script_file = flag_text(&key, &value)?;
                    continue;
                }
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
        if raw.step_type.is_some() {
            return Command::plugin_step(raw);
        }
        let sources = [
            raw.exec.is_some(),
            raw.script.is_some(),
            raw.scriptfile.is_some(),
            raw.scripturl.is_some(),
            raw.jobref.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(
                "a step has more than one of `exec`, `script`, `scriptfile`, `scripturl` and `jobref`; use one"
                    .into(),
            );
        }
        let script_kind =
            raw.script.is_some() || raw.scriptfile.is_some() || raw.scripturl.is_some();
        if !script_kind
            && (raw.interpreter_args_quoted
                || raw.file_extension.is_some()
                || raw.expand_token_in_script_file)
        {
            return Err("`interpreterArgsQuoted`, `fileExtension` and `expandTokenInScriptFile` go with a script step".into());
        }
        if let Some(path) = &raw.scriptfile {
            if path.trim().is_empty() {
                return Err("`scriptfile` is empty".into());
            }
        }
        if let Some(url) = &raw.scripturl {
            let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if !matches!(scheme.as_deref(), Some("http" | "https")) {
                return Err(format!(
                    "`scripturl` `{url}` is not an http:// or https:// URL"
                ));
            }
        }
        if script_kind && raw.script_interpreter.is_none() && raw.interpreter_args_quoted {
            return Err("`interpreterArgsQuoted` needs a `scriptInterpreter`".into());
        }
        if raw.scriptfile.is_some() || raw.scripturl.is_some() {
            return Command {
                exec: None,
                script: None,
                args: raw.args,
                scriptfile: raw.scriptfile,
                scripturl: raw.scripturl,
                script_interpreter: raw.script_interpreter,
                interpreter_args_quoted: raw.interpreter_args_quoted,
                file_extension: raw.file_extension,
                expand_token_in_script_file: raw.expand_token_in_script_file,
                description: raw.description,
                runner_selector: raw.runner_selector,
                step_type: None,
                node_step: None,
                configuration: BTreeMap::new(),
                jobref: None,
                errorhandler: raw.errorhandler,
                keepgoing_on_success: raw.keepgoing_on_success,
                plugins: raw.plugins.unwrap_or_default(),
            }
            .checked_handler();
        }
        match (&raw.exec, &raw.script, &raw.jobref) {
            (Some(_), Some(_), _) => {
                return Err("a step has both `exec` and `script`; use one".into())
            }
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err("a step has both `jobref` and `exec` or `script`; use one".into())
            }
            (None, None, None) => {
                return Err(
                    "a step needs `exec`, `script`, `scriptfile`, `scripturl`, `jobref` or a plugin `type`".into(),
                )
            }
            (Some(e), None, _) if e.trim().is_empty() => return Err("`exec` is empty".into()),
            (Some(_), None, _) if raw.args.is_some() => {
                return Err("`args` goes with `script`, not `exec`".into())
            }
            (Some(_), None, _) if raw.script_interpreter.is_some() => {
                return Err("`scriptInterpreter` goes with `script`, not `exec`".into())
            }
            (None, None, Some(_)) if raw.args.is_some() || raw.script_interpreter.is_some() => {
                return Err(
                    "a jobref step takes its arguments in `jobref.args`, not in the step's `args`"
                        .into(),
                )
            }
            (None, None, Some(_)) if raw.runner_selector.is_some() => {
                return Err("a jobref step runs where the referenced job's own runnerSelector says; remove the step's runnerSelector".into())
            }
            (None, None, Some(_)) if raw.plugins.as_ref().is_some_and(|p| !p.is_empty()) => {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: log filters on a jobref step (its output is the child execution's)"
                ))
            }
            _ => {}
        }
        Command {
            exec: raw.exec,
            script: raw.script,
            args: raw.args,
            scriptfile: None,
            scripturl: None,
            script_interpreter: raw.script_interpreter,
            interpreter_args_quoted: raw.interpreter_args_quoted,
            file_extension: raw.file_extension,
            expand_token_in_script_file: raw.expand_token_in_script_file,
            description: raw.description,
            runner_selector: raw.runner_selector,
            step_type: None,
            node_step: None,
            configuration: BTreeMap::new(),
            jobref: raw.jobref,
            errorhandler: raw.errorhandler,
            keepgoing_on_success: raw.keepgoing_on_success,
            plugins: raw.plugins.unwrap_or_default(),
        }
        .checked_handler()
    }
}

impl Command {
    /// A plugin step: its type known and running, its configuration read,
    /// `nodeStep` as its type has it.
    fn plugin_step(raw: RawCommand) -> Result<Command, String> {
        let step_type = raw.step_type.expect("a plugin step");
        if raw.exec.is_some()
            || raw.script.is_some()
            || raw.scriptfile.is_some()
            || raw.scripturl.is_some()
            || raw.jobref.is_some()
            || raw.args.is_some()
            || raw.script_interpreter.is_some()
        {
            return Err(format!(
                "a `{step_type}` plugin step takes its settings in `configuration`, not in `exec`, `script`, `args` or `jobref`"
            ));
        }
        let configuration: BTreeMap<String, String> = raw
            .configuration
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from(v)))
            .collect();
        let plugin = PluginStep::read(&step_type, &configuration)?;
        let node_step = plugin.is_node_step();
        if let Some(Flag(given)) = raw.node_step {
            if given != node_step {
                return Err(format!(
                    "`{step_type}` is a {} step; its nodeStep is {node_step}",
                    if node_step { "node" } else { "workflow" }
                ));
            }
        }
        let plugins = raw.plugins.unwrap_or_default();
        if !plugin.runs_on_runner() {
            if !plugins.is_empty() {
                return Err(format!(
                    "`{step_type}` runs in the control plane and prints nothing; its log filters have no output to read"
                ));
            }
            if raw.runner_selector.is_some() {
                return Err(format!(
                    "`{step_type}` runs in the control plane, on no runner; remove its runnerSelector"
                ));
            }
            if raw.errorhandler.is_some() {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: an errorhandler on a `{step_type}` step"
                ));
            }
        }
        Command {
            exec: None,
            script: None,
            args: None,
            scriptfile: None,
            scripturl: None,
            script_interpreter: None,
            interpreter_args_quoted: false,
            file_extension: None,
            expand_token_in_script_file: false,
            description: raw.description,
            runner_selector: raw.runner_selector,
            step_type: Some(step_type),
            node_step: Some(node_step),
            configuration,
            jobref: None,
            errorhandler: raw.errorhandler,
            keepgoing_on_success: raw.keepgoing_on_success,
            plugins,
        }
        .checked_handler()
    }

    /// The plugin step this is, read from its (checked) configuration.
    pub fn plugin(&self) -> Option<PluginStep> {
        let t = self.step_type.as_deref()?;
        PluginStep::read(t, &self.configuration).ok()
    }

    /// Checks the step's error handler, which holds to its own rules.
    fn checked_handler(self) -> Result<Self, String> {
        if let Some(handler) = &self.errorhandler {
            if handler.errorhandler.is_some() {
                return Err(
                    "an errorhandler has its own `errorhandler`; handlers do not nest".into(),
                );
            }
            if handler.jobref.is_some() {
                return Err(format!("{NOT_SUPPORTED_YET}: an errorhandler that is a jobref (handlers are `exec` or `script` steps so far)"));
            }
            if handler.runner_selector.is_some() {
                return Err(
                    "an errorhandler runs where its step runs; remove its runnerSelector".into(),
                );
            }
            if !handler.plugins.is_empty() {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: log filters on an errorhandler"
                ));
            }
        }
        Ok(self)
    }

    /// Every text in which `${option.X}` may appear.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let own = [
            &self.exec,
            &self.script,
            &self.args,
            &self.scriptfile,
            &self.scripturl,
        ]
        .into_iter()
        .filter_map(|t| t.as_deref())
        .chain(self.configuration.values().map(String::as_str));
        let jobref = self.jobref.iter().flat_map(|r| {
            [
                r.args.as_deref(),
                r.nodefilters.as_ref().map(|n| n.filter.as_str()),
            ]
            .into_iter()
            .flatten()
        });
        let handler: Box<dyn Iterator<Item = &str>> = match &self.errorhandler {
            Some(h) => Box::new(h.texts()),
            None => Box::new(std::iter::empty()),
        };
        own.chain(jobref).chain(handler)
    }

    /// A one-line label for listings.
    pub fn label(&self) -> String {
        if let Some(d) = &self.description {
            return d.clone();
        }
        match (&self.exec, &self.script, &self.jobref) {
            (Some(e), _, _) => e.clone(),
            (_, Some(s), _) => format!("script: {}", s.lines().next().unwrap_or("")),
            (None, None, None) if self.step_type.is_some() => {
                let t = self.step_type.as_deref().unwrap_or_default();
                match self.configuration.get("command") {
                    Some(c) => format!("{t}: {c}"),
                    None => t.to_string(),
                }
            }
            (None, None, None) if self.scriptfile.is_some() => {
                format!("script file: {}", self.scriptfile.as_deref().unwrap_or(""))
            }
            (None, None, None) if self.scripturl.is_some() => {
                format!("script url: {}", self.scripturl.as_deref().unwrap_or(""))
            }
            (_, _, Some(r)) => format!("job: {}", r.label()),
            _ => String::new(),
        }
    }
}
