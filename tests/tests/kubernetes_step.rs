//! Rundeck's `Kubernetes-Execute-Step` on the runner, against the fake
//! Kubernetes API server (`outpost_tests::kube_api`, which kubectl 1.20 and
//! the official Python client are run against in `kube_fake_protocol.rs`):
//! the command runs in the pod over the exec subresource, its output
//! streams with stdout and stderr apart, its exit code is the step's, the
//! token from the runner's key store reaches no stream, a pod node's
//! attributes name the pod, and an abort ends the command in the pod.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::kube_api::{process_alive, runner, FakeKube, TOKEN};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_in_the_pod_and_its_exit_code_is_the_steps() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    fake.add_pod("shop", "web-0", &[], &["app"], Vec::<String>::new());
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let yaml = format!(
        r#"
- name: in-pod
  runnerSelector: {{filter: k8s}}
  sequence:
    commands:
    - nodeStep: true
      type: Kubernetes-Execute-Step
      configuration:
        name: web-0
        namespace: shop
        shell: /bin/sh
        command: 'echo "hello from $0"; echo oops >&2; exit 3'
        url: {url}
        token: keys/k8s/token
"#,
        url = fake.url()
    );
    let job = stack.load(&yaml, "in-pod").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].exit_code, Some(3), "{st:#?}");
    let lines: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.stream, e.log))
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "hello from /bin/sh".into())),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:#?}"
    );
    // In the pod the step named, through the exec subresource.
    let execs = fake.execs();
    assert_eq!(execs.len(), 1, "{execs:#?}");
    assert_eq!(
        (execs[0].namespace.as_str(), execs[0].pod.as_str()),
        ("shop", "web-0")
    );
    assert_eq!(execs[0].command[..2], ["/bin/sh".to_string(), "-c".into()]);
    assert_eq!(execs[0].exit_code, Some(3));
    assert!(
        find_in_all_streams(&stack.js, TOKEN).await.is_empty(),
        "the token reached a stream"
    );
}

/// A pod node, as the plugin's resource model writes it: the step names
/// no pod, and `default:name`, `default:namespace`,
/// `default:container_name` and `kubernetes:config_file` say where.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_nodes_attributes_name_the_pod_and_the_cluster() {
    let stack = Stack::start().await;
    let fake = FakeKube::start().await;
    fake.add_pod("shop", "web-0", &[], &["side", "app"], Vec::<String>::new());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let nodes = format!(
        "web-0-app:\n  hostname: 10.0.0.5\n  tags: pods\n  default:name: web-0\n  default:namespace: shop\n  default:container_name: app\n  kubernetes:config_file: {}\n",
        kubeconfig.display()
    );
    let _runner = runner(&stack, dir.path(), Some(&nodes)).await;
    let yaml = r#"
- name: on-pod-nodes
  runnerSelector: {filter: k8s}
  nodefilters: {filter: 'tags: pods'}
  sequence:
    commands:
    - nodeStep: true
      type: Kubernetes-Execute-Step
      configuration:
        shell: /bin/sh
        command: echo "on ${node.name}"
"#;
    let job = stack.load(yaml, "on-pod-nodes").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(
        st.steps[0].nodes["web-0-app"].status,
        StepStatus::Succeeded,
        "{st:#?}"
    );
    let lines = stack.log_texts(id).await;
    assert!(lines.iter().any(|l| l == "on web-0-app"), "{lines:#?}");
    let execs = fake.execs();
    assert_eq!(execs.len(), 1, "{execs:#?}");
    assert_eq!(
        (
            execs[0].namespace.as_str(),
            execs[0].pod.as_str(),
            execs[0].container.as_str()
        ),
        ("shop", "web-0", "app")
    );
}

