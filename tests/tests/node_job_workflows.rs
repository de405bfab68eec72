//! Node jobs' workflows, over the real stack (nats-server, two runners, a
//! real sshd): the workflow runs its node steps in node runs on the runner
//! that reaches the nodes, split around the steps that run once (job
//! references, flow steps); a `nodeStep: true` reference starts one child
//! per node, with the node's `${node.*}`, and a failure stops new ones as
//! Rundeck's node dispatch does; a node step's error handler runs on the
//! node that failed.

use outpost_schemas::state::{ExecutionState, ExecutionStatus, StepStatus};
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::*;

const JOBS: &str = r#"
- name: notify
  group: nref
  options:
  - {name: host, required: true}
  runnerSelector: {filter: east}
  sequence:
    commands:
    - exec: echo "east saw ${option.host}"; test "${option.host}" != web2-refused
- name: on-node
  group: nref
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - exec: echo "child on $RD_NODE_NAME"
- name: rollout
  group: nref
  nodefilters:
    filter: 'tags: web'
    dispatch: {threadcount: 2}
  sequence:
    strategy: sequential
    commands:
    - exec: echo "before on $RD_NODE_NAME"
    - exec: echo "still before on $RD_NODE_NAME"
    - jobref: {group: nref, name: notify, args: -host all}
    - type: export-var
      nodeStep: false
      configuration: {export: stage, value: two}
    - jobref:
        group: nref
        name: notify
        nodeStep: true
        args: -host ${node.name}-${export.stage}
    - jobref:
        group: nref
        name: on-node
        nodeStep: true
        nodefilters: {filter: 'name: ${node.name}'}
    - exec: echo "after ${export.stage} on $RD_NODE_NAME"
- name: only-web1
  group: nref
  nodefilters: {filter: 'name: web1'}
  sequence:
    commands:
    - jobref:
        group: nref
        name: on-node
        nodefilters:
          dispatch: {nodeIntersect: true}
- name: stops-at-a-failure
  group: nref
  nodefilters:
    filter: 'tags: web'
    dispatch: {rankAttribute: nodename, rankOrder: descending}
  sequence:
    strategy: sequential
    commands:
    - jobref:
        group: nref
        name: notify
        nodeStep: true
        args: -host ${node.name}-refused
    - exec: echo never
- name: ref-then-nodes
  group: nref
  nodefilters: {filter: 'tags: web'}
  sequence:
    strategy: sequential
    commands:
    - jobref: {group: nref, name: notify, nodeStep: true, args: '-host ${node.name}'}
    - exec: echo "then on $RD_NODE_NAME"
- name: missing-script
  group: nref
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - scriptfile: /nonexistent/outpost-test/deploy.sh
    - exec: echo never
- name: recovers-per-node
  group: nref
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - exec: test "$RD_NODE_NAME" != web2 || exit 5
      errorhandler:
        exec: echo "recovering ${node.name} from ${result.reason} $RD_RESULT_RESULTCODE"
        keepgoingOnSuccess: true
    - exec: echo "done on $RD_NODE_NAME"
- name: filtered-nodes
  group: nref
  nodefilters: {filter: 'tags: web'}
  sequence:
    pluginConfig:
      LogFilter:
      - type: highlight-output
        config: {regex: 'on (\S+)', mode: bold}
    commands:
    - exec: echo "hello on $RD_NODE_NAME"; echo '#BEGIN:RUNDECK:DATATYPE:json'; echo "{\"n\":\"$RD_NODE_NAME\"}"; echo "{\"m\":1}"
      plugins:
        LogFilter:
        - type: render-datatype
- name: node-data
  group: nref
  nodefilters:
    filter: 'tags: web'
    dispatch: {threadcount: 2}
  sequence:
    strategy: sequential
    commands:
    - exec: echo "RUNDECK:DATA:v = v-$RD_NODE_NAME"
      plugins:
        LogFilter:
        - type: key-value-data
    - exec: echo 'own=${data.v} web1=${data.v@web1}'
    - type: export-var
      nodeStep: false
      configuration: {export: all, value: '${data.v*}'}
    - exec: echo 'all=${export.all} web2=${data.v@web2} own=${data.v} first=${1:data.v}'
"#;

struct Fleet {
    stack: Stack,
    _sshd: Sshd,
    _dir: tempfile::TempDir,
    _edge: RunnerGuard,
    _east: RunnerGuard,
}

