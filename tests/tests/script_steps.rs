//! Script steps as Rundeck has them: inline, from a file on the runner
//! (`scriptfile`) and fetched by the runner from a URL (`scripturl`, here a
//! real HTTP server on loopback), with `@key@` tokens, `args`,
//! `scriptInterpreter`, `interpreterArgsQuoted` and `fileExtension`.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;

/// Serves `/deploy.sh`; anything else is a 404.
async fn script_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().route(
        "/deploy.sh",
        axum::routing::get(|| async { "#!/bin/sh\necho \"from url @option.env@ $1\"\n" }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_inline_from_a_file_and_from_a_url_run_with_their_tokens_and_args() {
    let stack = Stack::start_on(NatsServer::start_secure(), ServiceRoles::ALL).await;
    let _edge = start_runner(&stack.nats, "edge", &["edge"]);
    let (addr, server) = script_server().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.sh");
    std::fs::write(&local, "echo \"from file @option.env@ $1 ${0##*.}\"\n").unwrap();
    let yaml = format!(
        r#"
- name: scripts
  runnerSelector: {{filter: edge}}
  options:
  - {{name: env, value: qa}}
  - {{name: pw, secure: true, valueExposed: true}}
  sequence:
    commands:
    - scripturl: http://{addr}/deploy.sh
      args: one
      expandTokenInScriptFile: true
    - scriptfile: {local}
      args: two
      fileExtension: sh
    - script: |
        echo "inline @option.env@ [@option.nope@] @job.name@ mail me@example.com"
        test "@option.pw@" = hunter2 && echo "secure token in"
    - script: echo "$1|$2"
      args: a b
      scriptInterpreter: sh -c
      interpreterArgsQuoted: true
"#,
        local = local.display()
    );
    let job = stack.load(&yaml, "scripts").await;
    let id = stack.run_job(job, &[("pw", "hunter2")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(
        stack.log_texts(id).await,
        [
            "from url qa one",
            // Tokens stay in a file's script without expandTokenInScriptFile.
            "from file @option.env@ two sh",
            "inline qa [] scripts mail me@example.com",
            "secure token in",
            "a|b",
        ]
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_that_cannot_be_fetched_or_read_fails_its_step_saying_why() {
    let stack = Stack::start().await;
    let (addr, server) = script_server().await;
    let yaml = format!(
        "- name: missing\n  sequence:\n    keepgoing: true\n    commands:\n    - scripturl: http://{addr}/nope.sh\n    - scriptfile: /nonexistent/outpost-test.sh\n"
    );
    let job = stack.load(&yaml, "missing").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    assert_eq!(
        [st.steps[0].status, st.steps[1].status],
        [StepStatus::Failed, StepStatus::Failed]
    );
    assert_eq!(
        st.steps[0].reason.as_deref(),
        Some(format!("cannot fetch scripturl http://{addr}/nope.sh: HTTP 404 Not Found").as_str())
    );
    assert!(
        st.steps[1]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("cannot read scriptfile /nonexistent/outpost-test.sh: "),
        "{st:#?}"
    );
    server.abort();
}
