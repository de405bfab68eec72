//! `Kubernetes-Create-Pod` and `Kubernetes-Create-Job`: the object built
//! from the step's keys as the plugin's `create_pod_template_spec` and
//! `create_job_object` build it (`k=v,k=v` maps, one env var or argument
//! per line, the command split on spaces), as the JSON the API takes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::super::config::{deferred, flag, from_map_flat, text};
use super::{Kind, KubeAction, KubeAuthConfig, KubeStep, ObjectRef, EXECUTION_LABEL};
use crate::job::NOT_SUPPORTED_YET;

/// `Kubernetes-Create-Pod`'s configuration, every value text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CreatePodConfig {
    /// `v1`, the only one (the default).
    pub api_version: Option<String>,
    /// The pod; default a pod node's `default:name`.
    pub name: Option<String>,
    /// Default a pod node's `default:namespace`, else `default`.
    pub namespace: Option<String>,
    /// `k=v,k=v`.
    pub labels: Option<String>,
    /// The one container's name; default a pod node's `default:container_name`.
    pub container_name: Option<String>,
    pub image: Option<String>,
    /// Secret names, comma-separated.
    pub imagepullsecrets: Option<String>,
    /// Container ports, comma-separated.
    pub ports: Option<String>,
    /// `NAME=value`, one per line.
    pub environments: Option<String>,
    /// `NAME=secret:key`, one per line.
    pub environments_secrets: Option<String>,
    /// A probe, as YAML.
    pub liveness_probe: Option<String>,
    /// A probe, as YAML.
    pub readiness_probe: Option<String>,
    /// The command, split on spaces.
    pub container_command: Option<String>,
    /// The arguments, one per line.
    pub container_args: Option<String>,
    /// `cpu=1,memory=512Mi`.
    pub resources_requests: Option<String>,
    /// Volume mounts, as YAML (a list, or one).
    pub volume_mounts: Option<String>,
    /// Volumes, as YAML (a list, or one).
    pub volumes: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// `Kubernetes-Create-Job`'s configuration, every value text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct CreateJobConfig {
    /// `batch/v1`, the only one (the default).
    pub api_version: Option<String>,
    /// The Job; required.
    pub name: Option<String>,
    /// Default `default`.
    pub namespace: Option<String>,
    /// `k=v,k=v`, on the Job and its pods.
    pub labels: Option<String>,
    /// `k=v,k=v`, on the Job and its pods.
    pub annotations: Option<String>,
    /// Not supported yet (the plugin sends it as a mistyped selector).
    pub selectors: Option<String>,
    /// `Never` (the default here) or `OnFailure`.
    pub job_restart_policy: Option<String>,
    pub completions: Option<String>,
    pub parallelism: Option<String>,
    pub active_deadline_seconds: Option<String>,
    /// Retries before the Job fails (Kubernetes' default 6).
    pub backoff_limit: Option<String>,
    /// `k=v,k=v`.
    pub node_selectors: Option<String>,
    /// Tolerations, as a YAML list.
    pub tolerations: Option<String>,
    pub serviceaccount: Option<String>,
    /// The one container's name; required.
    pub container_name: Option<String>,
    /// Its image; required.
    pub container_image: Option<String>,
    /// Secret names, comma-separated.
    pub imagepullsecrets: Option<String>,
    /// `Always`, `Never` or `IfNotPresent`.
    pub image_pull_policy: Option<String>,
    /// `NAME=value`, one per line.
    pub environments: Option<String>,
    /// `NAME=secret:key`, one per line.
    pub environments_secrets: Option<String>,
    /// `configMapRef`/`secretRef` sources, as a YAML list.
    pub env_from: Option<String>,
    /// The command, split on spaces.
    pub container_command: Option<String>,
    /// The arguments, one per line.
    pub container_args: Option<String>,
    /// `cpu=1,memory=512Mi`.
    pub resources_requests: Option<String>,
    /// Volumes, as YAML (a list, or one).
    pub volumes: Option<String>,
    /// Volume mounts, as YAML (a list, or one).
    pub volume_mounts: Option<String>,
    /// Print what the step sends.
    pub debug: Option<String>,
    #[serde(flatten)]
    pub auth: KubeAuthConfig,
}

