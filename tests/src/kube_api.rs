//! A fake Kubernetes API server, the one faked part of the test suite: no
//! kube-apiserver (nor kubelet, nor container runtime) can run on the
//! machines the tests run on.
//!
//! It is written from Kubernetes' published API shapes (core v1 pods with
//! their log and exec subresources, batch/v1 Jobs, discovery, `Status`
//! errors, kubectl's `Table`), and `tests/kube_fake_protocol.rs` runs
//! kubectl 1.20 and the official Python client against it, so that what
//! Outpost's Kubernetes steps are tested against is what real clients
//! accept. A container "runs" as a local process: its `command` + `args`
//! with its `env`, in a process group of its own.
//!
//! What it leaves out, on purpose: watches (`?watch=true` is refused; poll
//! instead), SPDY exec (kubectl's `exec`), restarts (containers run once
//! whatever the `restartPolicy`), namespaces as objects (every namespace
//! exists), images (the image name is only echoed), back-off delays between
//! a Job's retries, and graceful deletion (a deleted pod is SIGKILLed and
//! gone when the DELETE returns).

mod containers;
mod exec;
pub mod generic;
mod jobs;
mod objects;
mod pods;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State as AxumState};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use objects::{ok, KubeError, Reply};

/// The Kubernetes version the fake claims to be (`/version`), the one of
/// the kubectl the tests run.
pub const VERSION: &str = "v1.20.2";

/// An exec session, as a test sees it afterwards.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    /// Of the process the exec ran; None until it started (or if it could
    /// not start).
    pub pid: Option<u32>,
    /// Set once the process is reaped.
    pub exit_code: Option<i32>,
    /// The client closed the session before the command ended (which, as
    /// on a kubelet, does not end it).
    pub client_closed: bool,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<(String, String), pods::Pod>,
    jobs: BTreeMap<(String, String), jobs::Job>,
    /// Every other kind (`generic`).
    objects: generic::Objects,
    execs: Vec<ExecRecord>,
    /// `METHOD /path?query` of every request, in order.
    requests: Vec<String>,
    resource_version: u64,
    /// Set when the fake is dropped: nothing starts after, so no Job
    /// controller or late request leaves a process behind the test.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    token: Option<String>,
    addr: SocketAddr,
}

/// The fake apiserver, on `127.0.0.1:<port>` over plain HTTP (which both
/// kubectl and the Python client accept); stopped, and every process it
/// started killed, on drop.
pub struct FakeKube {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Handle,
}

impl FakeKube {
    /// Accepting any credentials, or none.
    pub async fn start() -> FakeKube {
        Self::serve(None).await
    }

    /// Answering 401 (an `Unauthorized` Status, as the apiserver does) to
    /// any request without `Authorization: Bearer <token>`. kubectl never
    /// sends one here: client-go reads a kubeconfig's credentials only for
    /// an https server. The Python client does send it over http.
    pub async fn start_with_token(token: &str) -> FakeKube {
        Self::serve(Some(token.to_string())).await
    }

