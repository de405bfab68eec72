//! Rundeck's Kubernetes plugin (`rundeck-plugins/kubernetes`), the steps
//! built so far: a command in a pod (`exec`), a pod or Job created from the
//! step's keys (`create`), and waiting for one, reading its log and
//! deleting it (`lifecycle`), and the generic steps: a manifest applied,
//! an object deleted, a rollout waited for (`generic`). Their keys are the plugin's (`plugin.yaml`);
//! see `docs/research/rundeck-kubernetes-plugin.md` §2 and §3.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::{deferred, flag, text};

mod create;
mod exec;
mod generic;
mod lifecycle;
mod source;

pub use create::{Container, CreateJobConfig, CreatePodConfig, JobSpec, PodSpec};
pub use exec::{KubeExec, KubernetesExecConfig};
pub use generic::{
    manifest, GenericCreateConfig, GenericDeleteConfig, Resource, RolloutWaitConfig,
};
pub use lifecycle::{DeleteConfig, LogsConfig, Wait, WaitConfig};
pub use source::{PodsSource, PodsSourceConfig};

/// The step types: (type, node step). Every one of the plugin's is a node
/// step.
pub const TYPES: &[(&str, bool)] = &[
    ("Kubernetes-Execute-Step", true),
    ("Kubernetes-Create-Pod", true),
    ("Kubernetes-Wait-Pod", true),
    ("Kubernetes-Pods-Logs", true),
    ("Kubernetes-Delete-Pod", true),
    ("Kubernetes-Create-Job", true),
    ("Kubernetes-Wait-Job", true),
    ("Kubernetes-Delete-Job", true),
    ("Kubernetes-Create", true),
    ("Kubernetes-Delete", true),
    ("Kubernetes-Wait-Deployment", true),
    ("Kubernetes-Wait-StatefulSet", true),
];

/// The node attributes a pod node carries (the plugin's resource model
/// writes them), read when a pod step names no pod.
pub const NODE_NAME: &str = "default:name";
pub const NODE_NAMESPACE: &str = "default:namespace";
pub const NODE_CONTAINER: &str = "default:container_name";
/// A node's kubeconfig, read when the step names no connection.
pub const NODE_CONFIG_FILE: &str = "kubernetes:config_file";

/// The plugin's node executor (`node-executor` of a pod node): a node
/// step's command runs in the node's container, as `Kubernetes-Execute-Step`
/// runs one.
pub const NODE_EXECUTOR: &str = "Kubernetes-node-executor";
/// Its file copier (`file-copier`), not built yet.
pub const FILE_COPIER: &str = "Kubernetes-file-copier";
/// The shell the node executor runs a command with: the node's
/// `kube-pod-shell`, else the plugin's default for its `shell`.
pub const NODE_EXECUTOR_SHELL: &str = "/bin/bash";
pub const NODE_SHELL: &str = "kube-pod-shell";

/// The label on every pod and Job a step creates: the execution that
/// created it, so that an abort deletes what its own execution made and
/// nothing else.
pub const EXECUTION_LABEL: &str = "outpost.dev/execution";

/// The connection keys every step of the plugin has (its auth block), and
/// `interpreter`, which every step but the resource model has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KubeAuthConfig {
    /// A kubeconfig on the runner.
    pub config_file: Option<String>,
    /// The API server's URL, with `token`.
    pub url: Option<String>,
    /// A key storage path (`keys/…`) of the bearer token, read by the runner.
    pub token: Option<String>,
    /// Check the server's certificate (default true; see docs/plugins.md).
    pub verify_ssl: Option<String>,
    /// A CA certificate file on the runner for the server's certificate.
    pub ssl_ca_cert: Option<String>,
    /// The plugin's Python (`python`, `python3`); read, and without effect.
    pub interpreter: Option<String>,
}

/// How the runner reaches the API server, in the plugin's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeConnection {
    /// A kubeconfig on the runner (`config_file`, or the node's
    /// `kubernetes:config_file`).
    ConfigFile(String),
    /// `url` with the token at a key storage path.
    Url {
        url: String,
        token: Option<String>,
        verify: bool,
        ca_file: Option<String>,
    },
    /// Neither: the runner's `$KUBECONFIG` or `~/.kube/config`, else in
    /// the cluster (its service account).
    Infer,
}

