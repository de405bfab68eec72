//! batch/v1 Jobs, with a controller that runs the template's pods one at a
//! time until `completions` succeed or more than `backoffLimit` fail (with
//! no back-off delay between them: a fake has no reason to wait).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::containers::{Run, RunState};
use super::objects::{
    admit_metadata, created, deleted_status, human_duration, labels_mut, list_reply, name_suffix,
    now, ok, text, timestamp, uid, Cause, Column, KubeError, Listed, Params, Reply,
};
use super::pods::{kill_pods, start_all, DeleteOptions, Pod};
use super::{Shared, State};

const JOB_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.successful"];

pub(super) struct Job {
    /// `apiVersion`, `kind`, `metadata` and `spec` as stored.
    pub object: Value,
    pub created: DateTime<Utc>,
    pub resource_version: u64,
    pub started: Option<DateTime<Utc>>,
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// `completionTime`: set only when the Job completes, not when it fails.
    pub completed: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

impl Job {
    pub fn name(&self) -> &str {
        text(&self.object, &["metadata", "name"])
    }

    pub fn namespace(&self) -> &str {
        text(&self.object, &["metadata", "namespace"])
    }

    pub fn uid(&self) -> &str {
        text(&self.object, &["metadata", "uid"])
    }

    fn completions(&self) -> u32 {
        self.object["spec"]["completions"].as_u64().unwrap_or(1) as u32
    }

    fn backoff_limit(&self) -> u32 {
        self.object["spec"]["backoffLimit"].as_u64().unwrap_or(6) as u32
    }

    fn finished(&self) -> bool {
        self.completed.is_some() || self.failed_at.is_some()
    }

    pub fn render(&self) -> Value {
        let mut v = self.object.clone();
        v["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        let mut status = json!({});
        if let Some(t) = self.started {
            status["startTime"] = json!(timestamp(t));
        }
        if self.active > 0 {
            status["active"] = json!(self.active);
        }
        if self.succeeded > 0 {
            status["succeeded"] = json!(self.succeeded);
        }
        if self.failed > 0 {
            status["failed"] = json!(self.failed);
        }
        if let Some(t) = self.completed {
            status["completionTime"] = json!(timestamp(t));
            status["conditions"] = json!([{
                "type": "Complete",
                "status": "True",
                "lastProbeTime": timestamp(t),
                "lastTransitionTime": timestamp(t),
            }]);
        } else if let Some(t) = self.failed_at {
            status["conditions"] = json!([{
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
                "lastProbeTime": timestamp(t),
                "lastTransitionTime": timestamp(t),
            }]);
        }
        v["status"] = status;
        v
    }

    /// The next pod, from the template: named `<job>-<suffix>`, labelled
    /// and owned as the Job controller does.
    fn pod_body(&self) -> Value {
        let template = &self.object["spec"]["template"];
        let mut meta = if template["metadata"].is_object() {
            template["metadata"].clone()
        } else {
            json!({})
        };
        let name = self.name();
        meta["name"] = json!(format!("{name}-{}", name_suffix()));
        meta["generateName"] = json!(format!("{name}-"));
        meta["ownerReferences"] = json!([{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": self.uid(),
            "controller": true,
            "blockOwnerDeletion": true,
        }]);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": template["spec"],
        })
    }

    fn row(&self) -> Vec<Value> {
        let containers = self.object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        let images: Vec<&str> = containers
            .iter()
            .filter_map(|c| c["image"].as_str())
            .collect();
        let selector: Vec<String> = self.object["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect()
            })
            .unwrap_or_default();
        let duration = self
            .started
            .map(|s| human_duration(self.completed.unwrap_or_else(now) - s))
            .unwrap_or_default();
        vec![
            json!(self.name()),
            json!(format!("{}/{}", self.succeeded, self.completions())),
            json!(duration),
            json!(human_duration(now() - self.created)),
            json!(names.join(",")),
            json!(images.join(",")),
            json!(selector.join(",")),
        ]
    }

    fn field(&self, field: &str) -> String {
        match field {
            "metadata.name" => self.name().into(),
            "metadata.namespace" => self.namespace().into(),
            "status.successful" => self.succeeded.to_string(),
            _ => String::new(),
        }
    }
}

