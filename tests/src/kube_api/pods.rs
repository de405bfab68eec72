//! Core v1 pods: create, get, list (as a `PodList` or kubectl's `Table`),
//! delete (one or a collection) and the log, with the fields the Python
//! client's models require and kubectl's typed decoding accepts.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::containers::{state_json, ProcessSpec, Run, RunState};
use super::objects::{
    admit_metadata, created, human_duration, label_error, list, list_reply, now, ok, selectors,
    text, timestamp, uid, Cause, Column, KubeError, Listed, Params, Reply,
};
use super::{Shared, State};

pub(super) const NODE: &str = "fake-node";
pub(super) const POD_IP: &str = "127.0.0.1";
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "status.phase",
    "spec.nodeName",
];

pub(super) struct Pod {
    /// `apiVersion`, `kind`, `metadata` and `spec` as stored; `status` is
    /// rendered from the containers.
    pub object: Value,
    pub containers: Vec<Container>,
    pub created: DateTime<Utc>,
    pub resource_version: u64,
}

pub(super) struct Container {
    pub name: String,
    pub image: String,
    pub run: Arc<Run>,
    pub spec: ProcessSpec,
}

/// Runs that a created pod must start once the state lock is released.
pub(super) type Starts = Vec<(Arc<Run>, ProcessSpec)>;

impl Pod {
    pub fn name(&self) -> &str {
        text(&self.object, &["metadata", "name"])
    }

    pub fn namespace(&self) -> &str {
        text(&self.object, &["metadata", "namespace"])
    }

    pub fn uid(&self) -> &str {
        text(&self.object, &["metadata", "uid"])
    }

    pub fn phase(&self) -> &'static str {
        let states: Vec<RunState> = self.containers.iter().map(|c| c.run.state()).collect();
        phase_of(&states)
    }

    /// The pod as the API returns it.
    pub fn render(&self) -> Value {
        let states: Vec<RunState> = self.containers.iter().map(|c| c.run.state()).collect();
        let changes: u64 = self.containers.iter().map(|c| c.run.changes()).sum();
        let mut v = self.object.clone();
        v["metadata"]["resourceVersion"] = json!((self.resource_version + changes).to_string());
        let ready_all = states.iter().all(|s| matches!(s, RunState::Running { .. }));
        let phase = phase_of(&states);
        let created = timestamp(self.created);
        let condition = |ty: &str, ok: bool| {
            let mut c = json!({
                "type": ty,
                "status": if ok { "True" } else { "False" },
                "lastProbeTime": null,
                "lastTransitionTime": created,
            });
            if !ok && matches!(phase, "Succeeded" | "Failed") {
                c["reason"] = json!("PodCompleted");
            } else if !ok {
                c["reason"] = json!("ContainersNotReady");
            }
            c
        };
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .zip(&states)
            .map(|(c, s)| {
                let container_id = format!("fake://{}/{}", self.uid(), c.name);
                let (state, ready) = state_json(s, &container_id);
                let started = !matches!(s, RunState::Waiting);
                let mut status = json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": ready,
                    "state": state,
                    "lastState": {},
                });
                if started {
                    status["containerID"] = json!(container_id);
                }
                status
            })
            .collect();
        v["status"] = json!({
            "phase": phase,
            "conditions": [
                condition("Initialized", true),
                condition("Ready", ready_all),
                condition("ContainersReady", ready_all),
                condition("PodScheduled", true),
            ],
            "hostIP": POD_IP,
            "podIP": POD_IP,
            "podIPs": [{"ip": POD_IP}],
            "startTime": created,
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        });
        v
    }

    /// The cells of kubectl's `get pods` row.
    fn row(&self) -> Vec<Value> {
        let states: Vec<RunState> = self.containers.iter().map(|c| c.run.state()).collect();
        let ready = states
            .iter()
            .filter(|s| matches!(s, RunState::Running { .. }))
            .count();
        // As kubectl's printer: the first container that is not simply
        // running names the status.
        let mut status = phase_of(&states).to_string();
        for s in states.iter().rev() {
            match s {
                RunState::Waiting => status = "ContainerCreating".into(),
                RunState::Terminated { reason, .. } => status = reason.to_string(),
                RunState::Running { .. } => {}
            }
        }
        if states.iter().any(|s| matches!(s, RunState::Running { .. })) && status == "Completed" {
            status = "Running".into();
        }
        vec![
            json!(self.name()),
            json!(format!("{ready}/{}", states.len())),
            json!(status),
            json!(0),
            json!(human_duration(now() - self.created)),
            json!(POD_IP),
            json!(text(&self.object, &["spec", "nodeName"])),
            json!("<none>"),
            json!("<none>"),
        ]
    }

    fn field(&self, field: &str) -> String {
        match field {
            "metadata.name" => self.name().into(),
            "metadata.namespace" => self.namespace().into(),
            "status.phase" => self.phase().into(),
            "spec.nodeName" => text(&self.object, &["spec", "nodeName"]).into(),
            _ => String::new(),
        }
    }

    /// The container a log or exec request means: the named one, or the
    /// only one.
    pub fn container(&self, name: Option<&str>) -> Result<&Container, KubeError> {
        match name.filter(|n| !n.is_empty()) {
            Some(n) => self.containers.iter().find(|c| c.name == n).ok_or_else(|| {
                KubeError::bad_request(format!(
                    "container {n} is not valid for pod {}",
                    self.name()
                ))
            }),
            None if self.containers.len() == 1 => Ok(&self.containers[0]),
            None => Err(KubeError::bad_request(format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                self.name(),
                self.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ))),
        }
    }
}

