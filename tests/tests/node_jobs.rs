//! Jobs with `nodefilters`, end to end: the orchestrator selects nodes from
//! the inventory, the runner that reported them reaches them over SSH (a real
//! sshd) with keys from its own key store, and state tracks every node step.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_schemas::Event;
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_job_runs_on_the_selected_nodes_through_their_runner() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(key_store.join("web")).unwrap();
    let key = keygen(&key_store.join("web"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "web1:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  tags: web\n  ssh-key-storage-path: keys/web/id\n\
             web2:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  tags: web\n  ssh-key-storage-path: keys/web/id\n\
             web3:\n  hostname: 127.0.0.1:{closed}\n  username: {user}\n  tags: web, broken\n  ssh-key-storage-path: keys/web/id\n",
            p = sshd.port
        ),
    )
    .unwrap();
    let known_hosts = sshd.known_hosts();
    let mut reported = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let _edge = start_runner_with(&stack.nats, "edge", &["dc1"], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
        o.known_hosts = known_hosts.clone();
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();

    let yaml = r#"
- name: fleet
  nodefilters:
    filter: 'tags: web !tags: broken'
    dispatch: {threadcount: 2}
  sequence:
    commands:
    - exec: echo "hello from $RD_NODE_NAME"
    - script: |
        #!/bin/sh
        echo "script on $RD_NODE_NAME with $1"
      args: x
- name: with-broken
  nodefilters:
    filter: 'tags: web'
    dispatch: {keepgoing: true, rankAttribute: nodename, rankOrder: descending}
  sequence:
    commands:
    - exec: echo hi
- name: nothing
  nodefilters:
    filter: 'tags: nosuch'
  sequence:
    commands:
    - exec: echo never
- name: nothing-is-fine
  nodefilters:
    filter: 'tags: nosuch'
    dispatch: {successOnEmptyNodeFilter: true}
  sequence:
    commands:
    - exec: echo never
"#;
    let fleet = stack.load(yaml, "fleet").await;
    let id = stack.run_job(fleet, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.nodes, ["web1", "web2"]);
    assert_eq!(st.successful_nodes, ["web1", "web2"]);
    assert!(st.failed_nodes.is_empty());
    for step in &st.steps {
        assert_eq!(step.status, StepStatus::Succeeded);
        assert_eq!(step.runner_id.as_deref(), Some("edge"));
        for n in ["web1", "web2"] {
            assert_eq!(step.nodes[n].status, StepStatus::Succeeded, "{step:#?}");
        }
    }
    let mut lines: Vec<(String, Option<String>, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.stepctx, e.node, e.log))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            (
                "1".to_string(),
                Some("web1".to_string()),
                "hello from web1".to_string()
            ),
            ("1".into(), Some("web2".into()), "hello from web2".into()),
            (
                "2".into(),
                Some("web1".into()),
                "script on web1 with x".into()
            ),
            (
                "2".into(),
                Some("web2".into()),
                "script on web2 with x".into()
            ),
        ]
    );

    // One unreachable node among reachable ones, keepgoing: the others run.
    let with_broken = stack.load(yaml, "with-broken").await;
    let id = stack.run_job(with_broken, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    assert_eq!(
        st.nodes,
        ["web3", "web2", "web1"],
        "ranked by name, descending"
    );
    assert_eq!(st.failed_nodes, ["web3"]);
    assert_eq!(st.successful_nodes, ["web2", "web1"]);
    let web3 = &st.steps[0].nodes["web3"];
    assert!(
        web3.reason.as_deref().unwrap().starts_with("unreachable: "),
        "{web3:?}"
    );

    // No node: a clear failure, not a run somewhere else (Rundeck #9526).
    let nothing = stack.load(yaml, "nothing").await;
    let id = stack.run_job(nothing, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    assert_eq!(st.steps[0].status, StepStatus::Skipped);
    assert!(
        st.steps[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("matched no node"),
        "{st:#?}"
    );
    assert!(stack.output_lines(id).await.is_empty());

    let fine = stack.load(yaml, "nothing-is-fine").await;
    let id = stack.run_job(fine, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );

    // Where the runner keeps keys, and the keys, are nowhere in NATS.
    let private = std::fs::read_to_string(&key).unwrap();
    let key_body: String = private.lines().nth(1).unwrap().to_string();
    for needle in [
        key_store.to_str().unwrap(),
        "keys/web/id",
        key_body.as_str(),
    ] {
        let found = find_in_all_streams(&stack.js, needle).await;
        assert!(found.is_empty(), "`{needle}` found in {found:?}");
    }
}

/// One SSH node, `box`, on a real sshd of this machine, served by runner
/// `edge`, which has reported it.
struct SshBox {
    _dir: tempfile::TempDir,
    _sshd: Sshd,
    _edge: RunnerGuard,
}

async fn ssh_box(stack: &Stack) -> SshBox {
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(&key_store).unwrap();
    let key = keygen(&key_store, "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "box:\n  hostname: 127.0.0.1:{}\n  username: {user}\n  ssh-key-storage-path: keys/id\n",
            sshd.port
        ),
    )
    .unwrap();
    let known_hosts = sshd.known_hosts();
    let mut reported = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let mut edge = start_runner_with(&stack.nats, "edge", &[], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
        o.known_hosts = known_hosts.clone();
    });
    use futures::StreamExt;
    if tokio::time::timeout(WAIT, reported.next()).await.is_err() {
        panic!(
            "no node report within {WAIT:?}; runner: {:?}",
            edge.exit_reason().await
        );
    }
    SshBox {
        _dir: dir,
        _sshd: sshd,
        _edge: edge,
    }
}

