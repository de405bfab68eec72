//! `Kubernetes-Create` and `Kubernetes-Delete` (the plugin's "Generic"
//! steps: a manifest applied, an object deleted, of one of eleven kinds),
//! and `Kubernetes-Wait-Deployment` and `-Wait-StatefulSet` (waiting for a
//! rollout's replicas to be ready).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::super::config::{deferred, flag, from_map_flat, text};
use super::lifecycle::looks;
use super::{Kind, KubeAction, KubeAuthConfig, KubeStep, ObjectRef, Wait};

/// The kinds the plugin's `type` names, with where the API serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Pod,
    Deployment,
    StatefulSet,
    ConfigMap,
    Service,
    Ingress,
    Job,
    StorageClass,
    PersistentVolume,
    PersistentVolumeClaim,
    Secret,
}

impl Resource {
    pub const ALL: [Resource; 11] = [
        Resource::Pod,
        Resource::Deployment,
        Resource::StatefulSet,
        Resource::ConfigMap,
        Resource::Service,
        Resource::Ingress,
        Resource::Job,
        Resource::StorageClass,
        Resource::PersistentVolume,
        Resource::PersistentVolumeClaim,
        Resource::Secret,
    ];

    /// The kind, as `type` and a manifest's `kind` write it.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Pod => "Pod",
            Resource::Deployment => "Deployment",
            Resource::StatefulSet => "StatefulSet",
            Resource::ConfigMap => "ConfigMap",
            Resource::Service => "Service",
            Resource::Ingress => "Ingress",
            Resource::Job => "Job",
            Resource::StorageClass => "StorageClass",
            Resource::PersistentVolume => "PersistentVolume",
            Resource::PersistentVolumeClaim => "PersistentVolumeClaim",
            Resource::Secret => "Secret",
        }
    }

    /// `(group, version)`: the plugin's client calls (`CoreV1Api`,
    /// `AppsV1Api`, `NetworkingV1Api`, `BatchV1Api`, `StorageV1Api`).
    pub fn group_version(self) -> (&'static str, &'static str) {
        match self {
            Resource::Deployment | Resource::StatefulSet => ("apps", "v1"),
            Resource::Ingress => ("networking.k8s.io", "v1"),
            Resource::Job => ("batch", "v1"),
            Resource::StorageClass => ("storage.k8s.io", "v1"),
            _ => ("", "v1"),
        }
    }

    /// `apiVersion` as a manifest writes it.
    pub fn api_version(self) -> String {
        match self.group_version() {
            ("", v) => v.to_string(),
            (g, v) => format!("{g}/{v}"),
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Resource::Pod => "pods",
            Resource::Deployment => "deployments",
            Resource::StatefulSet => "statefulsets",
            Resource::ConfigMap => "configmaps",
            Resource::Service => "services",
            Resource::Ingress => "ingresses",
            Resource::Job => "jobs",
            Resource::StorageClass => "storageclasses",
            Resource::PersistentVolume => "persistentvolumes",
            Resource::PersistentVolumeClaim => "persistentvolumeclaims",
            Resource::Secret => "secrets",
        }
    }

    /// StorageClasses and PersistentVolumes belong to no namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::StorageClass | Resource::PersistentVolume)
    }

    fn parse(key: &str, v: &str, allowed: &[Resource]) -> Result<Resource, String> {
        allowed
            .iter()
            .copied()
            .find(|r| r.name() == v.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = allowed.iter().map(|r| r.name()).collect();
                format!(
                    "configuration.{key}: `{v}` is not one of {}",
                    names.join(", ")
                )
            })
    }
}

/// `Kubernetes-Create`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GenericCreateConfig {
    /// Default `default`; ignored for StorageClass and PersistentVolume.
    pub namespace: Option<String>,
    /// `Pod`, `Deployment`, `StatefulSet`, `ConfigMap`, `Service`,
    /// `Ingress`, `Job`, `StorageClass`, `PersistentVolume`,
    /// `PersistentVolumeClaim` or `Secret`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The manifest: one object, in YAML (or JSON).
    pub yaml: Option<String>,
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// `Kubernetes-Delete`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct GenericDeleteConfig {
    pub name: Option<String>,
    /// Default `default`; ignored for StorageClass and PersistentVolume.
    pub namespace: Option<String>,
    /// As `Kubernetes-Create`'s, without `Pod` (the plugin's list).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// `Kubernetes-Wait-Deployment`'s and `-Wait-StatefulSet`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RolloutWaitConfig {
    pub name: Option<String>,
    /// Default `default`.
    pub namespace: Option<String>,
    /// How many times to look again (default 100).
    pub retries: Option<String>,
    /// Seconds between looks (default 10).
    pub sleep: Option<String>,
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

