//! Plugin steps (`type`, `configuration`, `nodeStep`): one registry of the
//! step types Outpost knows. The ones Rundeck's core ships run here, and
//! the integration plugins built so far (the HTTP request step, Ansible's
//! workflow and node steps, copy file, Kubernetes' pod, Job and generic
//! steps and its rollout waits) on the runner; the others (Rundeck's other
//! core steps, Kubernetes' deployment and service steps) are known and
//! refused as not supported yet; any other type is refused with the known
//! ones listed.

use std::collections::BTreeMap;

use super::NOT_SUPPORTED_YET;

pub mod ansible;
mod config;
pub mod copyfile;
pub mod http;
pub mod kubernetes;
pub mod winrm;

/// How a known step type stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read as the `exec` or `script` step it is (Rundeck 5.0's exports).
    Builtin,
    /// Runs.
    Runs,
    /// Known, and built in a later issue.
    Later,
}

/// Every step type Outpost knows, with its configuration keys (for the
/// ones that run).
pub const STEP_TYPES: &[(&str, Support, &[&str])] = &[
    ("exec-command", Support::Builtin, &[]),
    ("script-inline", Support::Builtin, &[]),
    ("localexec", Support::Runs, &["command"]),
    ("flow-control", Support::Runs, &["halt", "fail", "status"]),
    ("export-var", Support::Runs, &["export", "group", "value"]),
    // Rundeck's other core steps and the integration plugins.
    ("script-file-url", Support::Later, &[]),
    // Keys checked by `copyfile::CopyFileConfig`.
    ("copyfile", Support::Runs, &[]),
    ("job-state-conditional", Support::Later, &[]),
    ("source-refresh-plugin", Support::Later, &[]),
    ("log-data-step", Support::Later, &[]),
    ("stub-data-step", Support::Later, &[]),
    ("stub-node-step", Support::Later, &[]),
    // Keys checked by `ansible::AnsibleConfig`.
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep",
        Support::Runs,
        &[],
    ),
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowStep",
        Support::Runs,
        &[],
    ),
    (
        "com.batix.rundeck.plugins.AnsibleModuleWorkflowStep",
        Support::Runs,
        &[],
    ),
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookWorflowNodeStep",
        Support::Runs,
        &[],
    ),
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowNodeStep",
        Support::Runs,
        &[],
    ),
    // Rundeck's Kubernetes plugin (rundeck-plugins/kubernetes): every one a
    // node step; see docs/research/rundeck-kubernetes-plugin.md.
    ("Kubernetes-Create-Pod", Support::Runs, &[]),
    ("Kubernetes-Wait-Pod", Support::Runs, &[]),
    ("Kubernetes-Pods-Logs", Support::Runs, &[]),
    ("Kubernetes-Delete-Pod", Support::Runs, &[]),
    ("Kubernetes-Describe-Pod", Support::Later, &[]),
    // Keys checked by `kubernetes::read`.
    ("Kubernetes-Execute-Step", Support::Runs, &[]),
    ("Kubernetes-InlineScript-Step", Support::Later, &[]),
    ("Kubernetes-Ephemeral-Container", Support::Later, &[]),
    ("Kubernetes-Create-Job", Support::Runs, &[]),
    ("Kubernetes-Wait-Job", Support::Runs, &[]),
    ("Kubernetes-Delete-Job", Support::Runs, &[]),
    ("Kubernetes-Run-Job", Support::Later, &[]),
    ("Kubernetes-Create", Support::Runs, &[]),
    ("Kubernetes-Delete", Support::Runs, &[]),
    ("Kubernetes-Create-Deployment", Support::Later, &[]),
    ("Kubernetes-Update-Deployment", Support::Later, &[]),
    ("Kubernetes-Delete-Deployment", Support::Later, &[]),
    ("Kubernetes-Status-Deployment", Support::Later, &[]),
    ("Kubernetes-Wait-Deployment", Support::Runs, &[]),
    ("Kubernetes-Wait-StatefulSet", Support::Runs, &[]),
    ("Kubernetes-Create-Service", Support::Later, &[]),
    ("Kubernetes-Update-Service", Support::Later, &[]),
    ("Kubernetes-Delete-Service", Support::Later, &[]),
    // Keys checked by `http::HttpRequestConfig`.
    (
        "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin",
        Support::Runs,
        &[],
    ),
    (
        "edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin",
        Support::Runs,
        &[],
    ),
];