/// The one container a created pod or Job runs, as the API's JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Container(pub Value);

/// A pod to create (or a Job's pod template), but for its name and
/// namespace, which may come from the node.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec {
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
    pub container: Container,
    /// The container's name came from no key: a pod node's.
    pub container_from_node: bool,
    /// The rest of the pod's `spec`.
    pub spec: Map<String, Value>,
}

/// A Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub pod: PodSpec,
    /// The rest of the Job's `spec`.
    pub spec: Map<String, Value>,
}

/// Reads values of one step, checking a value only where it does not wait
/// for a reference to expand.
struct Reader {
    at_import: bool,
}

impl Reader {
    fn later(&self, v: &str) -> bool {
        self.at_import && deferred(v)
    }

    /// `k=v,k=v` (blank entries skipped).
    fn pairs(&self, key: &str, v: &Option<String>) -> Result<Map<String, Value>, String> {
        let mut out = Map::new();
        let Some(v) = text(v) else { return Ok(out) };
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match entry.split_once('=') {
                Some((k, val)) if !k.trim().is_empty() => {
                    out.insert(k.trim().to_string(), json!(val.trim()));
                }
                _ if self.later(entry) => {}
                _ => {
                    return Err(format!(
                        "configuration.{key}: `{entry}` is not key=value (the entries are comma-separated)"
                    ))
                }
            }
        }
        Ok(out)
    }

    /// `NAME=value` per line, and `NAME=secret:key` per line: `env`.
    fn env(&self, plain: &Option<String>, secrets: &Option<String>) -> Result<Vec<Value>, String> {
        let mut env = Vec::new();
        for (key, v, from_secret) in [
            ("environments", plain, false),
            ("environments_secrets", secrets, true),
        ] {
            let Some(v) = text(v) else { continue };
            for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((name, value)) = line.split_once('=') else {
                    if self.later(line) {
                        continue;
                    }
                    return Err(format!(
                        "configuration.{key}: `{line}` is not NAME=value (one per line)"
                    ));
                };
                if !from_secret {
                    env.push(json!({"name": name.trim(), "value": value}));
                    continue;
                }
                match value.split_once(':') {
                    Some((secret, k)) => env.push(json!({
                        "name": name.trim(),
                        "valueFrom": {"secretKeyRef": {"name": secret.trim(), "key": k.trim()}},
                    })),
                    None if self.later(value) => {}
                    None => {
                        return Err(format!(
                            "configuration.{key}: `{line}` is not NAME=secret:key (one per line)"
                        ))
                    }
                }
            }
        }
        Ok(env)
    }

    /// Comma-separated whole numbers.
    fn ints(&self, key: &str, v: &Option<String>) -> Result<Vec<i64>, String> {
        let entries = text(v).into_iter().flat_map(|v| v.split(','));
        let mut out = Vec::new();
        for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
            out.extend(self.int(key, &Some(entry.to_string()))?);
        }
        Ok(out)
    }

    fn int(&self, key: &str, v: &Option<String>) -> Result<Option<i64>, String> {
        match text(v) {
            None => Ok(None),
            Some(v) => match v.parse() {
                Ok(n) => Ok(Some(n)),
                Err(_) if self.later(v) => Ok(None),
                Err(_) => Err(format!("configuration.{key}: `{v}` is not a whole number")),
            },
        }
    }

    /// YAML, as the API's JSON; `list` wraps a single object in a list, as
    /// the plugin reads volumes.
    fn yaml(&self, key: &str, v: &Option<String>, list: bool) -> Result<Option<Value>, String> {
        let Some(v) = text(v) else { return Ok(None) };
        let parsed: Value = match serde_yaml_ng::from_str(v) {
            Ok(p) => p,
            Err(_) if self.later(v) => return Ok(None),
            Err(e) => return Err(format!("configuration.{key}: not YAML: {e}")),
        };
        match (parsed, list) {
            (Value::Array(items), true) => Ok(Some(Value::Array(items))),
            (Value::Object(o), true) => Ok(Some(Value::Array(vec![Value::Object(o)]))),
            (Value::Object(o), false) => Ok(Some(Value::Object(o))),
            // `${option.volumes}` reads as a string until it expands.
            _ if self.later(v) => Ok(None),
            (_, true) => Err(format!("configuration.{key}: not a YAML list or mapping")),
            (_, false) => Err(format!("configuration.{key}: not a YAML mapping")),
        }
    }

    fn one_of(
        &self,
        key: &str,
        v: &Option<String>,
        values: &[&str],
    ) -> Result<Option<String>, String> {
        match text(v) {
            None => Ok(None),
            Some(v) if values.contains(&v) || self.later(v) => Ok(Some(v.to_string())),
            Some(v) => Err(format!(
                "configuration.{key}: `{v}` is not one of {}",
                values.join(", ")
            )),
        }
    }
}