/// Waits until the node (this machine) runs `cmdline`.
async fn started_on_the_node(cmdline: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !process_running(cmdline) {
        assert!(
            std::time::Instant::now() < deadline,
            "`{cmdline}` never started on the node"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_an_ssh_node_step_leaves_nothing_running_on_the_node() {
    let stack = Stack::start().await;
    let _box = ssh_box(&stack).await;
    // A duration unique to this test, to find exactly its process.
    let marker = format!("1000.{}", std::process::id());
    let job = stack
        .load(
            &format!("- name: hang\n  nodefilters:\n    filter: box\n  sequence:\n    commands:\n    - exec: sleep {marker}\n"),
            "hang",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "the node step running", |s| {
            s.steps[0].nodes.get("box").map(|n| n.status) == Some(StepStatus::Running)
        })
        .await;
    started_on_the_node(&format!("sleep {marker}")).await;
    let asked = std::time::Instant::now();
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    let took = asked.elapsed();
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    assert!(
        took < std::time::Duration::from_secs(2),
        "aborted after {took:?}"
    );
    // The node is this machine: nothing of the step may remain there.
    assert!(
        !process_running(&format!("sleep {marker}")),
        "the remote sleep survived the abort"
    );
}

/// Rundeck's job `timeout` stops a node step where it runs: the process on
/// the node is killed, and the execution ends `timedout`, not `aborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_ssh_nodes_process_and_ends_timedout() {
    let stack = Stack::start().await;
    let _box = ssh_box(&stack).await;
    let marker = format!("1001.{}", std::process::id());
    let job = stack
        .load(
            &format!("- name: slow\n  timeout: 2s\n  nodefilters:\n    filter: box\n  sequence:\n    commands:\n    - exec: sleep {marker}\n    - exec: echo never\n"),
            "slow",
        )
        .await;
    let started = std::time::Instant::now();
    let id = stack.run_job(job, &[]).await;
    started_on_the_node(&format!("sleep {marker}")).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::TimedOut, "{st:#?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "stopped before its timeout"
    );
    assert_eq!(
        st.steps[0].nodes.get("box").map(|n| n.status),
        Some(StepStatus::Aborted),
        "{st:#?}"
    );
    assert!(
        !process_running(&format!("sleep {marker}")),
        "the remote sleep survived the timeout"
    );
    let events = stack.events(id).await;
    assert!(
        events.iter().any(|e| matches!(e, Event::AbortRequested(a)
            if a.cause == outpost_schemas::AbortCause::Timeout && a.requested_by == "timeout")),
        "the stop is recorded as a timeout: {events:#?}"
    );
}

/// A node step sees its node as Rundeck gives it: `${node.x}` in commands,
/// `@node.x@` in scripts and `RD_NODE_*`, over SSH, with the script's file
/// extension and a quoted interpreter on the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_steps_see_their_node_in_commands_scripts_and_the_environment() {
    let stack = Stack::start().await;
    let _box = ssh_box(&stack).await;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let job = stack
        .load(
            r#"
- name: context
  nodefilters:
    filter: box
  sequence:
    commands:
    - exec: echo "exec ${node.name} $RD_NODE_NAME $RD_NODE_USERNAME"
    - script: echo "script @node.name@ @node.username@ $1 ${0##*.}"
      args: x
      fileExtension: sh
    - script: echo "$1|$2"
      args: a b
      scriptInterpreter: sh -c
      interpreterArgsQuoted: true
    - type: localexec
      nodeStep: true
      configuration: {command: 'echo "local ${node.name} $RD_NODE_NAME ssh=${SSH_CONNECTION:-none}"'}
"#,
            "context",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(
        stack.log_texts(id).await,
        [
            format!("exec box box {user}"),
            format!("script box {user} x sh"),
            "a|b".to_string(),
            // `localexec` ran on the runner, not over SSH, with the node's
            // context.
            "local box box ssh=none".to_string(),
        ]
    );
}
