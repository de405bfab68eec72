//! Rundeck's Kubernetes plugin (`rundeck-plugins/kubernetes`), the steps
//! built so far: `Kubernetes-Execute-Step`, a command in a container of an
//! existing pod over the API's exec subresource. Its keys are the
//! plugin's (`plugin.yaml`); see `docs/research/rundeck-kubernetes-plugin.md`
//! §2 and §3.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::{deferred, flag, from_map, text};

/// The step's configuration as a job export holds it: every value text.
/// The committed JSON Schema (`plugin_kubernetes.v1.json`) is this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesExecConfig {
    /// The pod; default the node's `default:name` attribute.
    pub name: Option<String>,
    /// The namespace; default the node's `default:namespace`, else
    /// `default`.
    pub namespace: Option<String>,
    /// The container; default the node's `default:container_name`, else
    /// the pod's only one.
    pub container: Option<String>,
    /// Runs the command as `[shell, "-c", command]`; default `/bin/bash`.
    pub shell: Option<String>,
    /// The command; required.
    pub command: Option<String>,
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
    /// Print what the step connects to.
    pub debug: Option<String>,
    /// The plugin's Python (`python`, `python3`); read, and without effect.
    pub interpreter: Option<String>,
}

/// The step types: (type, node step).
pub const TYPES: &[(&str, bool)] = &[("Kubernetes-Execute-Step", true)];

/// The node attributes a pod node carries (the plugin's resource model
/// writes them), read when the step names no pod.
pub const NODE_NAME: &str = "default:name";
pub const NODE_NAMESPACE: &str = "default:namespace";
pub const NODE_CONTAINER: &str = "default:container_name";
/// A node's kubeconfig, read when the step names no connection.
pub const NODE_CONFIG_FILE: &str = "kubernetes:config_file";

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

/// What to run, with the pod as far as the step names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeExec {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub container: Option<String>,
    pub argv: Vec<String>,
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

impl KubernetesExecConfig {
    /// Reads the configuration map (unknown keys are errors).
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map("the Kubernetes step", config)
    }

    /// Checks what can be checked before references expand (`at_import`),
    /// or everything (on the runner).
    pub fn exec(&self, at_import: bool) -> Result<KubeExec, String> {
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        let command = text(&self.command)
            .ok_or("the Kubernetes step needs configuration.command")?
            .to_string();
        let shell = text(&self.shell).unwrap_or("/bin/bash").to_string();
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
        let connection = match (owned(&self.config_file), owned(&self.url)) {
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
        };
        Ok(KubeExec {
            pod: owned(&self.name),
            namespace: owned(&self.namespace),
            container: owned(&self.container),
            argv: vec![shell, "-c".into(), command],
            connection,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl KubeExec {
    /// The pod, namespace and container, the step's first, then the node's
    /// attributes (a pod node's), as the plugin falls back.
    pub fn target(
        &self,
        node: &BTreeMap<String, String>,
    ) -> Result<(String, String, Option<String>), String> {
        let attr = |k: &str| node.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let pod = self
            .pod
            .clone()
            .or_else(|| attr(NODE_NAME).map(str::to_string))
            .ok_or("the Kubernetes step names no pod: set configuration.name, or run it on a pod node (attribute default:name)")?;
        let namespace = self
            .namespace
            .clone()
            .or_else(|| attr(NODE_NAMESPACE).map(str::to_string))
            .unwrap_or_else(|| "default".into());
        let container = self
            .container
            .clone()
            .or_else(|| attr(NODE_CONTAINER).map(str::to_string));
        Ok((pod, namespace, container))
    }

    /// The connection, with a node's kubeconfig where the step names none.
    pub fn connection_for(&self, node: &BTreeMap<String, String>) -> KubeConnection {
        match (&self.connection, node.get(NODE_CONFIG_FILE)) {
            (KubeConnection::Infer, Some(f)) if !f.trim().is_empty() => {
                KubeConnection::ConfigFile(f.trim().to_string())
            }
            (c, _) => c.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> String {
        let config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match KubernetesExecConfig::from_map(&config).and_then(|c| c.exec(true)) {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn configurations_read_as_the_plugin_reads_them() {
        let cases: &[&[(&str, &str)]] = &[
            &[("command", "df -h")],
            &[
                ("name", "web-0"),
                ("namespace", "shop"),
                ("container", "app"),
                ("shell", "/bin/sh"),
                ("command", "env | sort"),
                ("url", "https://10.0.0.1:6443"),
                ("token", "keys/project/p/k8s-token"),
                ("verify_ssl", "false"),
                ("ssl_ca_cert", "/etc/k8s/ca.crt"),
                ("debug", "true"),
                ("interpreter", "python3"),
            ],
            &[("command", "true"), ("config_file", "/etc/k8s/admin.conf")],
            &[("shell", "/bin/sh")],
            &[("command", "true"), ("token", "keys/t")],
            &[
                ("command", "true"),
                ("url", "https://k8s"),
                ("token", "keys/${option.k}"),
            ],
            &[
                ("command", "true"),
                ("url", "https://k8s"),
                ("token", "s3cret"),
            ],
            &[("command", "true"), ("interpreter", "ruby")],
            &[("command", "true"), ("image", "busybox")],
            &[("command", "true"), ("verify_ssl", "maybe"), ("url", "u")],
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| format!("{c:?}\n=> {}", read(c)))
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }

    #[test]
    fn the_pod_comes_from_the_step_then_the_node() {
        let exec = KubernetesExecConfig {
            command: Some("true".into()),
            ..Default::default()
        }
        .exec(false)
        .unwrap();
        let node: BTreeMap<String, String> = [
            (NODE_NAME.to_string(), "web-0".to_string()),
            (NODE_CONTAINER.to_string(), "app".to_string()),
            (NODE_CONFIG_FILE.to_string(), "/etc/k8s/c".to_string()),
        ]
        .into();
        assert_eq!(
            exec.target(&node).unwrap(),
            ("web-0".into(), "default".into(), Some("app".into()))
        );
        assert_eq!(
            exec.connection_for(&node),
            KubeConnection::ConfigFile("/etc/k8s/c".into())
        );
        assert!(exec
            .target(&BTreeMap::new())
            .unwrap_err()
            .contains("names no pod"));
    }
}