fn kind_of(v: &Option<String>, allowed: &[Resource], at_import: bool) -> Result<Resource, String> {
    match text(v) {
        None => Err("the step needs configuration.type".into()),
        Some(v) if at_import && deferred(v) => Ok(allowed[0]),
        Some(v) => Resource::parse("type", v, allowed),
    }
}

fn namespace(resource: Resource, v: &Option<String>) -> Option<String> {
    resource
        .namespaced()
        .then(|| text(v).unwrap_or("default").to_string())
}

/// A manifest as the API server takes it: one object of `resource`'s
/// kind and apiVersion (filled in from the step's type when it names
/// none, as the server fills them in from the endpoint), named; its
/// namespace, if any, the step's. YAML is read as YAML 1.2 (an unquoted
/// `0644` is not octal, where the plugin's PyYAML reads it as 420).
pub fn manifest(
    resource: Resource,
    yaml: &str,
    namespace: Option<&str>,
) -> Result<serde_json::Value, String> {
    let mut value: serde_json::Value =
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("configuration.yaml: not YAML: {e}"))?;
    let at = |field: &str| format!("configuration.yaml: {field}");
    let Some(object) = value.as_object_mut() else {
        return Err(at("not one object (a mapping)"));
    };
    object
        .entry("kind")
        .or_insert_with(|| resource.name().into());
    object
        .entry("apiVersion")
        .or_insert_with(|| resource.api_version().into());
    let text_of = |key: &str| object.get(key).and_then(|v| v.as_str());
    match text_of("kind") {
        Some(k) if k == resource.name() => {}
        Some(k) => {
            return Err(format!(
                "{}: `{k}`, where the step's type is `{}`",
                at("kind"),
                resource.name()
            ))
        }
        None => return Err(format!("{}: not text", at("kind"))),
    }
    match text_of("apiVersion") {
        Some(v) if v == resource.api_version() => {}
        Some(v) => {
            return Err(format!(
            "{}: `{v}`, the step's type `{}` goes to `{}`, the version today's API servers serve",
            at("apiVersion"),
            resource.name(),
            resource.api_version()
        ))
        }
        None => return Err(format!("{}: not text", at("apiVersion"))),
    }
    let metadata = object.get("metadata").and_then(|m| m.as_object());
    let field = |k: &str| metadata.and_then(|m| m.get(k)).and_then(|v| v.as_str());
    if field("name").is_none_or(|n| n.trim().is_empty()) {
        return Err(format!(
            "{} is missing (generateName is not supported: an abort could not tell what the step made)",
            at("metadata.name")
        ));
    }
    let theirs = field("namespace").filter(|n| !n.is_empty());
    if let (Some(theirs), Some(ours)) = (theirs, namespace) {
        if theirs != ours {
            return Err(format!(
                "{}: `{theirs}`, where the step's namespace is `{ours}`",
                at("metadata.namespace")
            ));
        }
    }
    Ok(value)
}

