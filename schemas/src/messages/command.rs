//! What a step runs: a command, a script or a plugin, as the runner gets
//! it, and the texts references expand in.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to run, with `${option.*}` already substituted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum StepCommand {
    /// A command line, run by `sh -c`.
    Exec { command: String },
    /// Rundeck's `localexec`: a command line run by `sh -c` on the runner
    /// itself, also for a node step (with the node's context), never on
    /// the node.
    LocalExec { command: String },
    /// A script body written to a temp file and run with its args.
    Script {
        /// The body; empty when `source` names where the runner reads it.
        script: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        args: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interpreter: Option<String>,
        /// A file on the runner or a URL it fetches, instead of `script`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<ScriptSource>,
        /// The script's path and args go to the interpreter as one quoted
        /// argument.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        interpreter_args_quoted: bool,
        /// The temp file's extension (`ps1`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_extension: Option<String>,
        /// Replace `@key@` tokens in a `source` script too (an inline one
        /// always has them replaced).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        expand_tokens: bool,
    },
    /// An integration plugin step (`plugin` is its Rundeck type), with its
    /// configuration as the job holds it, references expanded.
    Plugin {
        plugin: String,
        config: BTreeMap<String, String>,
        /// The keys of `config` whose value, as the job wrote it, is a key
        /// storage path the runner reads from its key store; any other
        /// value is used as it expanded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stored: Vec<String>,
    },
}

/// Where a script step's body comes from when it is not inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum ScriptSource {
    /// A path on the runner (Rundeck's `scriptfile`).
    File { path: String },
    /// An http(s) URL the runner fetches (Rundeck's `scripturl`).
    Url { url: String },
}

impl StepCommand {
    /// The integration plugin (its Rundeck type) this command needs.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            StepCommand::Plugin { plugin, .. } => Some(plugin),
            _ => None,
        }
    }

    /// The command with `${key}` references replaced.
    pub fn substituted(&self, vars: &BTreeMap<String, String>) -> StepCommand {
        self.map_text(|t| crate::job::substitute(t, vars))
    }

    /// The command with `f` applied to each text that references expand
    /// in: the command, a script's body and args, its path or URL.
    pub fn map_text(&self, f: impl Fn(&str) -> String) -> StepCommand {
        self.map_parts(&f, &f)
    }

    /// [`Self::map_text`] with a script's body apart: `body` for it, `f`
    /// for the rest.
    pub fn map_parts(
        &self,
        body: impl Fn(&str) -> String,
        f: impl Fn(&str) -> String,
    ) -> StepCommand {
        match self {
            StepCommand::Exec { command } => StepCommand::Exec {
                command: f(command),
            },
            StepCommand::LocalExec { command } => StepCommand::LocalExec {
                command: f(command),
            },
            StepCommand::Script {
                script,
                args,
                interpreter,
                source,
                interpreter_args_quoted,
                file_extension,
                expand_tokens,
            } => StepCommand::Script {
                script: body(script),
                args: args.as_deref().map(&f),
                interpreter: interpreter.clone(),
                source: source.as_ref().map(|s| match s {
                    ScriptSource::File { path } => ScriptSource::File { path: f(path) },
                    ScriptSource::Url { url } => ScriptSource::Url { url: f(url) },
                }),
                interpreter_args_quoted: *interpreter_args_quoted,
                file_extension: file_extension.clone(),
                expand_tokens: *expand_tokens,
            },
            StepCommand::Plugin {
                plugin,
                config,
                stored,
            } => StepCommand::Plugin {
                plugin: plugin.clone(),
                config: config.iter().map(|(k, v)| (k.clone(), f(v))).collect(),
                stored: stored.clone(),
            },
        }
    }
}
