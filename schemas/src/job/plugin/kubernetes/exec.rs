//! `Kubernetes-Execute-Step`: a command in a container of an existing pod,
//! over the API's exec subresource.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::config::{flag, from_map_flat, text};
use super::{Kind, KubeAction, KubeAuthConfig, KubeStep, ObjectRef};

/// The step's configuration as a job export holds it: every value text.
/// The committed JSON Schema (`plugin_kubernetes.v1.json`) is this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct KubernetesExecConfig {
    /// The pod; default the node's `default:name` attribute.
    pub name: Option<String>,
    /// The namespace; default the node's `default:namespace`, else
    /// `default`.
    pub namespace: Option<String>,
    /// The container; default the node's `default:container_name`, else
    /// the pod's first.
    pub container: Option<String>,
    /// Runs the command as `[shell, "-c", command]`; default `/bin/bash`.
    pub shell: Option<String>,
    /// The command; required.
    pub command: Option<String>,
    /// Print what the step connects to.
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// What to run; the pod is the step's [`ObjectRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeExec {
    pub container: Option<String>,
    pub argv: Vec<String>,
}

impl KubernetesExecConfig {
    /// Reads the configuration map (unknown keys are errors).
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("the Kubernetes step", config)
    }

    /// Checks what can be checked before references expand (`at_import`),
    /// or everything (on the runner).
    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        let command = text(&self.command)
            .ok_or("the Kubernetes step needs configuration.command")?
            .to_string();
        let shell = text(&self.shell).unwrap_or("/bin/bash").to_string();
        let connection = self.auth.connection(at_import)?;
        Ok(KubeStep {
            action: KubeAction::Exec(KubeExec {
                container: owned(&self.container),
                argv: vec![shell, "-c".into(), command],
            }),
            object: ObjectRef {
                kind: Kind::Pod,
                name: owned(&self.name),
                namespace: owned(&self.namespace),
                from_node: true,
            },
            connection,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
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
        match KubernetesExecConfig::from_map(&config).and_then(|c| c.step(true)) {
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
}