impl KubeAuthConfig {
    /// The connection the keys name; at import a reference is left for the
    /// runner, except in `token`, which must name its key itself.
    pub fn connection(&self, at_import: bool) -> Result<KubeConnection, String> {
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        if let Some(i) = text(&self.interpreter) {
            let checked = ["python", "python3"].contains(&i) || (at_import && deferred(i));
            if !checked {
                return Err(format!(
                    "configuration.interpreter: `{i}` is not one of the plugin's: python, python3"
                ));
            }
        }
        if let Some(t) = text(&self.token) {
            // The job names the key; a run's options must not choose another.
            if deferred(t) {
                return Err(format!(
                    "configuration.token: `{t}` is a storage path with a reference; write the path itself"
                ));
            }
            if !t.starts_with("keys/") {
                return Err(format!(
                    "configuration.token: `{t}` is not a key storage path (keys/…); the plugin reads the token from Key Storage"
                ));
            }
        }
        Ok(match (owned(&self.config_file), owned(&self.url)) {
            (Some(file), _) => KubeConnection::ConfigFile(file),
            (None, Some(url)) => KubeConnection::Url {
                url,
                token: owned(&self.token),
                verify: flag("verify_ssl", &self.verify_ssl, true, at_import)?,
                ca_file: owned(&self.ssl_ca_cert),
            },
            (None, None) => {
                if text(&self.token).is_some() {
                    return Err(
                        "configuration.token without configuration.url: give the API server's URL"
                            .into(),
                    );
                }
                KubeConnection::Infer
            }
        })
    }
}

impl KubeConnection {
    /// The connection, with a node's kubeconfig where the step names none.
    pub fn for_node(&self, node: &BTreeMap<String, String>) -> KubeConnection {
        match (self, node.get(NODE_CONFIG_FILE)) {
            (KubeConnection::Infer, Some(f)) if !f.trim().is_empty() => {
                KubeConnection::ConfigFile(f.trim().to_string())
            }
            (c, _) => c.clone(),
        }
    }
}

/// What kind of object a step works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Job,
    /// What the generic steps and the rollout waits work on.
    Other(Resource),
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Job => "Job",
            Kind::Other(r) => r.name(),
        }
    }
}

/// The object a step names: its name and namespace as the step gives them,
/// and, for the pod steps, the node's attributes where it gives none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub kind: Kind,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The pod steps fall back on a pod node's `default:*` attributes; the
    /// Job steps do not (the plugin's scripts read only their keys).
    pub from_node: bool,
}

impl ObjectRef {
    /// `(name, namespace)`: the step's, else the node's, else namespace
    /// `default`.
    pub fn resolve(&self, node: &BTreeMap<String, String>) -> Result<(String, String), String> {
        let attr = |k: &str| {
            self.from_node
                .then(|| node.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()))
                .flatten()
                .map(str::to_string)
        };
        let name = self.name.clone().or_else(|| attr(NODE_NAME)).ok_or_else(|| {
            if self.from_node {
                format!("the step names no {}: set configuration.name, or run it on a pod node (attribute default:name)", self.kind.as_str())
            } else {
                format!("the step names no {}: set configuration.name", self.kind.as_str())
            }
        })?;
        let namespace = self
            .namespace
            .clone()
            .or_else(|| attr(NODE_NAMESPACE))
            .unwrap_or_else(|| "default".into());
        Ok((name, namespace))
    }
}