/// A plugin step that runs, with its configuration read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStep {
    /// Rundeck's `localexec`: a command on the runner itself (Rundeck's
    /// server), with the node's context when it is a node step.
    LocalExec { command: String },
    /// Rundeck's `flow-control`: stop the workflow with a status, or go on.
    FlowControl(FlowControl),
    /// Rundeck's `export-var`: sets `${group.name}` for the later steps.
    ExportVar {
        group: String,
        name: String,
        value: String,
    },
    /// An integration plugin the runner runs (`runner/src/plugins/`), with
    /// the configuration it reads again once references are expanded.
    OnRunner { plugin: String, node_step: bool },
}

/// `flow-control`, as Rundeck's `FlowControlWorkflowStep` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    Continue,
    /// Halt: the execution ends, succeeded or failed, whatever follows.
    Halt {
        succeeded: bool,
    },
}

fn flag(config: &BTreeMap<String, String>, key: &str, default: bool) -> Result<bool, String> {
    config::flag(key, &config.get(key).cloned(), default, false)
}

/// The configuration keys of a plugin step whose value, as the job writes
/// it, is a key storage path for the runner to read.
pub fn stored_keys(plugin: &str, config: &BTreeMap<String, String>) -> Vec<String> {
    if http::TYPES.iter().any(|(t, _)| *t == plugin) {
        return http::stored_keys(config);
    }
    if ansible::TYPES.iter().any(|(t, _)| *t == plugin) {
        return ansible::stored_keys(config);
    }
    if kubernetes::TYPES.iter().any(|(t, _)| *t == plugin) {
        return kubernetes::stored_keys(config);
    }
    Vec::new()
}