/// The fields both steps' containers share.
struct ContainerKeys<'a> {
    name: Option<&'a str>,
    image: &'a Option<String>,
    image_key: &'a str,
    command: &'a Option<String>,
    args: &'a Option<String>,
    environments: &'a Option<String>,
    environments_secrets: &'a Option<String>,
    resources_requests: &'a Option<String>,
    volume_mounts: &'a Option<String>,
}

fn container(r: &Reader, keys: ContainerKeys<'_>) -> Result<Map<String, Value>, String> {
    let image = text(keys.image)
        .ok_or_else(|| format!("the step needs configuration.{}", keys.image_key))?;
    let mut c = Map::new();
    if let Some(name) = keys.name {
        c.insert("name".into(), json!(name));
    }
    c.insert("image".into(), json!(image));
    if let Some(cmd) = text(keys.command) {
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        c.insert("command".into(), json!(argv));
    }
    if let Some(args) = text(keys.args) {
        let args: Vec<&str> = args.lines().collect();
        c.insert("args".into(), json!(args));
    }
    let env = r.env(keys.environments, keys.environments_secrets)?;
    if !env.is_empty() {
        c.insert("env".into(), Value::Array(env));
    }
    let requests = r.pairs("resources_requests", keys.resources_requests)?;
    if !requests.is_empty() {
        c.insert("resources".into(), json!({"requests": requests}));
    }
    if let Some(m) = r.yaml("volume_mounts", keys.volume_mounts, true)? {
        c.insert("volumeMounts".into(), m);
    }
    Ok(c)
}

/// The plugin reads a toleration's `toleration_seconds` (its Python
/// client's name) for the API's `tolerationSeconds`.
fn tolerations(mut list: Value) -> Value {
    for t in list.as_array_mut().into_iter().flatten() {
        if let Some(o) = t.as_object_mut() {
            if let Some(secs) = o.remove("toleration_seconds") {
                let secs = secs
                    .as_str()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .map(Value::from)
                    .unwrap_or(secs);
                o.entry("tolerationSeconds").or_insert(secs);
            }
        }
    }
    list
}

fn pull_secrets(v: &Option<String>) -> Option<Value> {
    let names: Vec<Value> = text(v)?
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| json!({"name": n}))
        .collect();
    (!names.is_empty()).then_some(Value::Array(names))
}

fn api_version(r: &Reader, v: &Option<String>, only: &str) -> Result<(), String> {
    match text(v) {
        None => Ok(()),
        Some(v) if v == only || r.later(v) => Ok(()),
        Some(v) => Err(format!(
            "configuration.api_version: `{v}`: Outpost creates {only} objects only"
        )),
    }
}