fn phase_of(states: &[RunState]) -> &'static str {
    if states.iter().all(RunState::is_terminated) {
        let all_ok = states
            .iter()
            .all(|s| matches!(s, RunState::Terminated { code: 0, .. }));
        if all_ok {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if states.iter().any(|s| matches!(s, RunState::Waiting)) {
        "Pending"
    } else {
        "Running"
    }
}

pub(super) const POD_COLUMNS: &[Column] = &[
    ("Name", "string", "name", 0, "Name must be unique within a namespace."),
    ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
    ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
    ("Restarts", "integer", "", 0, "The number of times the containers in this pod have been restarted."),
    ("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ("IP", "string", "", 1, "IP address allocated to the pod."),
    ("Node", "string", "", 1, "NodeName is a request to schedule this pod onto a specific node."),
    ("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
    ("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
];

impl State {
    /// Validates and stores a pod from its JSON, as the apiserver admits a
    /// create: the reply, and the containers to start once the lock is
    /// released.
    pub(super) fn create_pod(
        &mut self,
        namespace: &str,
        mut body: Value,
    ) -> Result<(Value, Starts), KubeError> {
        if self.closed {
            return Err(KubeError::internal("the fake apiserver is shutting down"));
        }
        if let Some(kind) = body.get("kind").and_then(Value::as_str) {
            if kind != "Pod" {
                return Err(KubeError::bad_request(format!(
                    "the kind {kind:?} does not match the endpoint's kind \"Pod\""
                )));
            }
        }
        let created = now();
        let uid = uid();
        let name = admit_metadata("Pod", namespace, &mut body, &uid, created)?;
        if self
            .pods
            .contains_key(&(namespace.to_string(), name.clone()))
        {
            return Err(KubeError::already_exists("", "pods", &name));
        }
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Pod");
        let spec = &mut body["spec"];
        if !spec.is_object() {
            return Err(KubeError::invalid(
                "Pod",
                &name,
                "spec.containers",
                Cause::Required,
            ));
        }
        let containers = match spec["containers"].as_array() {
            Some(c) if !c.is_empty() => c.clone(),
            _ => {
                return Err(KubeError::invalid(
                    "Pod",
                    &name,
                    "spec.containers",
                    Cause::Required,
                ))
            }
        };
        let mut stored = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let field = |f: &str| format!("spec.containers[{i}].{f}");
            let cname = c["name"].as_str().unwrap_or("");
            if cname.is_empty() {
                return Err(KubeError::invalid(
                    "Pod",
                    &name,
                    &field("name"),
                    Cause::Required,
                ));
            }
            if let Some(why) = label_error(cname) {
                return Err(KubeError::invalid(
                    "Pod",
                    &name,
                    &field("name"),
                    Cause::Invalid(format!("{cname:?}"), why),
                ));
            }
            if stored.iter().any(|s: &Container| s.name == cname) {
                return Err(KubeError::invalid(
                    "Pod",
                    &name,
                    &field("name"),
                    Cause::Duplicate(format!("{cname:?}")),
                ));
            }
            let image = c["image"].as_str().unwrap_or("");
            if image.is_empty() {
                return Err(KubeError::invalid(
                    "Pod",
                    &name,
                    &field("image"),
                    Cause::Required,
                ));
            }
            stored.push(Container {
                name: cname.to_string(),
                image: image.to_string(),
                run: Run::new(),
                spec: process_spec(c, &name),
            });
        }
        let obj = spec.as_object_mut().unwrap();
        obj.entry("restartPolicy").or_insert(json!("Always"));
        obj.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
        obj.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        obj.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        obj.entry("serviceAccountName").or_insert(json!("default"));
        obj.entry("nodeName").or_insert(json!(NODE));
        if let Some(cs) = obj.get_mut("containers").and_then(Value::as_array_mut) {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("").to_string();
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !tag.contains(':') || tag.ends_with(":latest");
                if let Some(c) = c.as_object_mut() {
                    c.entry("imagePullPolicy").or_insert(json!(if latest {
                        "Always"
                    } else {
                        "IfNotPresent"
                    }));
                    c.entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    c.entry("terminationMessagePolicy").or_insert(json!("File"));
                }
            }
        }
        self.resource_version += 1;
        let pod = Pod {
            object: body,
            containers: stored,
            created,
            resource_version: self.resource_version,
        };
        let reply = pod.render();
        let starts = pod
            .containers
            .iter()
            .map(|c| (c.run.clone(), c.spec.clone()))
            .collect();
        self.pods.insert((namespace.to_string(), name), pod);
        Ok((reply, starts))
    }

    /// Removes the pods `select` picks, returning them for their processes
    /// to be killed.
    pub(super) fn remove_pods(&mut self, select: impl Fn(&Pod) -> bool) -> Vec<Pod> {
        let keys: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| select(p))
            .map(|(k, _)| k.clone())
            .collect();
        self.resource_version += 1;
        keys.iter().filter_map(|k| self.remove_pod(k)).collect()
    }

    /// Removes a pod, and ends the exec sessions still running in it, as
    /// its containers' end ends them on a kubelet.
    pub(super) fn remove_pod(&mut self, key: &(String, String)) -> Option<Pod> {
        let pod = self.pods.remove(key)?;
        for e in &self.execs {
            if (&e.namespace, &e.pod) == (&key.0, &key.1) && e.exit_code.is_none() {
                if let Some(pid) = e.pid {
                    super::containers::kill_group(pid);
                }
            }
        }
        Some(pod)
    }
}

/// What a container runs: its `command` and `args`, its `env` (values
/// only: there are no secrets or config maps to resolve) over this
/// process's, and `HOSTNAME` as the kubelet sets it.
fn process_spec(container: &Value, pod_name: &str) -> ProcessSpec {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let command = strings(&container["command"]);
    let mut argv = Vec::new();
    if !command.is_empty() {
        argv = command;
        argv.extend(strings(&container["args"]));
    }
    let mut env = vec![("HOSTNAME".to_string(), pod_name.to_string())];
    if let Some(vars) = container["env"].as_array() {
        for var in vars {
            if let (Some(n), Some(v)) = (var["name"].as_str(), var["value"].as_str()) {
                env.push((n.to_string(), v.to_string()));
            }
        }
    }
    ProcessSpec {
        argv,
        env,
        working_dir: container["workingDir"].as_str().map(String::from),
    }
}

pub(super) fn start_all(starts: Starts) {
    for (run, spec) in starts {
        run.start(&spec);
    }
}

/// Kills the pods' processes and returns once they are reaped, so that a
/// client whose delete returned can rely on them being gone.
pub(super) async fn kill_pods(pods: &[Pod]) {
    for p in pods {
        for c in &p.containers {
            c.run.kill();
        }
    }
    for p in pods {
        for c in &p.containers {
            c.run.terminated().await;
        }
    }
}

/// The rendered pod, marked as the apiserver marks one it is deleting.
fn as_deleted(pod: &Pod, grace: i64, policy: Option<&str>) -> Value {
    let mut v = pod.render();
    v["metadata"]["deletionTimestamp"] = json!(timestamp(now()));
    v["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if policy == Some("Foreground") {
        v["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    }
    v
}

/// `DeleteOptions` from the query or the body (the Python client and
/// kube-rs send a body, kubectl a body, curl users a query).
pub(super) struct DeleteOptions {
    pub grace: Option<i64>,
    pub policy: Option<String>,
}

impl DeleteOptions {
    pub fn read(params: &Params, body: &[u8]) -> Result<DeleteOptions, KubeError> {
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| {
                KubeError::bad_request(format!(
                    "the body of the request was not DeleteOptions: {e}"
                ))
            })?
        };
        let mut policy = params
            .get("propagationPolicy")
            .map(String::from)
            .or_else(|| body["propagationPolicy"].as_str().map(String::from));
        if policy.is_none() {
            let orphan = params
                .get("orphanDependents")
                .map(super::objects::truthy)
                .or_else(|| body["orphanDependents"].as_bool());
            policy = orphan.map(|o| if o { "Orphan" } else { "Background" }.to_string());
        }
        if let Some(p) = &policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(KubeError::bad_request(format!(
                    "DeleteOptions.propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        }
        let grace = match params.number("gracePeriodSeconds")? {
            Some(g) => Some(g),
            None => body["gracePeriodSeconds"].as_i64(),
        };
        Ok(DeleteOptions { grace, policy })
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

fn list_pods(shared: &Shared, ns: Option<&str>, query: Option<&str>, headers: &HeaderMap) -> Reply {
    let st = shared.state.lock().unwrap();
    list_reply(st.pods.values(), ns, query, headers, st.resource_version)
}

impl Listed for Pod {
    const LIST_KIND: &'static str = "PodList";
    const API_VERSION: &'static str = "v1";
    const COLUMNS: &'static [Column] = POD_COLUMNS;
    const FIELDS: &'static [&'static str] = POD_FIELDS;
    fn namespace(&self) -> &str {
        Pod::namespace(self)
    }
    fn object(&self) -> &Value {
        &self.object
    }
    fn field(&self, field: &str) -> String {
        Pod::field(self, field)
    }
    fn row(&self) -> Vec<Value> {
        Pod::row(self)
    }
    fn render(&self) -> Value {
        Pod::render(self)
    }
}

pub(super) async fn list_all(
    AxumState(shared): AxumState<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    list_pods(&shared, None, query.as_deref(), &headers)
}

pub(super) async fn list_namespaced(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(ns): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    list_pods(&shared, Some(&ns), query.as_deref(), &headers)
}

pub(super) async fn create(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Reply {
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        KubeError::bad_request(format!("the body of the request was not a Pod: {e}"))
    })?;
    let (reply, starts) = shared.state.lock().unwrap().create_pod(&ns, body)?;
    start_all(starts);
    created(reply)
}

/// `GET …/pods/{name}` and `…/pods/{name}/status`: the same object.
pub(super) async fn get(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Reply {
    let st = shared.state.lock().unwrap();
    let pod = st
        .pods
        .get(&key(&ns, &name))
        .ok_or_else(|| KubeError::not_found("pods", &name))?;
    ok(pod.render())
}

pub(super) async fn delete(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    let options = DeleteOptions::read(&Params::parse(query.as_deref()), &body)?;
    let pod = {
        let mut st = shared.state.lock().unwrap();
        st.resource_version += 1;
        st.remove_pod(&key(&ns, &name))
            .ok_or_else(|| KubeError::not_found("pods", &name))?
    };
    let grace = options
        .grace
        .or_else(|| pod.object["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    let reply = as_deleted(&pod, grace, options.policy.as_deref());
    kill_pods(std::slice::from_ref(&pod)).await;
    ok(reply)
}

pub(super) async fn delete_collection(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(ns): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    let params = Params::parse(query.as_deref());
    let (labels, fields) = selectors(&params, POD_FIELDS)?;
    let options = DeleteOptions::read(&params, &body)?;
    let (pods, rv) = {
        let mut st = shared.state.lock().unwrap();
        let pods = st.remove_pods(|p| {
            p.namespace() == ns
                && labels.matches(&p.object["metadata"]["labels"])
                && fields.matches(|f| p.field(f))
        });
        (pods, st.resource_version)
    };
    let items = pods
        .iter()
        .map(|p| {
            let grace = options
                .grace
                .or_else(|| p.object["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30);
            as_deleted(p, grace, options.policy.as_deref())
        })
        .collect();
    kill_pods(&pods).await;
    ok(list("PodList", "v1", items, rv))
}

/// `GET …/pods/{name}/log`: always `text/plain` (the Python client asks
/// for JSON and gets text), every line ending in `\n`; with `follow`, a
/// chunked body that ends when the container does.
pub(super) async fn log(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, KubeError> {
    let params = Params::parse(query.as_deref());
    let tail = match params.number("tailLines")? {
        Some(n) if n < 0 => return Err(KubeError::bad_request("tailLines must be >= 0")),
        n => n.map(|n| n as usize),
    };
    let timestamps = params.flag("timestamps");
    let follow = params.flag("follow");
    let run = {
        let st = shared.state.lock().unwrap();
        let pod = st
            .pods
            .get(&key(&ns, &name))
            .ok_or_else(|| KubeError::not_found("pods", &name))?;
        let container = pod.container(params.get("container"))?;
        if matches!(container.run.state(), RunState::Waiting) {
            return Err(KubeError::bad_request(format!(
                "container \"{}\" in pod \"{name}\" is waiting to start: ContainerCreating",
                container.name
            )));
        }
        container.run.clone()
    };
    let body = if follow {
        Body::from_stream(run.follow(tail, timestamps))
    } else {
        Body::from(run.log(tail, timestamps))
    };
    Ok(([(header::CONTENT_TYPE, "text/plain")], body).into_response())
}