    async fn serve(token: Option<String>) -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake apiserver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            token,
            addr,
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeKube {
            shared,
            server,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// The objects of the other kinds (`generic`): (plural, namespace, name).
    pub fn objects(&self) -> Vec<(String, String, String)> {
        let st = self.shared.state.lock().unwrap();
        st.objects.live.keys().cloned().collect()
    }

    /// One object of the other kinds, as stored.
    pub fn object(&self, plural: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
        let st = self.shared.state.lock().unwrap();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        st.objects.live.get(&key).cloned()
    }

    /// `(plural, namespace, name, propagationPolicy, gracePeriodSeconds)`
    /// of each object of the other kinds deleted, in order.
    pub fn deleted_objects(&self) -> Vec<generic::Deleted> {
        self.shared.state.lock().unwrap().objects.deleted.clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Writes `dir/kubeconfig`: cluster, user (with the token, if any) and
    /// context, all named `fake`, the context current and in namespace
    /// `default`. JSON, which is YAML to every kubeconfig reader.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let token = self.shared.token.as_deref().unwrap_or("unchecked");
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url()}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{
                "name": "fake",
                "context": {"cluster": "fake", "user": "fake", "namespace": "default"},
            }],
            "current-context": "fake",
            "preferences": {},
        });
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap())
            .expect("write the kubeconfig");
        path
    }

    /// Creates a pod whose containers (image `fake/image:1`) each run
    /// `command` (none: they stay Running, doing nothing, until deleted),
    /// as `POST …/pods` would; returns it as the API does.
    pub fn add_pod<S: Into<String>>(
        &self,
        namespace: &str,
        name: &str,
        labels: &[(&str, &str)],
        containers: &[&str],
        command: impl IntoIterator<Item = S>,
    ) -> Value {
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let containers: Vec<Value> = containers
            .iter()
            .map(|c| json!({"name": c, "image": "fake/image:1", "command": command}))
            .collect();
        self.create_pod(
            namespace,
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": labels},
                "spec": {"containers": containers, "restartPolicy": "Never"},
            }),
        )
    }

    /// Creates a pod from its JSON (for `env`, `args`, `workingDir`…), as
    /// `POST …/pods` would; panics with the apiserver's message if it
    /// refuses it.
    pub fn create_pod(&self, namespace: &str, pod: Value) -> Value {
        let _runtime = self.runtime.enter();
        let created = self.shared.state.lock().unwrap().create_pod(namespace, pod);
        match created {
            Ok((reply, starts)) => {
                pods::start_all(starts);
                reply
            }
            Err(e) => panic!("the fake apiserver refuses the pod: {}", e.status()),
        }
    }

    /// `(namespace, name)` of every pod.
    pub fn pods(&self) -> Vec<(String, String)> {
        self.shared
            .state
            .lock()
            .unwrap()
            .pods
            .keys()
            .cloned()
            .collect()
    }

    /// `(namespace, name)` of every Job.
    pub fn jobs(&self) -> Vec<(String, String)> {
        self.shared
            .state
            .lock()
            .unwrap()
            .jobs
            .keys()
            .cloned()
            .collect()
    }

    /// The pod as `GET` returns it.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        let st = self.shared.state.lock().unwrap();
        st.pods
            .get(&(namespace.to_string(), name.to_string()))
            .map(pods::Pod::render)
    }

    /// The Job as `GET` returns it.
    pub fn job(&self, namespace: &str, name: &str) -> Option<Value> {
        let st = self.shared.state.lock().unwrap();
        st.jobs
            .get(&(namespace.to_string(), name.to_string()))
            .map(jobs::Job::render)
    }

    /// The pid of the process a container runs (also after it ended: the
    /// pid it had).
    pub fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        let st = self.shared.state.lock().unwrap();
        let pod = st.pods.get(&(namespace.to_string(), pod.to_string()))?;
        pod.containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.run.pid())
    }

    /// Every exec session so far, in order.
    pub fn execs(&self) -> Vec<ExecRecord> {
        self.shared.state.lock().unwrap().execs.clone()
    }

    /// `METHOD /path?query` of every request so far, in order: what a
    /// client actually sent.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        st.closed = true;
        for pod in st.pods.values() {
            for c in &pod.containers {
                c.run.kill();
            }
        }
        for e in st.execs.iter().filter(|e| e.exit_code.is_none()) {
            if let Some(pid) = e.pid {
                containers::kill_group(pid);
            }
        }
    }
}

/// Debian's kubectl 1.20 (`kubernetes-client`), which `just test-deps`
/// extracts under `target/tools/` rather than installing: `/usr/bin/kubectl`
/// may belong to another package, and be another version. `$OUTPOST_KUBECTL`
/// overrides it.
pub fn kubectl_1_20() -> PathBuf {
    let path = match std::env::var_os("OUTPOST_KUBECTL") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace root")
            .join("target/tools/kubernetes-client/usr/bin/kubectl"),
    };
    assert!(
        path.is_file(),
        "kubectl 1.20 is missing at {}: run `just test-deps` (it extracts Debian's kubernetes-client there), or set OUTPOST_KUBECTL",
        path.display()
    );
    path
}

/// The `python3` on PATH, checked to have the official Kubernetes client
/// (`pip install kubernetes`, which `just test-deps` does).
pub fn python_with_kubernetes() -> PathBuf {
    let python = PathBuf::from("python3");
    let found = Command::new(&python)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "python3 has no `kubernetes` module: run `just test-deps` (it installs the official client)"
    );
    python
}

/// The bearer token [`runner`]'s key store holds, at `keys/k8s/token`.
pub const TOKEN: &str = "k8s-s3cret-token-value";