impl CreatePodConfig {
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("Kubernetes-Create-Pod", config)
    }

    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let r = Reader { at_import };
        api_version(&r, &self.api_version, "v1")?;
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        let mut c = container(
            &r,
            ContainerKeys {
                name: text(&self.container_name),
                image: &self.image,
                image_key: "image",
                command: &self.container_command,
                args: &self.container_args,
                environments: &self.environments,
                environments_secrets: &self.environments_secrets,
                resources_requests: &self.resources_requests,
                volume_mounts: &self.volume_mounts,
            },
        )?;
        let ports: Vec<Value> = r
            .ints("ports", &self.ports)?
            .into_iter()
            .map(|p| json!({"containerPort": p}))
            .collect();
        if !ports.is_empty() {
            c.insert("ports".into(), Value::Array(ports));
        }
        for (key, v, field) in [
            ("liveness_probe", &self.liveness_probe, "livenessProbe"),
            ("readiness_probe", &self.readiness_probe, "readinessProbe"),
        ] {
            if let Some(p) = r.yaml(key, v, false)? {
                c.insert(field.into(), p);
            }
        }
        let mut spec = Map::new();
        if let Some(s) = pull_secrets(&self.imagepullsecrets) {
            spec.insert("imagePullSecrets".into(), s);
        }
        if let Some(v) = r.yaml("volumes", &self.volumes, true)? {
            spec.insert("volumes".into(), v);
        }
        Ok(KubeStep {
            action: KubeAction::CreatePod(Box::new(PodSpec {
                labels: r.pairs("labels", &self.labels)?,
                annotations: Map::new(),
                container_from_node: text(&self.container_name).is_none(),
                container: Container(Value::Object(c)),
                spec,
            })),
            object: ObjectRef {
                kind: Kind::Pod,
                name: owned(&self.name),
                namespace: owned(&self.namespace),
                from_node: true,
            },
            connection: self.auth.connection(at_import)?,
            debug: false,
        })
    }
}

impl CreateJobConfig {
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map_flat("Kubernetes-Create-Job", config)
    }

    pub fn step(&self, at_import: bool) -> Result<KubeStep, String> {
        let r = Reader { at_import };
        api_version(&r, &self.api_version, "batch/v1")?;
        if text(&self.selectors).is_some() {
            return Err(format!(
                "{NOT_SUPPORTED_YET}: configuration.selectors (the plugin sends it as a mistyped selector; the API server labels a Job's pods itself)"
            ));
        }
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        let name = owned(&self.name).ok_or("the step needs configuration.name")?;
        let container_name =
            text(&self.container_name).ok_or("the step needs configuration.container_name")?;
        let mut c = container(
            &r,
            ContainerKeys {
                name: Some(container_name),
                image: &self.container_image,
                image_key: "container_image",
                command: &self.container_command,
                args: &self.container_args,
                environments: &self.environments,
                environments_secrets: &self.environments_secrets,
                resources_requests: &self.resources_requests,
                volume_mounts: &self.volume_mounts,
            },
        )?;
        if let Some(p) = r.one_of(
            "image_pull_policy",
            &self.image_pull_policy,
            &["Always", "Never", "IfNotPresent"],
        )? {
            c.insert("imagePullPolicy".into(), json!(p));
        }
        if let Some(e) = r.yaml("env_from", &self.env_from, true)? {
            c.insert("envFrom".into(), e);
        }
        let restart = r
            .one_of(
                "job_restart_policy",
                &self.job_restart_policy,
                &["Never", "OnFailure"],
            )?
            .unwrap_or_else(|| "Never".into());
        let mut pod = Map::new();
        pod.insert("restartPolicy".into(), json!(restart));
        if let Some(sa) = text(&self.serviceaccount) {
            pod.insert("serviceAccountName".into(), json!(sa));
        }
        let selectors = r.pairs("node_selectors", &self.node_selectors)?;
        if !selectors.is_empty() {
            pod.insert("nodeSelector".into(), Value::Object(selectors));
        }
        if let Some(s) = pull_secrets(&self.imagepullsecrets) {
            pod.insert("imagePullSecrets".into(), s);
        }
        if let Some(v) = r.yaml("volumes", &self.volumes, true)? {
            pod.insert("volumes".into(), v);
        }
        if let Some(t) = r.yaml("tolerations", &self.tolerations, true)? {
            pod.insert("tolerations".into(), tolerations(t));
        }
        let mut spec = Map::new();
        for (key, v, field) in [
            ("completions", &self.completions, "completions"),
            ("parallelism", &self.parallelism, "parallelism"),
            (
                "active_deadline_seconds",
                &self.active_deadline_seconds,
                "activeDeadlineSeconds",
            ),
            ("backoff_limit", &self.backoff_limit, "backoffLimit"),
        ] {
            if let Some(n) = r.int(key, v)? {
                spec.insert(field.into(), json!(n));
            }
        }
        Ok(KubeStep {
            action: KubeAction::CreateJob(Box::new(JobSpec {
                pod: PodSpec {
                    labels: r.pairs("labels", &self.labels)?,
                    annotations: r.pairs("annotations", &self.annotations)?,
                    container: Container(Value::Object(c)),
                    container_from_node: false,
                    spec: pod,
                },
                spec,
            })),
            object: ObjectRef {
                kind: Kind::Job,
                name: Some(name),
                namespace: owned(&self.namespace),
                from_node: false,
            },
            connection: self.auth.connection(at_import)?,
            debug: flag("debug", &self.debug, false, at_import)?,
        })
    }
}

