//! A runner's allow-list (`--allowed-plugins`, Rundeck's
//! `remoteRunnerAllowedPluginsFile` shape): a runner never receives a
//! plugin step its list leaves out, the step waits saying which runner
//! refuses what, and it runs as soon as a runner that allows it connects.
//! A list that does not read stops the runner at start, with the fault.

use std::process::Command;
use std::sync::{Arc, Mutex};

use outpost_schemas::state::StepStatus;
use outpost_schemas::{subjects, Event};
use outpost_services::contract::RunnerReplica;
use outpost_tests::*;

const HTTP: &str = "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin";
const HTTP_NODE: &str = "edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin";

/// A server that counts the requests it is sent.
async fn counting_server() -> (
    std::net::SocketAddr,
    Arc<Mutex<u32>>,
    tokio::task::JoinHandle<()>,
) {
    let hits = Arc::new(Mutex::new(0u32));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/deploy",
        axum::routing::post(move || {
            let counted = counted.clone();
            async move {
                *counted.lock().unwrap() += 1;
                "deployed"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, hits, task)
}

/// Runner `a` tagged `dc`, whose list allows no plugin (the real binary,
/// so that the flag is read as an operator passes it), once the API shows
/// what its list leaves out.
async fn refusing_runner(stack: &Stack, dir: &std::path::Path) -> Reaped {
    let list = dir.join("allowed-plugins.yaml");
    std::fs::write(
        &list,
        "allowedPlugins:\n  WorkflowStep: []\n  WorkflowNodeStep: []\n",
    )
    .unwrap();
    let work = dir.join("work-a");
    std::fs::create_dir_all(&work).unwrap();
    let runner = runner_process(
        stack,
        "a",
        "dc",
        &work,
        &["--allowed-plugins", list.to_str().unwrap()],
    );
    // Every plugin it has (the HTTP ones always, Ansible's where
    // `ansible-playbook` is on its PATH), from its heartbeat.
    wait_for_async(
        "runner a's heartbeat with what its list refuses",
        || async {
            let runners: Vec<RunnerReplica> = stack.get_json("/runners").await;
            runners.iter().any(|r| {
                r.runner_id == "a"
                    && r.live
                    && r.plugins.is_empty()
                    && [HTTP, HTTP_NODE]
                        .iter()
                        .all(|p| r.plugins_not_allowed.iter().any(|n| n == p))
            })
        },
    )
    .await;
    runner
}

/// Which runners claimed step `step` of `id`.
async fn claimants(stack: &Stack, id: uuid::Uuid, step: u32) -> Vec<String> {
    stack
        .events(id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::StepClaimed(c) if c.step == step => Some(c.runner_id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_step_waits_for_a_runner_that_allows_it_and_no_other_receives_it() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = refusing_runner(&stack, dir.path()).await;

    let (addr, hits, _server) = counting_server().await;
    let yaml = format!(
        r#"
- name: release
  runnerSelector: {{filter: dc}}
  sequence:
    commands:
    - exec: echo ran on the runner
    - type: {HTTP}
      nodeStep: false
      configuration:
        remoteUrl: http://{addr}/deploy
        method: POST
"#
    );
    let job = stack.load(&yaml, "release").await;
    let id = stack.run_job(job, &[]).await;
    // A serves `dc`: it runs the exec step, and then is not given the
    // plugin step, which waits and says why.
    let st = stack
        .wait_state(id, "the HTTP step waiting for a runner", |s| {
            s.steps[1].status == StepStatus::Waiting
        })
        .await;
    assert_eq!(st.steps[0].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(st.steps[0].runner_id.as_deref(), Some("a"));
    assert_eq!(
        st.steps[1].reason.as_deref(),
        Some(
            "no runner can run the plugin step: it needs `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`, and of the live runners with the tags [dc], runner a does not allow `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin`; the step stays queued and starts when a runner that allows and has them connects"
        ),
        "{st:#?}"
    );

    // A runner whose list allows it takes it up at once.
    let _b = start_runner(&stack.nats, "b", &["dc"]);
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.steps[1].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(st.steps[1].runner_id.as_deref(), Some("b"));
    assert_eq!(*hits.lock().unwrap(), 1, "one request, from B");
    // A never claimed it, not even to hand it back.
    assert_eq!(claimants(&stack, id, 2).await, ["b"]);
    // Nor was it delivered to A: the lane's consumer gave it out once.
    let lane = subjects::lane(&[HTTP.to_string()].into()).unwrap();
    let mut consumer = stack
        .js
        .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
            "dispatch_dc",
            subjects::lane_stream(&lane),
        )
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.delivered.consumer_sequence, 1, "{info:#?}");
}

/// A step is only as runnable as its error handler: an exec step whose
/// handler is a plugin goes on the plugin's lane, so a runner that refuses
/// the plugin does not start the step only to find it cannot handle its
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_error_handler_is_a_plugin_waits_for_a_runner_that_allows_the_handler() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _a = refusing_runner(&stack, dir.path()).await;
    let (addr, hits, _server) = counting_server().await;
    let yaml = format!(
        r#"
- name: handled
  runnerSelector: {{filter: dc}}
  sequence:
    commands:
    - exec: echo failing; exit 1
      errorhandler:
        type: {HTTP}
        nodeStep: false
        configuration:
          remoteUrl: http://{addr}/deploy
          method: POST
"#
    );
    let job = stack.load(&yaml, "handled").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack
        .wait_state(id, "the step waiting for a runner", |s| {
            s.steps[0].status == StepStatus::Waiting
        })
        .await;
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("runner a does not allow `{HTTP}`")),
        "{st:#?}"
    );

    let _b = start_runner(&stack.nats, "b", &["dc"]);
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.steps[0].runner_id.as_deref(), Some("b"), "{st:#?}");
    assert_eq!(*hits.lock().unwrap(), 1, "the handler ran once, on B");
    assert_eq!(claimants(&stack, id, 1).await, ["b"]);
}

#[test]
fn a_runner_refuses_to_start_with_an_allow_list_that_does_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "allowedPlugin:\n  WorkflowStep: []\n",
            "unknown field `allowedPlugin`, expected `allowedPlugins` or `localExecutionPlugins` at line 1",
        ),
        (
            "allowedPlugins:\n  WorkflowNodeStep: [edu.ohio.ais.rundeck.HttpWorkflowStepPlugin]\n",
            "allowedPlugins.WorkflowNodeStep: `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin` is a WorkflowStep plugin; list it under WorkflowStep",
        ),
    ];
    for (n, (text, fault)) in cases.iter().enumerate() {
        let list = dir.path().join(format!("list-{n}.yaml"));
        std::fs::write(&list, text).unwrap();
        // No NATS at that address: the list is read before any connection.
        let out = Command::new(workspace_binary("outpost-runner"))
            .args(["--insecure", "--id", "x", "--tags", "dc"])
            .arg("--allowed-plugins")
            .arg(&list)
            .args(["--nats-url", "ws://127.0.0.1:9", "--work-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "outpost-runner: allowed plugins file {}: {fault}",
                list.display()
            )),
            "{stderr}"
        );
    }
}