/// What a Kubernetes step does.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeAction {
    /// `Kubernetes-Execute-Step`.
    Exec(KubeExec),
    /// `Kubernetes-Create-Pod`: the pod, from the step's keys.
    CreatePod(Box<PodSpec>),
    /// `Kubernetes-Create-Job`.
    CreateJob(Box<JobSpec>),
    /// `Kubernetes-Create`: the manifest (`Null` at import while it
    /// waits for its references).
    Apply(serde_json::Value),
    /// `Kubernetes-Wait-Pod`, `Kubernetes-Wait-Job`, and for a Deployment
    /// or a StatefulSet its rollout.
    Wait(Wait),
    /// `Kubernetes-Pods-Logs`: the pod's log, followed or not.
    Logs {
        container: Option<String>,
        follow: bool,
        tail_lines: Option<i64>,
    },
    /// `Kubernetes-Delete-Pod`, `Kubernetes-Delete-Job`, `Kubernetes-Delete`.
    Delete,
}

/// A Kubernetes step, read.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeStep {
    pub action: KubeAction,
    /// What it works on (for `Exec`, the pod).
    pub object: ObjectRef,
    pub connection: KubeConnection,
    pub debug: bool,
}

/// The configuration keys whose value, as the job writes it, is a key
/// storage path the runner reads.
pub fn stored_keys(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .get("token")
        .filter(|t| !t.trim().is_empty())
        .map(|_| vec!["token".to_string()])
        .unwrap_or_default()
}

/// Reads the step `step_type` (one of [`TYPES`]): what can be checked
/// before references expand (`at_import`), or everything (on the runner).
pub fn read(
    step_type: &str,
    config: &BTreeMap<String, String>,
    at_import: bool,
) -> Result<KubeStep, String> {
    match step_type {
        "Kubernetes-Execute-Step" => KubernetesExecConfig::from_map(config)?.step(at_import),
        "Kubernetes-Create-Pod" => CreatePodConfig::from_map(config)?.step(at_import),
        "Kubernetes-Create-Job" => CreateJobConfig::from_map(config)?.step(at_import),
        "Kubernetes-Wait-Pod" => {
            WaitConfig::from_map(config, Kind::Pod, step_type)?.step(Kind::Pod, at_import)
        }
        "Kubernetes-Wait-Job" => {
            WaitConfig::from_map(config, Kind::Job, step_type)?.step(Kind::Job, at_import)
        }
        "Kubernetes-Pods-Logs" => LogsConfig::from_map(config)?.step(at_import),
        "Kubernetes-Delete-Pod" => {
            DeleteConfig::from_map(config, Kind::Pod, step_type)?.step(Kind::Pod, at_import)
        }
        "Kubernetes-Delete-Job" => {
            DeleteConfig::from_map(config, Kind::Job, step_type)?.step(Kind::Job, at_import)
        }
        "Kubernetes-Create" => GenericCreateConfig::from_map(config)?.step(at_import),
        "Kubernetes-Delete" => GenericDeleteConfig::from_map(config)?.step(at_import),
        "Kubernetes-Wait-Deployment" => {
            RolloutWaitConfig::from_map(config, step_type)?.step(Resource::Deployment, at_import)
        }
        "Kubernetes-Wait-StatefulSet" => {
            RolloutWaitConfig::from_map(config, step_type)?.step(Resource::StatefulSet, at_import)
        }
        other => Err(format!("`{other}` is not a Kubernetes step Outpost runs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_object_comes_from_the_step_then_a_pod_node() {
        let node = map(&[(NODE_NAME, "web-0"), (NODE_NAMESPACE, "shop")]);
        let pod = ObjectRef {
            kind: Kind::Pod,
            name: None,
            namespace: None,
            from_node: true,
        };
        assert_eq!(pod.resolve(&node).unwrap(), ("web-0".into(), "shop".into()));
        let job = ObjectRef {
            kind: Kind::Job,
            from_node: false,
            ..pod.clone()
        };
        assert!(job.resolve(&node).unwrap_err().contains("names no Job"));
        let named = ObjectRef {
            name: Some("report".into()),
            ..job
        };
        assert_eq!(
            named.resolve(&node).unwrap(),
            ("report".into(), "default".into())
        );
        let node_config = map(&[(NODE_CONFIG_FILE, "/etc/k8s/c")]);
        assert_eq!(
            KubeConnection::Infer.for_node(&node_config),
            KubeConnection::ConfigFile("/etc/k8s/c".into())
        );
    }
}