/// The known types, for an error message.
pub fn known_types() -> String {
    STEP_TYPES
        .iter()
        .map(|(t, _, _)| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PluginStep {
    /// Reads a plugin step of a type that runs; an unknown type, a type
    /// not built yet or a bad configuration is an error naming it.
    pub fn read(step_type: &str, config: &BTreeMap<String, String>) -> Result<PluginStep, String> {
        let Some((_, support, keys)) = STEP_TYPES.iter().find(|(t, _, _)| *t == step_type) else {
            return Err(format!(
                "unknown plugin step type `{step_type}`; the types Outpost knows are {}",
                known_types()
            ));
        };
        if *support == Support::Later {
            return Err(format!(
                "{NOT_SUPPORTED_YET}: plugin step type `{step_type}` (it is known, and comes with the integration plugins)"
            ));
        }
        if let Some((_, node_step)) = http::TYPES.iter().find(|(t, _)| *t == step_type) {
            http::HttpRequestConfig::from_map(config)?.request(true)?;
            return Ok(PluginStep::OnRunner {
                plugin: step_type.to_string(),
                node_step: *node_step,
            });
        }
        if let Some((_, node_step)) = copyfile::TYPES.iter().find(|(t, _)| *t == step_type) {
            copyfile::CopyFileConfig::from_map(config)?.copy(true)?;
            return Ok(PluginStep::OnRunner {
                plugin: step_type.to_string(),
                node_step: *node_step,
            });
        }
        if let Some((_, node_step)) = ansible::TYPES.iter().find(|(t, _)| *t == step_type) {
            ansible::AnsibleConfig::from_map(config)?.run_for(true, *node_step)?;
            return Ok(PluginStep::OnRunner {
                plugin: step_type.to_string(),
                node_step: *node_step,
            });
        }
        if let Some((_, node_step)) = kubernetes::TYPES.iter().find(|(t, _)| *t == step_type) {
            kubernetes::read(step_type, config, true)?;
            return Ok(PluginStep::OnRunner {
                plugin: step_type.to_string(),
                node_step: *node_step,
            });
        }
        if let Some(k) = config.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(format!(
                "`{step_type}` has no configuration key `{k}`; its keys are {}",
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let get = |k: &str| {
            config
                .get(k)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        match step_type {
            "localexec" => {
                let command = get("command");
                if command.is_empty() {
                    return Err("`localexec` needs configuration.command".into());
                }
                Ok(PluginStep::LocalExec { command })
            }
            "flow-control" => {
                let halt = flag(config, "halt", false)?;
                let fail = flag(config, "fail", true)?;
                let status = get("status");
                if !halt {
                    return Ok(PluginStep::FlowControl(FlowControl::Continue));
                }
                let succeeded = match status.as_str() {
                    "" => !fail,
                    "succeeded" => true,
                    "failed" => false,
                    other => {
                        return Err(format!(
                            "{NOT_SUPPORTED_YET}: flow-control status `{other}` (a custom status; `succeeded` and `failed` are built)"
                        ))
                    }
                };
                Ok(PluginStep::FlowControl(FlowControl::Halt { succeeded }))
            }
            "export-var" => {
                let (group, name, value) = (get("group"), get("export"), get("value"));
                let group = if group.is_empty() {
                    "export".to_string()
                } else {
                    group
                };
                if name.is_empty() {
                    return Err(
                        "`export-var` needs configuration.export (the variable's name)".into(),
                    );
                }
                if value.is_empty() {
                    return Err("`export-var` needs configuration.value".into());
                }
                for part in [&group, &name] {
                    if !part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                    {
                        return Err(format!(
                            "`export-var`: `{part}` may hold only letters, digits, `_` and `-`"
                        ));
                    }
                }
                Ok(PluginStep::ExportVar { group, name, value })
            }
            other => unreachable!("every type that runs is read: {other}"),
        }
    }

    /// Whether Rundeck runs it once per node (`nodeStep: true`).
    pub fn is_node_step(&self) -> bool {
        match self {
            PluginStep::LocalExec { .. } => true,
            PluginStep::OnRunner { node_step, .. } => *node_step,
            PluginStep::FlowControl(_) | PluginStep::ExportVar { .. } => false,
        }
    }

    /// Whether a runner runs it (else the control plane carries it out).
    pub fn runs_on_runner(&self) -> bool {
        matches!(
            self,
            PluginStep::LocalExec { .. } | PluginStep::OnRunner { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn core_steps_read_as_rundeck_defines_them() {
        use FlowControl::*;
        let fc = |pairs: &[(&str, &str)]| PluginStep::read("flow-control", &config(pairs));
        assert_eq!(fc(&[]).unwrap(), PluginStep::FlowControl(Continue));
        // `fail` defaults to true: a bare halt fails.
        assert_eq!(
            fc(&[("halt", "true")]).unwrap(),
            PluginStep::FlowControl(Halt { succeeded: false })
        );
        assert_eq!(
            fc(&[("halt", "true"), ("fail", "false")]).unwrap(),
            PluginStep::FlowControl(Halt { succeeded: true })
        );
        assert_eq!(
            fc(&[("halt", "true"), ("status", "succeeded")]).unwrap(),
            PluginStep::FlowControl(Halt { succeeded: true })
        );
        assert!(fc(&[("halt", "true"), ("status", "unstable")])
            .unwrap_err()
            .contains("not supported yet: flow-control status `unstable`"));
        assert_eq!(
            PluginStep::read(
                "export-var",
                &config(&[("export", "ver"), ("value", "2.1")])
            )
            .unwrap(),
            PluginStep::ExportVar {
                group: "export".into(),
                name: "ver".into(),
                value: "2.1".into()
            }
        );
        assert!(PluginStep::read("localexec", &config(&[]))
            .unwrap_err()
            .contains("needs configuration.command"));
        assert!(PluginStep::read("localexec", &config(&[("cmd", "ls")]))
            .unwrap_err()
            .contains("has no configuration key `cmd`; its keys are `command`"));
        let unknown = PluginStep::read("my-plugin", &config(&[])).unwrap_err();
        assert!(
            unknown.starts_with(
                "unknown plugin step type `my-plugin`; the types Outpost knows are `exec-command`"
            ),
            "{unknown}"
        );
        assert!(PluginStep::read("log-data-step", &config(&[]))
            .unwrap_err()
            .starts_with("not supported yet: plugin step type `log-data-step`"));
    }
}