impl GenericCreateConfig {
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("Kubernetes-Create", config)
    }

    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let resource = kind_of(&self.kind, &Resource::ALL, at_import)?;
        let namespace = namespace(resource, &self.namespace);
        let yaml = text(&self.yaml).ok_or("the step needs configuration.yaml")?;
        let (manifest, name) =
            if at_import && (deferred(yaml) || text(&self.kind).is_some_and(deferred)) {
                (serde_json::Value::Null, None)
            } else {
                // A namespace from an option is checked on the runner.
                let ns = namespace.as_deref().filter(|n| !(at_import && deferred(n)));
                let m = manifest(resource, yaml, ns)?;
                let name = m["metadata"]["name"].as_str().map(str::to_string);
                (m, name)
            };
        Ok(KubeStep {
            action: KubeAction::Apply(manifest),
            object: ObjectRef {
                kind: Kind::Other(resource),
                name,
                namespace,
                from_node: false,
            },
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl GenericDeleteConfig {
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("Kubernetes-Delete", config)
    }

    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let resource = kind_of(&self.kind, &Resource::ALL[1..], at_import)?;
        let name = text(&self.name).ok_or("the step needs configuration.name")?;
        Ok(KubeStep {
            action: KubeAction::Delete,
            object: ObjectRef {
                kind: Kind::Other(resource),
                name: Some(name.to_string()),
                namespace: namespace(resource, &self.namespace),
                from_node: false,
            },
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl RolloutWaitConfig {
    /// `resource` is Deployment or StatefulSet; `step_type` names the step.
    pub fn from_map(config: &BTreeMap<String, String>, step_type: &str) -> Result<Self, String> {
        from_map_flat(step_type, config)
    }

    pub fn step(&self, resource: Resource, at_import: bool) -> Result<KubeStep, String> {
        let (retries, sleep) = looks(&self.retries, &self.sleep, at_import)?;
        let name = text(&self.name).ok_or("the step needs configuration.name")?;
        Ok(KubeStep {
            action: KubeAction::Wait(Wait {
                retries,
                sleep,
                show_log: false,
            }),
            object: ObjectRef {
                kind: Kind::Other(resource),
                name: Some(name.to_string()),
                namespace: namespace(resource, &self.namespace),
                from_node: false,
            },
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
    fn generic_steps_read_as_the_plugin_reads_them_and_refuse_what_the_server_would() {
        let deployment =
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n";
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                "Kubernetes-Create",
                &[("type", "Deployment"), ("namespace", "shop"), ("yaml", deployment)],
            ),
            (
                "Kubernetes-Create",
                &[("type", "StorageClass"), ("namespace", "shop"), ("yaml", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: x\n")],
            ),
            ("Kubernetes-Create", &[("type", "Service"), ("yaml", deployment)]),
            ("Kubernetes-Create", &[("type", "Deployment"), ("yaml", "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: old}\n")]),
            ("Kubernetes-Create", &[("type", "Deployment"), ("yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {generateName: web-}\n")]),
            ("Kubernetes-Create", &[("type", "ConfigMap"), ("namespace", "shop"), ("yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: other}\n")]),
            ("Kubernetes-Create", &[("type", "Deployment"), ("yaml", "- a\n- b\n")]),
            ("Kubernetes-Create", &[("type", "ConfigMap"), ("yaml", "metadata: {name: c, namespace: ''}\ndata: {a: b}\n")]),
            ("Kubernetes-Create", &[("type", "Widget"), ("yaml", deployment)]),
            ("Kubernetes-Delete", &[("type", "Service"), ("name", "web")]),
            ("Kubernetes-Delete", &[("type", "Pod"), ("name", "web")]),
            ("Kubernetes-Delete", &[("type", "PersistentVolume"), ("name", "pv1"), ("namespace", "shop")]),
            (
                "Kubernetes-Wait-Deployment",
                &[("name", "web"), ("namespace", "shop"), ("retries", "5"), ("sleep", "0.2")],
            ),
            ("Kubernetes-Wait-StatefulSet", &[("name", "db")]),
            ("Kubernetes-Wait-StatefulSet", &[("namespace", "x")]),
            ("Kubernetes-Wait-Deployment", &[("name", "web"), ("show_log", "true")]),
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

    #[test]
    fn a_manifest_with_references_waits_for_the_runner() {
        let config: BTreeMap<String, String> = [
            ("type", "Deployment"),
            ("yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ${option.name}\nspec:\n  replicas: ${option.n}\n"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let step = read("Kubernetes-Create", &config, true).unwrap();
        assert_eq!(step.action, KubeAction::Apply(serde_json::Value::Null));
        // A namespace from an option may be the manifest's: the runner checks.
        let config: BTreeMap<String, String> = [
            ("type", "ConfigMap"),
            ("namespace", "${option.ns}"),
            (
                "yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: prod}\n",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(read("Kubernetes-Create", &config, true).is_ok());
        let mut expanded = config.clone();
        expanded.insert("namespace".into(), "qa".into());
        assert!(read("Kubernetes-Create", &expanded, false)
            .unwrap_err()
            .contains("where the step's namespace is `qa`"));
    }
}
