//! `--allowed-plugins FILE`: which of its plugins a runner may run, in the
//! shape of the Enterprise Runner's `remoteRunnerAllowedPluginsFile`:
//!
//! ```yaml
//! allowedPlugins:
//!   WorkflowStep: [edu.ohio.ais.rundeck.HttpWorkflowStepPlugin]
//!   WorkflowNodeStep: []
//! ```
//!
//! Rundeck reads that file on its server and pins the listed providers to
//! remote runners. Here it is the runner's own list, so the people who run
//! a network decide what runs in it: a plugin left out is never run by
//! this runner, whatever a job asks. Without the option every plugin the
//! runner has is allowed. Exec, script and `localexec` steps are not
//! plugins and are always allowed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// The services a provider is listed under, as Rundeck names them.
const SERVICES: &[&str] = &[
    "WorkflowStep",
    "WorkflowNodeStep",
    "NodeExecutor",
    "FileCopier",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    /// Rundeck types.
    allowed: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowListError {
    #[error("{0}")]
    Yaml(String),
    #[error("the allow-list needs `allowedPlugins` (it may be empty: `allowedPlugins: {{}}`)")]
    Missing,
    #[error("`localExecutionPlugins` is not supported: it pins plugins to Rundeck's server, and an Outpost runner's list says only what it allows; remove it (a step runs where its runner selector sends it)")]
    LocalExecution,
    #[error("allowedPlugins.{service}: unknown service; the services are {}", SERVICES.join(", "))]
    UnknownService { service: String },
    #[error("allowedPlugins.{service}: `{plugin}` is a {actual} plugin; list it under {actual}")]
    WrongService {
        service: String,
        plugin: String,
        actual: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    allowed_plugins: Option<BTreeMap<String, Option<Vec<String>>>>,
    local_execution_plugins: Option<serde_yaml_ng::Value>,
}

impl AllowList {
    /// Reads the file's text. `known` is what this runner has: each type
    /// with its service. A name it does not know is kept (a later runner
    /// may have it) and returned as a warning, so that a typo is seen.
    pub fn parse(
        text: &str,
        known: &[(&str, &str)],
    ) -> Result<(AllowList, Vec<String>), AllowListError> {
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(text, &e))?;
        if file.local_execution_plugins.is_some() {
            return Err(AllowListError::LocalExecution);
        }
        let listed = file.allowed_plugins.ok_or(AllowListError::Missing)?;
        let mut allowed = BTreeSet::new();
        let mut warnings = Vec::new();
        for (service, plugins) in listed {
            if !SERVICES.contains(&service.as_str()) {
                return Err(AllowListError::UnknownService { service });
            }
            for plugin in plugins.unwrap_or_default() {
                match known.iter().find(|(t, _)| *t == plugin) {
                    Some((_, actual)) if *actual != service => {
                        return Err(AllowListError::WrongService {
                            service,
                            plugin,
                            actual: actual.to_string(),
                        })
                    }
                    Some(_) => {}
                    None => warnings.push(format!(
                        "allowedPlugins.{service}: this runner has no plugin `{plugin}`; it is allowed should it have one"
                    )),
                }
                allowed.insert(plugin);
            }
        }
        Ok((AllowList { allowed }, warnings))
    }

    pub fn allows(&self, plugin: &str) -> bool {
        self.allowed.contains(plugin)
    }
}

/// serde_yaml_ng's message places most faults, but not an unknown key on
/// the first line; a typo'd key is the likeliest fault, so find its line.
fn yaml_error(text: &str, e: &serde_yaml_ng::Error) -> AllowListError {
    let msg = e.to_string();
    if !msg.contains(" at line ") {
        if let Some(key) = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if let Some(n) = text.lines().position(|l| {
                l.strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
            }) {
                return AllowListError::Yaml(format!("{msg} at line {}", n + 1));
            }
        }
    }
    AllowListError::Yaml(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(&str, &str)] = &[
        (
            "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin",
            "WorkflowStep",
        ),
        (
            "edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin",
            "WorkflowNodeStep",
        ),
    ];

    /// Each file beside what it allows of KNOWN, or its error, and its
    /// warnings.
    #[test]
    fn allow_lists_read_as_rundeck_writes_them() {
        let cases: &[(&str, &str)] = &[
            (
                "allowedPlugins:\n  WorkflowStep: [edu.ohio.ais.rundeck.HttpWorkflowStepPlugin]\n",
                "allows [HttpWorkflowStepPlugin]",
            ),
            (
                "allowedPlugins:\n  WorkflowStep:\n  WorkflowNodeStep:\n    - edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin\n  NodeExecutor: [WinRMPython]\n",
                "allows [HttpWorkflowNodeStepPlugin]; warns allowedPlugins.NodeExecutor: this runner has no plugin `WinRMPython`; it is allowed should it have one",
            ),
            ("allowedPlugins: {}\n", "allows []"),
            (
                "",
                "error: the allow-list needs `allowedPlugins` (it may be empty: `allowedPlugins: {}`)",
            ),
            (
                "# the runner's list\nallowedPlugin:\n  WorkflowStep: []\n",
                "error: unknown field `allowedPlugin`, expected `allowedPlugins` or `localExecutionPlugins` at line 2 column 1",
            ),
            (
                "allowedPlugin:\n  WorkflowStep: []\n",
                "error: unknown field `allowedPlugin`, expected `allowedPlugins` or `localExecutionPlugins` at line 1",
            ),
            (
                "allowedPlugins:\n  WorkflowSteps: []\n",
                "error: allowedPlugins.WorkflowSteps: unknown service; the services are WorkflowStep, WorkflowNodeStep, NodeExecutor, FileCopier",
            ),
            (
                "allowedPlugins:\n  WorkflowStep: [edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin]\n",
                "error: allowedPlugins.WorkflowStep: `edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin` is a WorkflowNodeStep plugin; list it under WorkflowNodeStep",
            ),
            (
                "allowedPlugins: {}\nlocalExecutionPlugins:\n  WorkflowStep: [aws-vm-start-step]\n",
                "error: `localExecutionPlugins` is not supported: it pins plugins to Rundeck's server, and an Outpost runner's list says only what it allows; remove it (a step runs where its runner selector sends it)",
            ),
            (
                "allowedPlugins:\n  WorkflowStep: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin\n",
                "error: allowedPlugins.WorkflowStep: invalid type: string \"edu.ohio.ais.rundeck.HttpWorkflowStepPlugin\", expected a sequence at line 2 column 17",
            ),
        ];
        for (text, want) in cases {
            let got = match AllowList::parse(text, KNOWN) {
                Ok((list, warnings)) => {
                    let allowed: Vec<&str> = KNOWN
                        .iter()
                        .filter(|(t, _)| list.allows(t))
                        .map(|(t, _)| t.rsplit('.').next().unwrap())
                        .collect();
                    let mut s = format!("allows [{}]", allowed.join(", "));
                    if !warnings.is_empty() {
                        s += &format!("; warns {}", warnings.join("; "));
                    }
                    s
                }
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(&got, want, "for {text:?}");
        }
    }
}