/// A runner tagged `k8s` whose key store holds [`TOKEN`] at
/// `keys/k8s/token`, with `nodes` (a resources.yaml) as its node source,
/// returned once it reported them.
pub async fn runner(stack: &crate::Stack, dir: &Path, nodes: Option<&str>) -> crate::RunnerGuard {
    let store = dir.join("store");
    std::fs::create_dir_all(store.join("k8s")).unwrap();
    std::fs::write(store.join("k8s/token"), format!("{TOKEN}\n")).unwrap();
    let nodes_file = nodes.map(|yaml| {
        let path = dir.join("resources.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    });
    let mut reports = stack.client.subscribe("outpost.nodes.k8s").await.unwrap();
    let runner = crate::start_runner_with(&stack.nats, "k8s", &["k8s"], |o| {
        o.key_store = store.clone();
        o.nodes_file = nodes_file.clone();
    });
    if nodes.is_some() {
        use futures::StreamExt;
        tokio::time::timeout(crate::WAIT, reports.next())
            .await
            .unwrap();
    }
    runner
}

/// Whether the process `pid` exists (a container's or an exec's, which the
/// fake runs as local processes).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn router(shared: Arc<Shared>) -> Router {
    let pod = "/api/v1/namespaces/{ns}/pods/{name}";
    let job = "/apis/batch/v1/namespaces/{ns}/jobs/{name}";
    let router = Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_resources))
        .route("/apis/batch/v1", get(batch_resources))
        .route("/api/v1/namespaces", get(namespaces))
        .route("/api/v1/namespaces/{ns}", get(namespace))
        .route("/api/v1/pods", get(pods::list_all))
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get(pods::list_namespaced)
                .post(pods::create)
                .delete(pods::delete_collection),
        )
        .route(pod, get(pods::get).delete(pods::delete))
        .route(&format!("{pod}/status"), get(pods::get))
        .route(&format!("{pod}/log"), get(pods::log))
        .route(&format!("{pod}/exec"), get(exec::exec).post(exec::exec))
        .route("/apis/batch/v1/jobs", get(jobs::list_all))
        .route(
            "/apis/batch/v1/namespaces/{ns}/jobs",
            get(jobs::list_namespaced).post(jobs::create),
        )
        .route(job, get(jobs::get).delete(jobs::delete))
        .route(&format!("{job}/status"), get(jobs::get));
    generic::routes(router)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ))
        .with_state(shared)
}

/// Records the request, and checks the bearer token if there is one to
/// check.
async fn authenticate(
    AxumState(shared): AxumState<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    shared.state.lock().unwrap().requests.push(line);
    if let Some(token) = &shared.token {
        let expected = format!("Bearer {token}");
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return KubeError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> Reply {
    Err(KubeError::no_route())
}

async fn version() -> Reply {
    ok(json!({
        "major": "1",
        "minor": "20",
        "gitVersion": VERSION,
        "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56",
        "gitTreeState": "clean",
        "buildDate": "2021-01-13T13:20:00Z",
        "goVersion": "go1.15.5",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

async fn api_versions(AxumState(shared): AxumState<Arc<Shared>>) -> Reply {
    ok(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{
            "clientCIDR": "0.0.0.0/0",
            "serverAddress": shared.addr.to_string(),
        }],
    }))
}

async fn api_groups() -> Reply {
    let version = json!({"groupVersion": "batch/v1", "version": "v1"});
    ok(json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [{
            "name": "batch",
            "versions": [version],
            "preferredVersion": version,
        }],
    }))
}

fn resource(name: &str, namespaced: bool, kind: &str, verbs: &[&str], short: &[&str]) -> Value {
    let mut r = json!({
        "name": name,
        "singularName": "",
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if !short.is_empty() {
        r["shortNames"] = json!(short);
    }
    if !name.contains('/') && name != "namespaces" {
        r["categories"] = json!(["all"]);
    }
    r
}

async fn core_resources() -> Reply {
    ok(json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            resource("namespaces", false, "Namespace", &["get", "list"], &["ns"]),
            resource(
                "pods",
                true,
                "Pod",
                &["create", "delete", "deletecollection", "get", "list"],
                &["po"],
            ),
            resource("pods/exec", true, "PodExecOptions", &["create", "get"], &[]),
            resource("pods/log", true, "Pod", &["get"], &[]),
            resource("pods/status", true, "Pod", &["get"], &[]),
        ],
    }))
}

async fn batch_resources() -> Reply {
    ok(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "batch/v1",
        "resources": [
            resource("jobs", true, "Job", &["create", "delete", "get", "list"], &[]),
            resource("jobs/status", true, "Job", &["get"], &[]),
        ],
    }))
}

fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// `default`, `kube-system`, and every namespace something was created in.
async fn namespaces(AxumState(shared): AxumState<Arc<Shared>>) -> Reply {
    let st = shared.state.lock().unwrap();
    let mut names: Vec<&str> = vec!["default", "kube-system"];
    names.extend(st.pods.keys().map(|(ns, _)| ns.as_str()));
    names.extend(st.jobs.keys().map(|(ns, _)| ns.as_str()));
    names.sort();
    names.dedup();
    let items = names.into_iter().map(namespace_object).collect();
    ok(objects::list(
        "NamespaceList",
        "v1",
        items,
        st.resource_version,
    ))
}

async fn namespace(axum::extract::Path(ns): axum::extract::Path<String>) -> Reply {
    ok(namespace_object(&ns))
}