/// Rundeck's `Kubernetes-node-executor`: a pod node whose `node-executor`
/// names it runs a node job's exec steps in its container, with
/// `/bin/bash -c`, each node's exit its own; a script step there waits for
/// the plugin's file copier, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_nodes_run_exec_steps_through_the_node_executor() {
    let stack = Stack::start().await;
    let fake = FakeKube::start().await;
    for pod in ["web-0", "web-1"] {
        fake.add_pod("shop", pod, &[], &["app"], Vec::<String>::new());
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let nodes: String = ["web-0", "web-1"]
        .iter()
        .map(|pod| {
            format!(
                "{pod}-app:\n  hostname: 10.0.0.5\n  tags: pods\n  node-executor: Kubernetes-node-executor\n  default:name: {pod}\n  default:namespace: shop\n  default:container_name: app\n  kubernetes:config_file: {}\n",
                kubeconfig.display()
            )
        })
        .collect();
    let _runner = runner(&stack, dir.path(), Some(&nodes)).await;
    let yaml = r#"
- name: on-pods
  runnerSelector: {filter: k8s}
  nodefilters:
    filter: 'tags: pods'
    dispatch: {keepgoing: true}
  sequence:
    commands:
    - exec: echo "exec on ${node.name} with $0"; test ${node.name} = web-0-app
"#;
    let job = stack.load(yaml, "on-pods").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let nodes = &st.steps[0].nodes;
    assert_eq!(nodes["web-0-app"].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(nodes["web-1-app"].exit_code, Some(1), "{st:#?}");
    let lines = stack.output_lines(id).await;
    for node in ["web-0-app", "web-1-app"] {
        assert!(
            lines.iter().any(|l| l.node.as_deref() == Some(node)
                && l.log == format!("exec on {node} with /bin/bash")),
            "{lines:#?}"
        );
    }
    let mut pods: Vec<(String, String)> = fake
        .execs()
        .into_iter()
        .map(|e| (e.pod, e.container))
        .collect();
    pods.sort();
    assert_eq!(
        pods,
        [
            ("web-0".to_string(), "app".to_string()),
            ("web-1".to_string(), "app".to_string())
        ]
    );

    let script = stack
        .load(
            "- name: script-on-pods\n  runnerSelector: {filter: k8s}\n  nodefilters: {filter: 'name: web-0-app'}\n  sequence:\n    commands:\n    - script: echo hi\n",
            "script-on-pods",
        )
        .await;
    let id = stack.run_job(script, &[]).await;
    let st = stack.wait_terminal(id).await;
    let reason = st.steps[0].nodes["web-0-app"]
        .reason
        .clone()
        .unwrap_or_default();
    assert!(
        reason.contains("not supported yet: a script step on a pod node"),
        "{reason}"
    );
}

/// Pods as the runner's nodes (`--kubernetes-pods`, the keys of the
/// plugin's resource model): one node per container of the pods the label
/// selector picks, with the attributes the pod steps read, tagged `pods`
/// and by status, each running its exec steps through the node executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_picked_by_a_label_selector_are_the_runners_nodes() {
    let stack = Stack::start().await;
    let fake = FakeKube::start().await;
    fake.add_pod(
        "shop",
        "web-0",
        &[("app", "web")],
        &["app", "side"],
        Vec::<String>::new(),
    );
    fake.add_pod(
        "shop",
        "db-0",
        &[("app", "db")],
        &["db"],
        Vec::<String>::new(),
    );
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pods.yaml");
    std::fs::write(
        &source,
        format!(
            "config_file: {}\nnamespace_filter: shop\nlabel_selector: app=web\nattributes: team=ops\n",
            fake.kubeconfig(dir.path()).display()
        ),
    )
    .unwrap();
    let mut reports = stack.client.subscribe("outpost.nodes.pods").await.unwrap();
    let _runner = start_runner_with(&stack.nats, "pods", &["pods"], |o| {
        o.kubernetes_pods = Some(source.clone());
    });
    use futures::StreamExt;
    let report = tokio::time::timeout(WAIT, reports.next())
        .await
        .unwrap()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.payload).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("web-0-app") && text.contains("web-0-side"),
        "{text}"
    );
    assert!(!text.contains("db-0"), "{text}");

    let yaml = r#"
- name: on-selected-pods
  runnerSelector: {filter: pods}
  nodefilters: {filter: 'tags: running team: ops'}
  sequence:
    commands:
    - exec: echo "in ${node.name}"
"#;
    let job = stack.load(yaml, "on-selected-pods").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let mut ran: Vec<String> = st.steps[0].nodes.keys().cloned().collect();
    ran.sort();
    assert_eq!(ran, ["web-0-app", "web-0-side"]);
    let lines = stack.log_texts(id).await;
    for node in ["web-0-app", "web-0-side"] {
        assert!(
            lines.iter().any(|l| l == &format!("in {node}")),
            "{lines:#?}"
        );
    }
    // Each in its own container.
    let mut containers: Vec<String> = fake.execs().into_iter().map(|e| e.container).collect();
    containers.sort();
    assert_eq!(containers, ["app", "side"]);
}

/// An abort ends the command in the pod. The fake, as a kubelet, leaves a
/// command whose client went away running; the runner ends it with a
/// second exec, by the pid the command reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_ends_the_command_in_the_pod() {
    let stack = Stack::start().await;
    let fake = FakeKube::start().await;
    fake.add_pod("default", "worker", &[], &["main"], Vec::<String>::new());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let _runner = runner(&stack, dir.path(), None).await;
    let yaml = format!(
        r#"
- name: long
  runnerSelector: {{filter: k8s}}
  sequence:
    commands:
    - nodeStep: true
      type: Kubernetes-Execute-Step
      configuration:
        name: worker
        shell: /bin/sh
        command: echo started; exec sleep 1000
        config_file: {}
"#,
        kubeconfig.display()
    );
    let job = stack.load(&yaml, "long").await;
    let id = stack.run_job(job, &[]).await;
    wait_for_async("the command's first line", || async {
        stack.output_so_far(id).await.iter().any(|l| l == "started")
    })
    .await;
    let pid = fake.execs()[0].pid.expect("the exec's process started");
    assert!(process_alive(pid));
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    wait_for_async("the command in the pod to end", || async {
        fake.execs()[0].exit_code.is_some() && !process_alive(pid)
    })
    .await;
    let execs = fake.execs();
    assert_eq!(execs[0].exit_code, Some(143), "ended by TERM: {execs:#?}");
    assert!(execs[0].client_closed, "{execs:#?}");
    assert_eq!(execs.len(), 2, "the command, then the kill: {execs:#?}");
}