impl PodSpec {
    fn metadata(&self, name: &str, namespace: Option<&str>, execution: &str) -> Value {
        let mut labels = self.labels.clone();
        labels.insert(EXECUTION_LABEL.into(), json!(execution));
        let mut meta = json!({"name": name, "labels": labels});
        if let Some(ns) = namespace {
            meta["namespace"] = json!(ns);
        }
        if !self.annotations.is_empty() {
            meta["annotations"] = Value::Object(self.annotations.clone());
        }
        meta
    }

    fn spec_with(&self, container_name: Option<&str>) -> Result<Value, String> {
        let mut c = self.container.0.clone();
        if c.get("name").is_none() {
            let name = container_name.ok_or(
                "the step needs configuration.container_name (or a pod node's default:container_name)",
            )?;
            c["name"] = json!(name);
        }
        let mut spec = self.spec.clone();
        spec.insert("containers".into(), json!([c]));
        Ok(Value::Object(spec))
    }

    /// The pod, labelled with the execution that creates it;
    /// `container_name` is a pod node's, for a step that names none.
    pub fn pod(
        &self,
        name: &str,
        namespace: &str,
        execution: &str,
        container_name: Option<&str>,
    ) -> Result<Value, String> {
        Ok(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(name, Some(namespace), execution),
            "spec": self.spec_with(container_name)?,
        }))
    }
}