const JOB_COLUMNS: &[Column] = &[
    ("Name", "string", "name", 0, "Name must be unique within a namespace."),
    ("Completions", "string", "", 0, "The desired number of successfully finished pods the job should be run with."),
    ("Duration", "string", "", 0, "Time required to complete the job."),
    ("Age", "string", "", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
    ("Containers", "string", "", 1, "Names of each container in the template."),
    ("Images", "string", "", 1, "Images referenced by each container in the template."),
    ("Selector", "string", "", 1, "A label query over pods that should match the pod count."),
];

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

impl State {
    /// Validates and stores a Job, as the apiserver admits one: returns the
    /// reply and the Job's uid, for its controller.
    fn create_job(
        &mut self,
        namespace: &str,
        mut body: Value,
    ) -> Result<(Value, String), KubeError> {
        if let Some(kind) = body.get("kind").and_then(Value::as_str) {
            if kind != "Job" {
                return Err(KubeError::bad_request(format!(
                    "the kind {kind:?} does not match the endpoint's kind \"Job\""
                )));
            }
        }
        let created = now();
        let uid = uid();
        let name = admit_metadata("Job.batch", namespace, &mut body, &uid, created)?;
        if self
            .jobs
            .contains_key(&(namespace.to_string(), name.clone()))
        {
            return Err(KubeError::already_exists("batch", "jobs", &name));
        }
        body["apiVersion"] = json!("batch/v1");
        body["kind"] = json!("Job");
        let invalid = |field: &str, cause| KubeError::invalid("Job.batch", &name, field, cause);
        if !body["spec"].is_object() {
            return Err(invalid("spec.template", Cause::Required));
        }
        let spec = &mut body["spec"];
        if !spec["template"].is_object() || !spec["template"]["spec"].is_object() {
            return Err(invalid("spec.template", Cause::Required));
        }
        // Defaulting gives a template without one `Always`, which a Job refuses.
        let restart = spec["template"]["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
            .to_string();
        if restart != "Never" && restart != "OnFailure" {
            return Err(invalid(
                "spec.template.spec.restartPolicy",
                Cause::Unsupported(format!("{restart:?}"), "\"OnFailure\", \"Never\"".into()),
            ));
        }
        let manual = spec["manualSelector"].as_bool().unwrap_or(false);
        if !spec["template"]["metadata"].is_object() {
            spec["template"]["metadata"] = json!({});
        }
        if !manual {
            let labels = labels_mut(&mut spec["template"]["metadata"]);
            labels.insert("controller-uid".into(), json!(uid));
            labels.insert("job-name".into(), json!(name));
            spec["selector"] = json!({"matchLabels": {"controller-uid": uid}});
        }
        let obj = spec.as_object_mut().unwrap();
        if obj.get("completions").is_none_or(Value::is_null)
            && obj.get("parallelism").is_none_or(Value::is_null)
        {
            obj.insert("completions".into(), json!(1));
            obj.insert("parallelism".into(), json!(1));
        }
        obj.entry("backoffLimit").or_insert(json!(6));
        let template_labels = spec["template"]["metadata"]["labels"].clone();
        let job_labels = &body["metadata"]["labels"];
        if job_labels.as_object().is_none_or(|l| l.is_empty()) {
            body["metadata"]["labels"] = template_labels;
        }
        // Refuse now what the pods would be refused for later, as the
        // apiserver validates the template with the Job.
        let job = Job {
            object: body,
            created,
            resource_version: 0,
            started: None,
            active: 0,
            succeeded: 0,
            failed: 0,
            completed: None,
            failed_at: None,
        };
        State::default().create_pod(namespace, job.pod_body())?;
        self.resource_version += 1;
        let job = Job {
            resource_version: self.resource_version,
            ..job
        };
        let reply = job.render();
        self.jobs.insert((namespace.to_string(), name), job);
        Ok((reply, uid))
    }

    fn job_mut(&mut self, namespace: &str, name: &str, uid: &str) -> Option<&mut Job> {
        self.jobs
            .get_mut(&(namespace.to_string(), name.to_string()))
            .filter(|j| j.uid() == uid)
    }
}

/// Runs the Job's pods until it completes or fails; stops when the Job
/// (this one: a new Job of the same name has another uid) is deleted.
async fn control(shared: Arc<Shared>, namespace: String, name: String, uid: String) {
    loop {
        let (pod_name, runs, starts) = {
            let mut st = shared.state.lock().unwrap();
            let Some(job) = st.job_mut(&namespace, &name, &uid) else {
                return;
            };
            if job.finished() {
                return;
            }
            let body = job.pod_body();
            match st.create_pod(&namespace, body) {
                Ok((pod, starts)) => {
                    st.resource_version += 1;
                    let rv = st.resource_version;
                    let job = st.job_mut(&namespace, &name, &uid).unwrap();
                    job.active = 1;
                    job.started.get_or_insert_with(now);
                    job.resource_version = rv;
                    let runs: Vec<Arc<Run>> = starts.iter().map(|(r, _)| r.clone()).collect();
                    (text(&pod, &["metadata", "name"]).to_string(), runs, starts)
                }
                // The random suffix is taken: draw again.
                Err(e) if e.code() == 409 => continue,
                Err(_) => {
                    let job = st.job_mut(&namespace, &name, &uid).unwrap();
                    job.failed_at = Some(now());
                    return;
                }
            }
        };
        start_all(starts);
        for run in &runs {
            run.terminated().await;
        }
        let mut st = shared.state.lock().unwrap();
        let pod_still_there = st.pods.contains_key(&(namespace.clone(), pod_name));
        st.resource_version += 1;
        let rv = st.resource_version;
        let Some(job) = st.job_mut(&namespace, &name, &uid) else {
            return;
        };
        job.active = 0;
        job.resource_version = rv;
        let succeeded = runs
            .iter()
            .all(|r| matches!(r.state(), RunState::Terminated { code: 0, .. }));
        if succeeded {
            job.succeeded += 1;
            if job.succeeded >= job.completions() {
                job.completed = Some(now());
                return;
            }
        } else if pod_still_there {
            job.failed += 1;
            if job.failed > job.backoff_limit() {
                job.failed_at = Some(now());
                return;
            }
        }
        // A pod deleted from under the Job is replaced, not counted.
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

fn list_jobs(shared: &Shared, ns: Option<&str>, query: Option<&str>, headers: &HeaderMap) -> Reply {
    let st = shared.state.lock().unwrap();
    list_reply(st.jobs.values(), ns, query, headers, st.resource_version)
}

impl Listed for Job {
    const LIST_KIND: &'static str = "JobList";
    const API_VERSION: &'static str = "batch/v1";
    const COLUMNS: &'static [Column] = JOB_COLUMNS;
    const FIELDS: &'static [&'static str] = JOB_FIELDS;
    fn namespace(&self) -> &str {
        Job::namespace(self)
    }
    fn object(&self) -> &Value {
        &self.object
    }
    fn field(&self, field: &str) -> String {
        Job::field(self, field)
    }
    fn row(&self) -> Vec<Value> {
        Job::row(self)
    }
    fn render(&self) -> Value {
        Job::render(self)
    }
}

pub(super) async fn list_all(
    AxumState(shared): AxumState<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    list_jobs(&shared, None, query.as_deref(), &headers)
}

pub(super) async fn list_namespaced(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(ns): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Reply {
    list_jobs(&shared, Some(&ns), query.as_deref(), &headers)
}

pub(super) async fn create(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path(ns): Path<String>,
    body: Bytes,
) -> Reply {
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        KubeError::bad_request(format!("the body of the request was not a Job: {e}"))
    })?;
    let (reply, uid) = shared.state.lock().unwrap().create_job(&ns, body)?;
    let name = text(&reply, &["metadata", "name"]).to_string();
    tokio::spawn(control(shared.clone(), ns, name, uid));
    created(reply)
}

/// `GET …/jobs/{name}` and `…/jobs/{name}/status`.
pub(super) async fn get(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
) -> Reply {
    let st = shared.state.lock().unwrap();
    let job = st
        .jobs
        .get(&key(&ns, &name))
        .ok_or_else(|| KubeError::not_found_in("batch", "jobs", &name))?;
    ok(job.render())
}

/// batch/v1 keeps its old default: without a policy the pods are orphaned.
/// `Background` and `Foreground` delete them (here, before replying).
pub(super) async fn delete(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Reply {
    let options = DeleteOptions::read(&Params::parse(query.as_deref()), &body)?;
    let policy = options.policy.as_deref().unwrap_or("Orphan");
    let (job, pods) = {
        let mut st = shared.state.lock().unwrap();
        let job = st
            .jobs
            .remove(&key(&ns, &name))
            .ok_or_else(|| KubeError::not_found_in("batch", "jobs", &name))?;
        let uid = job.uid().to_string();
        let pods = if policy == "Orphan" {
            // What the garbage collector does to orphans.
            for pod in st.pods.values_mut().filter(|p| owned_by(p, &uid)) {
                let meta = &mut pod.object["metadata"];
                let none_left = match meta["ownerReferences"].as_array_mut() {
                    Some(refs) => {
                        refs.retain(|r| r["uid"] != uid.as_str());
                        refs.is_empty()
                    }
                    None => false,
                };
                if none_left {
                    meta.as_object_mut().unwrap().remove("ownerReferences");
                }
            }
            st.resource_version += 1;
            Vec::new()
        } else {
            st.remove_pods(|p| owned_by(p, &uid))
        };
        (job, pods)
    };
    let reply = if policy == "Background" {
        deleted_status("batch", "jobs", &name, job.uid())
    } else {
        // Real apiservers keep the Job until the garbage collector has
        // dealt with its pods; this is the object they reply with.
        let mut v = job.render();
        v["metadata"]["deletionTimestamp"] = json!(timestamp(now()));
        v["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        v["metadata"]["finalizers"] = json!([if policy == "Foreground" {
            "foregroundDeletion"
        } else {
            "orphan"
        }]);
        v
    };
    kill_pods(&pods).await;
    ok(reply)
}