/// Two sshd nodes reached through the `edge` runner, and an `east` runner
/// with no nodes for the children that run once.
async fn fleet() -> Fleet {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(key_store.join("web")).unwrap();
    let key = keygen(&key_store.join("web"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "web1:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  tags: web\n  ssh-key-storage-path: keys/web/id\n\
             web2:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  tags: web\n  ssh-key-storage-path: keys/web/id\n",
            p = sshd.port
        ),
    )
    .unwrap();
    let known_hosts = sshd.known_hosts();
    let mut reported = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let edge = start_runner_with(&stack.nats, "edge", &["dc1"], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
        o.known_hosts = known_hosts.clone();
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();
    let east = start_runner(&stack.nats, "east-1", &["east"]);
    Fleet {
        stack,
        _sshd: sshd,
        _dir: dir,
        _edge: edge,
        _east: east,
    }
}

async fn child(stack: &Stack, id: uuid::Uuid) -> ExecutionState {
    stack.wait_terminal(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_job_runs_references_between_its_node_runs_and_one_child_per_node() {
    let f = fleet().await;
    let stack = &f.stack;
    let rollout = stack.load(JOBS, "rollout").await;
    let id = stack.run_job(rollout, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.successful_nodes, ["web1", "web2"], "{st:#?}");
    let statuses: Vec<StepStatus> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Succeeded; 7], "{st:#?}");

    // Steps 1-2 and 7 ran on the nodes through the runner that reaches
    // them; the dispatch of step 1 carried steps 1 and 2.
    for n in [1, 2, 7] {
        let step = &st.steps[n - 1];
        assert_eq!(step.runner_id.as_deref(), Some("edge"), "{step:#?}");
        for node in ["web1", "web2"] {
            assert_eq!(step.nodes[node].status, StepStatus::Succeeded);
        }
    }
    let dispatches: Vec<Vec<u32>> = stack
        .events(id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            outpost_schemas::Event::StepDispatched(d) => d
                .node_run
                .map(|nr| nr.steps.iter().map(|s| s.step).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(dispatches, [vec![1, 2], vec![7]]);

    // Step 3 ran once, on the east runner.
    let once = child(stack, st.steps[2].child_execution_id.expect("a child")).await;
    assert_eq!(once.status, ExecutionStatus::Succeeded);
    assert_eq!(once.parent_execution_id, Some(id));
    assert_eq!(once.steps[0].runner_id.as_deref(), Some("east-1"));
    assert_eq!(stack.log_texts(once.id).await, ["east saw all"]);

    // Step 5: one child per node, each with its node (and what step 4
    // exported) in its options.
    let mut seen = Vec::new();
    for node in ["web1", "web2"] {
        let ns = &st.steps[4].nodes[node];
        assert_eq!(ns.status, StepStatus::Succeeded, "{ns:#?}");
        let c = child(stack, ns.child_execution_id.expect("a child per node")).await;
        assert_eq!(c.parent_execution_id, Some(id));
        assert_eq!(c.parent_step, Some(5));
        assert_eq!(c.options["host"], format!("{node}-two"));
        seen.extend(stack.log_texts(c.id).await);
    }
    assert_eq!(seen, ["east saw web1-two", "east saw web2-two"]);

    // Step 6: each node's child ran its own node job on that node only.
    for node in ["web1", "web2"] {
        let c = child(stack, st.steps[5].nodes[node].child_execution_id.unwrap()).await;
        assert_eq!(c.status, ExecutionStatus::Succeeded);
        assert_eq!(c.nodes, [node]);
        assert_eq!(stack.log_texts(c.id).await, [format!("child on {node}")]);
    }

    // The exported value reached the last node run.
    let mut after: Vec<String> = stack
        .log_texts(id)
        .await
        .into_iter()
        .filter(|l| l.starts_with("after"))
        .collect();
    after.sort();
    assert_eq!(after, ["after two on web1", "after two on web2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_intersect_keeps_the_childs_nodes_that_the_parent_has() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "only-web1").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let c = child(stack, st.steps[0].child_execution_id.unwrap()).await;
    // The child's own filter selects web1 and web2; the parent has web1.
    assert_eq!(c.nodes, ["web1"]);
    assert_eq!(stack.log_texts(c.id).await, ["child on web1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_node_child_stops_new_ones_and_fails_the_step_as_rundeck_does() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "stops-at-a-failure").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let step = &st.steps[0];
    assert_eq!(step.status, StepStatus::Failed);
    // Ranked descending: web2 ran first and failed; without node keepgoing
    // web1's child never started.
    assert_eq!(step.nodes["web2"].status, StepStatus::Failed, "{step:#?}");
    let failed = child(stack, step.nodes["web2"].child_execution_id.unwrap()).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(step.nodes["web1"].status, StepStatus::Skipped, "{step:#?}");
    assert_eq!(step.nodes["web1"].child_execution_id, None);
    assert!(
        step.reason
            .as_deref()
            .unwrap_or_default()
            .contains("failed on web2"),
        "{step:#?}"
    );
    assert_eq!(st.steps[1].status, StepStatus::Skipped);
    assert_eq!(st.failed_nodes, ["web2"]);
}

#[test]
fn the_readmes_node_job_reference_example_reads() {
    let yaml = readme_example("rolling-release");
    let jobs =
        outpost_services::formats::parse_jobs(&yaml, outpost_services::formats::Format::Yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let refs: Vec<bool> = jobs[0]
        .sequence
        .commands
        .iter()
        .filter_map(|c| c.jobref.as_ref().map(|r| r.node_step))
        .collect();
    assert_eq!(refs, [true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_steps_error_handler_recovers_the_node_it_failed_on() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "recovers-per-node").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let step = &st.steps[0];
    assert_eq!(step.status, StepStatus::Succeeded, "{step:#?}");
    let web2 = &step.nodes["web2"];
    assert_eq!(web2.status, StepStatus::Succeeded);
    assert_eq!(web2.exit_code, Some(5));
    assert!(
        web2.reason
            .as_deref()
            .unwrap_or_default()
            .contains("recovered by its error handler"),
        "{web2:#?}"
    );
    assert_eq!(step.nodes["web1"].reason, None);
    assert_eq!(
        step.errorhandler.as_ref().and_then(|h| h.status),
        Some(StepStatus::Succeeded)
    );
    assert_eq!(st.successful_nodes, ["web1", "web2"]);
    // The handler ran over SSH on web2 only, with Rundeck's result context.
    let handled: Vec<(Option<String>, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .filter(|e| e.log.starts_with("recovering"))
        .map(|e| (e.node, e.log))
        .collect();
    assert_eq!(
        handled,
        [(
            Some("web2".to_string()),
            "recovering web2 from NonZeroResultCode 5".to_string()
        )]
    );
}

/// A node run that is not the workflow's first step: its per-node reports
/// are vouched for by its own claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_run_after_a_reference_reports_its_nodes() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "ref-then-nodes").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    for node in ["web1", "web2"] {
        assert_eq!(
            st.steps[1].nodes[node].status,
            StepStatus::Succeeded,
            "{st:#?}"
        );
    }
    assert_eq!(st.steps[1].status, StepStatus::Succeeded);
    assert_eq!(st.successful_nodes, ["web1", "web2"]);
    let refused = stack.audit_trail(0).await;
    assert!(
        refused
            .iter()
            .all(|a| !a.event.action.starts_with("publish node_step")),
        "{refused:#?}"
    );
}

/// A node run that cannot start (its script is not on the runner) ends
/// every one of its steps, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_run_that_cannot_start_ends_its_steps_on_every_node() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "missing-script").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Failed, "{st:#?}");
    assert!(
        st.steps[0].nodes["web1"]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("/nonexistent/outpost-test/deploy.sh"),
        "{st:#?}"
    );
    assert_eq!(st.steps[1].status, StepStatus::Skipped, "{st:#?}");
    assert_eq!(st.failed_nodes, ["web1", "web2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_run_over_each_nodes_output_on_its_own() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "filtered-nodes").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let mut lines: Vec<(String, String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| {
            let data = e.meta.get("content-data-type").cloned().unwrap_or_default();
            (e.node.unwrap_or_default(), e.log, data)
        })
        .collect();
    // The two nodes run side by side; each one's lines stay in order.
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    let want = |n: &str| {
        [
            (
                n.to_string(),
                format!("hello on \u{1b}[1m{n}\u{1b}[0m"),
                String::new(),
            ),
            // A block left open ends with its node step, one for each node.
            (
                n.to_string(),
                format!("{{\"n\":\"{n}\"}}\n{{\"m\":1}}"),
                "application/json".to_string(),
            ),
        ]
    };
    let mut expected = want("web1").to_vec();
    expected.extend(want("web2"));
    assert_eq!(lines, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_nodes_captured_data_is_its_own_and_reaches_later_steps_by_node() {
    let f = fleet().await;
    let stack = &f.stack;
    let job = stack.load(JOBS, "node-data").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let mut lines: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .filter(|e| e.log.starts_with("own=") || e.log.starts_with("all="))
        .map(|e| (e.node.unwrap_or_default(), e.log))
        .collect();
    lines.sort();
    let line = |n: &str, l: &str| (n.to_string(), l.to_string());
    assert_eq!(
        lines,
        [
            // Step 4, a second node run after the workflow step that
            // gathered every node's value: each node still reads its own.
            line(
                "web1",
                "all=v-web1,v-web2 web2=v-web2 own=v-web1 first=v-web1"
            ),
            // Step 2, in the node run of the capture: after every node's
            // step 1, as step-first runs them.
            line("web1", "own=v-web1 web1=v-web1"),
            line(
                "web2",
                "all=v-web1,v-web2 web2=v-web2 own=v-web2 first=v-web2"
            ),
            line("web2", "own=v-web2 web1=v-web1"),
        ]
    );
}
