//! Rundeck's HTTP request step (`edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`
//! and its node-step variant), run by the runner against a real HTTP
//! server on loopback: the request as the plugin makes it (method,
//! headers, body, Basic authentication with a password from the runner's
//! key store), the response printed, the expected codes deciding the step,
//! and an abort that drops the request.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;
use tokio::sync::mpsc;

/// What the server saw: method and path, the headers the tests look at,
/// the body.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    call: String,
    authorization: String,
    content_type: String,
    trace: String,
    body: String,
}

struct Server {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Each request to `/hang` on arrival, and again when its connection
    /// is dropped.
    hang: mpsc::UnboundedReceiver<&'static str>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends when dropped: the server dropped the request's handler, which
/// hyper does when its client goes away.
struct Gone(mpsc::UnboundedSender<&'static str>);

impl Drop for Gone {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

async fn server() -> Server {
    type Shared = (Arc<Mutex<Vec<Seen>>>, mpsc::UnboundedSender<&'static str>);
    async fn deploy(
        State((seen, _)): State<Shared>,
        Path(what): Path<String>,
        headers: HeaderMap,
        body: String,
    ) -> (StatusCode, [(&'static str, &'static str); 1], String) {
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        seen.lock().unwrap().push(Seen {
            call: format!("POST /deploy/{what}"),
            authorization: h("authorization"),
            content_type: h("content-type"),
            trace: h("x-trace"),
            body,
        });
        (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            format!("{{\"deployed\":\"{what}\",\"n\":1}}"),
        )
    }
    let (tx, hang) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/deploy/{what}", axum::routing::post(deploy))
        .route(
            "/fail",
            axum::routing::get(|| async {
                (StatusCode::INTERNAL_SERVER_ERROR, "database is down")
            }),
        )
        .route(
            "/hang",
            axum::routing::get(|State((_, tx)): State<Shared>| async move {
                let _ = tx.send("arrived");
                let _gone = Gone(tx);
                std::future::pending::<()>().await;
            }),
        )
        .with_state((seen.clone(), tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        seen,
        hang,
        task,
    }
}

/// A runner tagged `http` whose key store holds `api/password`.
fn http_runner(stack: &Stack, dir: &std::path::Path) -> RunnerGuard {
    let key_store = dir.join("keys");
    std::fs::create_dir_all(key_store.join("api")).unwrap();
    std::fs::write(key_store.join("api/password"), "s3cret-on-the-runner\n").unwrap();
    start_runner_with(&stack.nats, "http-1", &["http"], |o| {
        o.key_store = key_store.clone();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_step_makes_the_request_rundecks_plugin_makes_and_its_codes_decide() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = http_runner(&stack, dir.path());
    let srv = server().await;
    let yaml = format!(
        r#"
- name: release
  runnerSelector: {{filter: http}}
  sequence:
    commands:
    - type: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin
      nodeStep: false
      configuration:
        remoteUrl: http://{addr}/deploy/${{job.name}}
        method: POST
        headers: '{{"Content-Type": "application/json", "X-Trace": "${{job.execid}}"}}'
        body: '{{"version": "1.2"}}'
        authentication: Basic
        username: deployer
        password: keys/api/password
        responseCode: 200-201
        printResponse: 'true'
        printResponseCode: 'true'
    - type: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin
      nodeStep: false
      configuration:
        remoteUrl: http://{addr}/fail
"#,
        addr = srv.addr
    );
    let job = stack.load(&yaml, "release").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(st.steps[1].status, StepStatus::Failed, "{st:#?}");
    // Without `responseCode` a 500 fails, in the plugin's words.
    assert_eq!(
        st.steps[1].reason.as_deref(),
        Some("HTTP request failed with status code: 500: database is down")
    );

    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(s.call, "POST /deploy/release");
    // base64("deployer:s3cret-on-the-runner"): the key store's value, read
    // on the runner.
    assert_eq!(
        s.authorization,
        "Basic ZGVwbG95ZXI6czNjcmV0LW9uLXRoZS1ydW5uZXI="
    );
    assert_eq!(s.content_type, "application/json");
    assert!(!s.trace.is_empty() && !s.trace.contains("${"), "{s:?}");
    assert_eq!(s.body, r#"{"version": "1.2"}"#);

    let lines: Vec<String> = stack
        .output_lines(id)
        .await
        .into_iter()
        .filter(|e| e.stepctx == "1")
        .map(|e| e.log)
        .collect();
    // The code, then the JSON body re-indented, as the plugin prints them.
    assert_eq!(
        lines,
        [
            "Response Code: HTTP/1.1 201 Created",
            "{",
            "  \"deployed\": \"release\",",
            "  \"n\": 1",
            "}"
        ]
    );
    let all = serde_json::to_string(&stack.output_lines(id).await).unwrap();
    assert!(!all.contains("s3cret"), "the password reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_options_value_is_the_password_as_it_was_given() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = http_runner(&stack, dir.path());
    let srv = server().await;
    let yaml = format!(
        r#"
- name: with-option
  runnerSelector: {{filter: http}}
  options:
  - {{name: pw, secure: true, valueExposed: true, required: true}}
  sequence:
    commands:
    - type: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin
      nodeStep: false
      configuration:
        remoteUrl: http://{addr}/deploy/opt
        method: POST
        authentication: Basic
        username: svc
        password: ${{option.pw}}
"#,
        addr = srv.addr
    );
    let job = stack.load(&yaml, "with-option").await;
    // A value that reads like a storage path is still the password: the
    // job's text, not the run's value, decides what the key store gives.
    let id = stack.run_job(job, &[("pw", "keys/api/password")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let seen = srv.seen.lock().unwrap().clone();
    // base64("svc:keys/api/password")
    assert_eq!(seen[0].authorization, "Basic c3ZjOmtleXMvYXBpL3Bhc3N3b3Jk");
    // A password in a plain option is refused at import.
    let (status, body) = stack
        .import(&yaml.replace("secure: true, valueExposed: true, ", ""))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("which is not a secure option"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_an_http_step_drops_its_request() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = http_runner(&stack, dir.path());
    let mut srv = server().await;
    let yaml = format!(
        r#"
- name: slow-call
  runnerSelector: {{filter: http}}
  sequence:
    commands:
    - type: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin
      nodeStep: false
      configuration:
        remoteUrl: http://{addr}/hang
        timeout: '600000'
"#,
        addr = srv.addr
    );
    let job = stack.load(&yaml, "slow-call").await;
    let id = stack.run_job(job, &[]).await;
    let arrived = tokio::time::timeout(WAIT, srv.hang.recv()).await.unwrap();
    assert_eq!(arrived, Some("arrived"));
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    // The runner dropped the request, so the server saw its client go.
    let gone = tokio::time::timeout(WAIT, srv.hang.recv()).await.unwrap();
    assert_eq!(gone, Some("dropped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_node_step_calls_once_per_node_with_the_nodes_context() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        "api1:\n  hostname: api1.internal\n  tags: api\n  node-executor: local\n\
         api2:\n  hostname: api2.internal\n  tags: api\n  node-executor: local\n",
    )
    .unwrap();
    let mut reported = stack
        .client
        .subscribe("outpost.nodes.http-1")
        .await
        .unwrap();
    let key_store = dir.path().join("keys");
    let _runner = start_runner_with(&stack.nats, "http-1", &["http"], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();
    let srv = server().await;
    let yaml = format!(
        r#"
- name: register
  nodefilters: {{filter: 'tags: api'}}
  sequence:
    commands:
    - type: edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin
      nodeStep: true
      configuration:
        remoteUrl: http://{addr}/deploy/${{node.hostname}}
        method: POST
        body: ${{node.name}}
"#,
        addr = srv.addr
    );
    let job = stack.load(&yaml, "register").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.successful_nodes, ["api1", "api2"], "{st:#?}");
    let mut calls: Vec<(String, String)> = srv
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.call.clone(), s.body.clone()))
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("POST /deploy/api1.internal".to_string(), "api1".to_string()),
            ("POST /deploy/api2.internal".to_string(), "api2".to_string()),
        ]
    );
}

/// Echoes the Basic password it was sent, as a careless server might.
async fn echo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/whoami",
        axum::routing::post(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| data_encoding::BASE64.decode(b.as_bytes()).ok())
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .unwrap_or_default();
            format!("you are {auth}\n")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

/// The secret scan, for a plugin's credentials: a password from the
/// runner's key store and one from a secure option, each sent and echoed
/// back, are in no stream message, KV value, NATS data file, runner work
/// file or runner log line (the real runner binary, at debug level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_credentials_are_found_nowhere_but_where_they_were_sent() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let stored = format!("stored-{}", uuid::Uuid::now_v7().simple());
    let given = format!("given-{}", uuid::Uuid::now_v7().simple());
    std::fs::create_dir_all(keys.path().join("api")).unwrap();
    std::fs::write(keys.path().join("api/pw"), &stored).unwrap();
    let bundle = stack.enrol("vault", &["vault"], dir.path()).await;
    let log_path = dir.path().join("runner.log");
    let mut heartbeats = stack.client.subscribe("outpost.hb.vault.*").await.unwrap();
    let key_store = keys.path().to_str().unwrap();
    let _runner = enrolled_runner_process(
        &bundle,
        &dir.path().join("work"),
        &["--key-store", key_store],
        &log_path,
    );
    use futures::StreamExt;
    tokio::time::timeout(WAIT, heartbeats.next())
        .await
        .unwrap_or_else(|_| panic!("{}", std::fs::read_to_string(&log_path).unwrap()));
    let (addr, _server) = echo_server().await;
    let step = |password: &str| {
        format!(
            "    - type: edu.ohio.ais.rundeck.HttpWorkflowStepPlugin\n      nodeStep: false\n      configuration:\n        remoteUrl: http://{addr}/whoami\n        method: POST\n        authentication: Basic\n        username: svc\n        password: '{password}'\n        printResponse: 'true'\n"
        )
    };
    let yaml = format!(
        "- name: creds\n  runnerSelector: {{filter: vault}}\n  options:\n  - {{name: pw, secure: true, valueExposed: true, required: true}}\n  sequence:\n    commands:\n{}{}",
        step("keys/api/pw"),
        step("${option.pw}")
    );
    let job = stack.load(&yaml, "creds").await;
    let id = stack.run_job(job, &[("pw", &given)]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    // Both were sent (the server echoed them), and masked in the output.
    assert_eq!(
        stack.log_texts(id).await,
        ["you are svc:[SECURE]", "you are svc:[SECURE]"]
    );
    for secret in [&stored, &given] {
        assert_eq!(
            find_in_all_streams(&stack.js, secret).await,
            Vec::<String>::new()
        );
        assert_eq!(
            files_containing(stack.nats.data_dir(), secret),
            Vec::<std::path::PathBuf>::new()
        );
        assert_eq!(
            files_containing(dir.path(), secret),
            Vec::<std::path::PathBuf>::new()
        );
    }
}