impl JobSpec {
    /// The Job, it and its pods labelled with the execution that creates it.
    pub fn job(&self, name: &str, namespace: &str, execution: &str) -> Result<Value, String> {
        let mut spec = self.spec.clone();
        spec.insert(
            "template".into(),
            json!({
                "metadata": self.pod.metadata(name, None, execution),
                "spec": self.pod.spec_with(None)?,
            }),
        );
        Ok(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": self.pod.metadata(name, Some(namespace), execution),
            "spec": spec,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::read;
    use super::*;

    fn built(step_type: &str, pairs: &[(&str, &str)]) -> String {
        let config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let step = match read(step_type, &config, false) {
            Ok(s) => s,
            Err(e) => return format!("error: {e}"),
        };
        let (name, ns) = step
            .object
            .resolve(&BTreeMap::new())
            .unwrap_or(("from-node".into(), "default".into()));
        let object = match &step.action {
            KubeAction::CreatePod(p) => p.pod(&name, &ns, "exec-1", Some("node-container")),
            KubeAction::CreateJob(j) => j.job(&name, &ns, "exec-1"),
            other => return format!("not a create: {other:?}"),
        };
        match object {
            Ok(o) => serde_json::to_string_pretty(&o).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn objects_are_built_as_the_plugin_builds_them() {
        let pod = "Kubernetes-Create-Pod";
        let job = "Kubernetes-Create-Job";
        let cases: &[(&str, &[(&str, &str)])] = &[
            (
                pod,
                &[
                    ("name", "web"),
                    ("namespace", "shop"),
                    ("labels", "app=web, tier=front"),
                    ("container_name", "app"),
                    ("image", "nginx:1.27"),
                    ("ports", "80, 443"),
                    ("environments", "A=1\nB=x=y\n"),
                    ("environments_secrets", "PASS=db:password"),
                    ("container_command", "sh  -c"),
                    ("container_args", "echo one; sleep 1\necho two"),
                    ("resources_requests", "cpu=1,memory=512Mi"),
                    (
                        "readiness_probe",
                        "httpGet: {port: 80, path: /}\nperiodSeconds: 5",
                    ),
                    ("volumes", "name: data\nemptyDir: {}"),
                    ("volume_mounts", "- {name: data, mountPath: /data}"),
                    ("imagepullsecrets", "reg1,reg2"),
                ],
            ),
            // The container's name from the node.
            (pod, &[("image", "busybox")]),
            (
                job,
                &[
                    ("name", "report"),
                    ("namespace", "batch"),
                    ("labels", "team=ops"),
                    ("annotations", "owner=sre"),
                    ("container_name", "main"),
                    ("container_image", "busybox:1.36"),
                    ("image_pull_policy", "IfNotPresent"),
                    ("backoff_limit", "0"),
                    ("completions", "1"),
                    ("active_deadline_seconds", "600"),
                    ("node_selectors", "disk=ssd"),
                    (
                        "tolerations",
                        "- {key: dedicated, operator: Exists}\n- {key: spot, effect: NoExecute, toleration_seconds: '60'}",
                    ),
                    ("serviceaccount", "reporter"),
                    ("env_from", "- configMapRef: {name: settings}"),
                    ("container_command", "sh -c"),
                    ("container_args", "echo start; sleep 5; echo done"),
                ],
            ),
            (
                job,
                &[
                    ("name", "r"),
                    ("container_name", "m"),
                    ("container_image", "i"),
                    ("job_restart_policy", "OnFailure"),
                ],
            ),
            (job, &[("container_name", "m"), ("container_image", "i")]),
            (job, &[("name", "r"), ("container_name", "m")]),
            (
                job,
                &[
                    ("name", "r"),
                    ("container_name", "m"),
                    ("container_image", "i"),
                    ("selectors", "a=b"),
                ],
            ),
            (
                job,
                &[
                    ("name", "r"),
                    ("container_name", "m"),
                    ("container_image", "i"),
                    ("backoff_limit", "six"),
                ],
            ),
            (
                job,
                &[
                    ("name", "r"),
                    ("container_name", "m"),
                    ("container_image", "i"),
                    ("job_restart_policy", "Always"),
                ],
            ),
            (
                job,
                &[
                    ("name", "r"),
                    ("container_name", "m"),
                    ("container_image", "i"),
                    ("api_version", "batch/v1beta1"),
                ],
            ),
            (pod, &[("image", "i"), ("labels", "app")]),
            (pod, &[("image", "i"), ("environments_secrets", "PASS=db")]),
            (pod, &[("image", "i"), ("volumes", "[unclosed")]),
            (pod, &[("image", "i"), ("replicas", "3")]),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(t, c)| format!("{t} {c:?}\n=> {}", built(t, c)))
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }

    #[test]
    fn a_reference_waits_for_the_runner() {
        let config: BTreeMap<String, String> = [
            ("name", "r-${job.execid}"),
            ("container_name", "m"),
            ("container_image", "i"),
            ("backoff_limit", "${option.retries}"),
            ("labels", "${option.labels}"),
            ("volumes", "${option.volumes}"),
            ("tolerations", "${option.tolerations}"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(read("Kubernetes-Create-Job", &config, true).is_ok());
        assert!(read("Kubernetes-Create-Job", &config, false)
            .unwrap_err()
            .contains("configuration.volumes"));
    }
}
