//! `Kubernetes-Wait-Pod`, `-Wait-Job`, `-Pods-Logs`, `-Delete-Pod` and
//! `-Delete-Job`: a step on a pod or Job that exists, by its name.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::config::{deferred, flag, from_map_flat, from_map_flat_without, text};
use super::{Kind, KubeAction, KubeAuthConfig, KubeStep, ObjectRef};

/// `Kubernetes-Wait-Pod`'s and `Kubernetes-Wait-Job`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct WaitConfig {
    /// The pod (default a pod node's `default:name`) or the Job (required).
    pub name: Option<String>,
    /// Default (for a pod, a pod node's `default:namespace`, else) `default`.
    pub namespace: Option<String>,
    /// How many times to look (default 100).
    pub retries: Option<String>,
    /// Seconds between looks (default 10).
    pub sleep: Option<String>,
    /// Write the log (default true).
    pub show_log: Option<String>,
    /// `Kubernetes-Wait-Job` only: write what the step does.
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// `Kubernetes-Pods-Logs`' configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct LogsConfig {
    /// The pod; default a pod node's `default:name`.
    pub name: Option<String>,
    /// Default a pod node's `default:container_name`, else the pod's only one.
    pub container_name: Option<String>,
    /// Default a pod node's `default:namespace`, else `default`.
    pub namespace: Option<String>,
    /// Follow the log until the container ends.
    pub follow: Option<String>,
    /// Only the last lines.
    pub number_of_lines: Option<String>,
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// `Kubernetes-Delete-Pod`'s and `Kubernetes-Delete-Job`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeleteConfig {
    /// The pod (default a pod node's `default:name`) or the Job (required).
    pub name: Option<String>,
    /// Default (for a pod, a pod node's `default:namespace`, else) `default`.
    pub namespace: Option<String>,
    /// `Kubernetes-Delete-Job` only.
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// How long a wait step looks, and whether it writes the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub retries: u32,
    pub sleep: Duration,
    pub show_log: bool,
}

/// The plugin's pod steps have no `debug` key; its Job steps do.
fn lacks(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Pod => &["debug"],
        Kind::Job | Kind::Other(_) => &[],
    }
}

fn object(
    kind: Kind,
    name: &Option<String>,
    namespace: &Option<String>,
) -> Result<ObjectRef, String> {
    let owned = |v: &Option<String>| text(v).map(str::to_string);
    if kind == Kind::Job && text(name).is_none() {
        return Err("the step needs configuration.name".into());
    }
    Ok(ObjectRef {
        kind,
        name: owned(name),
        namespace: owned(namespace),
        from_node: kind == Kind::Pod,
    })
}

/// A wait's `retries` (default 100) and `sleep` (seconds, default 10),
/// as every wait step of the plugin names them.
pub(super) fn looks(
    retries: &Option<String>,
    sleep: &Option<String>,
    at_import: bool,
) -> Result<(u32, Duration), String> {
    let retries: u32 = number("retries", retries, 100, at_import)?;
    let sleep: f64 = number("sleep", sleep, 10.0, at_import)?;
    if !(0.0..=86_400.0).contains(&sleep) {
        return Err(format!(
            "configuration.sleep: `{sleep}` is not between 0 and 86400 seconds"
        ));
    }
    Ok((retries, Duration::from_secs_f64(sleep)))
}

pub(super) fn number<T: std::str::FromStr>(
    key: &str,
    v: &Option<String>,
    default: T,
    at_import: bool,
) -> Result<T, String> {
    match text(v) {
        None => Ok(default),
        Some(v) if at_import && deferred(v) => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| format!("configuration.{key}: `{v}` is not a number")),
    }
}

impl WaitConfig {
    /// `step_type` names the step in errors.
    pub fn from_map(
        config: &BTreeMap<String, String>,
        kind: Kind,
        step_type: &str,
    ) -> Result<Self, String> {
        from_map_flat_without(step_type, config, lacks(kind))
    }

    pub fn step(&self, kind: Kind, at_import: bool) -> Result<KubeStep, String> {
        let (retries, sleep) = looks(&self.retries, &self.sleep, at_import)?;
        Ok(KubeStep {
            action: KubeAction::Wait(Wait {
                retries: retries.max(1),
                sleep,
                show_log: flag("show_log", &self.show_log, true, at_import)?,
            }),
            object: object(kind, &self.name, &self.namespace)?,
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl LogsConfig {
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("Kubernetes-Pods-Logs", config)
    }

    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let tail_lines = match text(&self.number_of_lines) {
            None => None,
            Some(_) => Some(number(
                "number_of_lines",
                &self.number_of_lines,
                0i64,
                at_import,
            )?)
            .filter(|n| *n > 0),
        };
        Ok(KubeStep {
            action: KubeAction::Logs {
                container: text(&self.container_name).map(str::to_string),
                follow: flag("follow", &self.follow, false, at_import)?,
                tail_lines,
            },
            object: object(Kind::Pod, &self.name, &self.namespace)?,
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl DeleteConfig {
    /// `step_type` names the step in errors.
    pub fn from_map(
        config: &BTreeMap<String, String>,
        kind: Kind,
        step_type: &str,
    ) -> Result<Self, String> {
        from_map_flat_without(step_type, config, lacks(kind))
    }

    pub fn step(&self, kind: Kind, at_import: bool) -> Result<KubeStep, String> {
        Ok(KubeStep {
            action: KubeAction::Delete,
            object: object(kind, &self.name, &self.namespace)?,
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;

    #[test]
    fn steps_on_an_object_read_as_the_plugin_reads_them() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "Kubernetes-Wait-Job",
                &[
                    ("name", "report"),
                    ("namespace", "batch"),
                    ("retries", "60"),
                    ("sleep", "0.5"),
                    ("show_log", "true"),
                ],
            ),
            ("Kubernetes-Wait-Job", &[("namespace", "batch")]),
            ("Kubernetes-Wait-Job", &[("name", "r"), ("sleep", "soon")]),
            ("Kubernetes-Wait-Pod", &[]),
            ("Kubernetes-Wait-Pod", &[("name", "web"), ("debug", "true")]),
            (
                "Kubernetes-Pods-Logs",
                &[
                    ("name", "web"),
                    ("container_name", "app"),
                    ("follow", "true"),
                    ("number_of_lines", "20"),
                ],
            ),
            ("Kubernetes-Pods-Logs", &[("follow", "yes")]),
            ("Kubernetes-Delete-Pod", &[("name", "web")]),
            (
                "Kubernetes-Delete-Pod",
                &[("name", "web"), ("retries", "3")],
            ),
            (
                "Kubernetes-Delete-Job",
                &[("name", "report"), ("debug", "false")],
            ),
            (
                "Kubernetes-Delete-Job",
                &[("name", "report"), ("force", "true")],
            ),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(t, pairs)| {
                let config: BTreeMap<String, String> = pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let read = match read(t, &config, false) {
                    Ok(s) => format!("{:?} {:?}", s.action, s.object),
                    Err(e) => format!("error: {e}"),
                };
                format!("{t} {pairs:?}\n=> {read}")
            })
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }
}
