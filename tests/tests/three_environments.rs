//! The Enterprise Runner's example workflow, end to end: one parent job on
//! the local runner whose job references reach three private
//! environments, each through its own runner.
//!
//! 1. a Kubernetes Job (`Kubernetes-Create-Job`, `-Wait-Job`,
//!    `-Delete-Job`) through the `k8s` runner, against the fake API server;
//! 2. steps on the local runner;
//! 3. an Ansible playbook against two sshd nodes of the `dc2` runner, in a
//!    network namespace only that runner's namespace reaches, so the
//!    control plane provably cannot reach them;
//! 4. a local step;
//! 5. a PowerShell command over WinRM (NTLM, sealed) on a Windows node of
//!    the `win` runner, against the WinRM test server.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::kube_api::{FakeKube, TOKEN};
use outpost_tests::netns::ZeroTrustNet;
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::winrm_server::{Options, WinrmServer};
use outpost_tests::*;

const JOBS: &str = r#"
- name: cluster-report
  group: envs
  runnerSelector: {filter: k8s}
  sequence:
    commands:
    - nodeStep: true
      type: Kubernetes-Create-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        container_name: main
        container_image: busybox:1.36
        backoff_limit: '0'
        container_command: sh -c
        container_args: echo report from the cluster
        AUTH
    - nodeStep: true
      type: Kubernetes-Wait-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        retries: '600'
        sleep: '0.1'
        show_log: 'true'
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        AUTH
- name: datacentre-playbook
  group: envs
  runnerSelector: {filter: dc2}
  nodefilters:
    filter: 'tags: dc2'
    dispatch: {threadcount: 2}
  sequence:
    commands:
    - type: com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowNodeStep
      nodeStep: true
      configuration:
        ansible-playbook-inline: |
          - hosts: all
            gather_facts: false
            tasks:
            - name: where
              command: ip -o -4 addr show
              register: where
            - debug: {msg: "{{ inventory_hostname }} has {{ where.stdout }}"}
        ansible-ssh-user: USER
        ansible-ssh-key-storage-path: keys/ansible/id
- name: windows-check
  group: envs
  runnerSelector: {filter: win}
  nodefilters:
    filter: 'tags: win'
  sequence:
    commands:
    - exec: Write-Output "PowerShell on ${node.name}"
- name: release
  group: envs
  runnerSelector: {filter: local}
  sequence:
    commands:
    - jobref: {group: envs, name: cluster-report}
    - exec: echo local step after the cluster
    - jobref: {group: envs, name: datacentre-playbook}
    - exec: echo local step after the datacentre
    - jobref: {group: envs, name: windows-check}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_spans_kubernetes_an_ansible_datacentre_and_windows() {
    let net = ZeroTrustNet::create();
    let dir = tempfile::tempdir().unwrap();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());

    // The Ansible data centre: sshd in the node namespace.
    let key_store = dir.path().join("dc2-store");
    std::fs::create_dir_all(key_store.join("ansible")).unwrap();
    let key = keygen(&key_store.join("ansible"), "id", "ed25519");
    let sshd = Sshd::start_in_netns(&[&key], &net.node_ns, &net.node_ip);
    let node_addr: std::net::SocketAddr = format!("{}:{}", net.node_ip, sshd.port).parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&node_addr, Duration::from_secs(1)).is_err(),
        "the control plane's namespace reached the data centre's node"
    );

    let nats = NatsServer::start_with_ws_host(&net.hub_ip);
    let stack = Stack::start_on(nats, ServiceRoles::ALL).await;

    // Its runner, in the runner namespace: the one way to the nodes.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let nodes: String = ["db1", "db2"]
        .iter()
        .map(|n| {
            format!(
                "{n}:\n  hostname: {}:{}\n  username: {user}\n  tags: dc2\n  ansible_python_interpreter: {python}\n  ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n",
                net.node_ip, sshd.port
            )
        })
        .collect();
    let nodes_file = dir.path().join("dc2-nodes.yaml");
    std::fs::write(&nodes_file, nodes).unwrap();
    let mut reported = stack.client.subscribe("outpost.nodes.dc2").await.unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let _dc2 = runner_process(
        &stack,
        "dc2",
        Some(&net.runner_ns),
        Some(&nodes_file),
        &key_store,
        dir.path(),
    );
    tokio::time::timeout(WAIT, reported.next())
        .await
        .expect("the data centre's runner reached the hub from its namespace");

    // The Kubernetes environment and the Windows one, each with its runner.
    let kube = FakeKube::start_with_token(TOKEN).await;
    let kube_store = dir.path().join("k8s-store");
    std::fs::create_dir_all(kube_store.join("k8s")).unwrap();
    std::fs::write(kube_store.join("k8s/token"), format!("{TOKEN}\n")).unwrap();
    let _k8s = runner_process(&stack, "k8s", None, None, &kube_store, dir.path());
    let winrm = WinrmServer::start(Options::default()).await;
    let win_store = dir.path().join("win-store");
    std::fs::create_dir_all(win_store.join("win")).unwrap();
    std::fs::write(win_store.join("win/password"), &winrm.options().password).unwrap();
    let win_nodes = dir.path().join("win-nodes.yaml");
    std::fs::write(
        &win_nodes,
        format!(
            "win1:\n  hostname: 127.0.0.1\n  winrm-port: '{}'\n  winrm-authtype: ntlm\n  node-executor: WinRMPython\n  osFamily: windows\n  username: {}\n  winrm-password-storage-path: keys/win/password\n  tags: win\n",
            winrm.http.port(),
            winrm.options().user
        ),
    )
    .unwrap();
    let mut reported = stack.client.subscribe("outpost.nodes.win").await.unwrap();
    let _win = runner_process(
        &stack,
        "win",
        None,
        Some(&win_nodes),
        &win_store,
        dir.path(),
    );
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();
    let _local = start_runner(&stack.nats, "local", &["local"]);

    let auth = format!("url: {}\n        token: keys/k8s/token", kube.url());
    let jobs = JOBS.replace("AUTH", &auth).replace("USER", &user);
    let release = stack.load(&jobs, "release").await;
    let id = stack.run_job(release, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");

    // One execution shows every child, each run by its environment's runner.
    let exec = stack.execution(id).await;
    let statuses: Vec<StepStatus> = exec.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Succeeded; 5], "{exec:#?}");
    let child = |step: usize| exec.steps[step].child_execution_id.expect("a child");
    let (cluster, datacentre, windows) = (child(0), child(2), child(4));
    for (step, runner) in [(1, "local"), (3, "local")] {
        assert_eq!(
            exec.steps[step].runner_id.as_deref(),
            Some(runner),
            "{exec:#?}"
        );
    }
    let (code, shown, err) = stack.cli(&["exec", "show", &id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    for c in [cluster, datacentre, windows] {
        assert!(shown.contains(&format!("child execution {c}")), "{shown}");
        let child = stack.execution(c).await;
        assert_eq!(child.status, ExecutionStatus::Succeeded, "{child:#?}");
        assert_eq!(child.parent_execution_id, Some(id));
    }
    let parent_lines = stack.log_texts(id).await;
    for l in [
        "local step after the cluster",
        "local step after the datacentre",
    ] {
        assert!(parent_lines.iter().any(|x| x == l), "{parent_lines:#?}");
    }

    // 1. The Job's log, through the k8s runner; the Job is gone after.
    let cluster = stack.execution(cluster).await;
    assert_eq!(cluster.steps[0].runner_id.as_deref(), Some("k8s"));
    let lines = stack.log_texts(cluster.id).await;
    assert!(
        lines.iter().any(|l| l == "report from the cluster"),
        "{lines:#?}"
    );
    assert!(kube.jobs().is_empty(), "{:?}", kube.jobs());

    // 3. Ansible ran on each node, in the node's namespace, through dc2.
    let dc = stack.execution(datacentre).await;
    assert_eq!(dc.steps[0].runner_id.as_deref(), Some("dc2"));
    let lines = stack.output_lines(dc.id).await;
    for node in ["db1", "db2"] {
        assert_eq!(
            dc.steps[0].nodes[node].status,
            StepStatus::Succeeded,
            "{dc:#?}"
        );
        assert!(
            lines.iter().any(|l| l.node.as_deref() == Some(node)
                && l.log.contains(&format!("{node} has"))
                && l.log.contains(&format!("{}/30", net.node_ip))),
            "{lines:#?}"
        );
    }

    // 5. PowerShell over WinRM, through the win runner.
    let win = stack.execution(windows).await;
    assert_eq!(win.steps[0].runner_id.as_deref(), Some("win"));
    let lines = stack.log_texts(win.id).await;
    assert_eq!(lines, ["PowerShell on win1"], "{lines:#?}");
    let seen = winrm.recorded();
    assert!(seen.iter().all(|r| r.auth == "ntlm-sealed"), "{seen:#?}");
    assert!(winrm.open_shells().is_empty());

    // The plugins' credentials stay in their runners' key stores: in no
    // stream message or KV value, no file of NATS's data dir (store,
    // log), no runner's log (at debug) and no file of its work dir.
    let work_dirs = [
        logs,
        dir.path().join("dc2-work"),
        dir.path().join("k8s-work"),
        dir.path().join("win-work"),
        _local.work_dir.path().to_path_buf(),
    ];
    let log = std::fs::read_to_string(dir.path().join("logs/win.log")).unwrap();
    assert!(log.contains("DEBUG"), "the runner logged at debug: {log}");
    for secret in [TOKEN, winrm.options().password.as_str()] {
        assert!(
            find_in_all_streams(&stack.js, secret).await.is_empty(),
            "a credential reached a stream"
        );
        assert!(files_containing(stack.nats.data_dir(), secret).is_empty());
        for d in &work_dirs {
            assert!(files_containing(d, secret).is_empty(), "{}", d.display());
        }
    }
}

/// A runner tagged `id`, as its own process (in `netns`, if given), with
/// its work dir at `dir/<id>-work` and its log, at debug, in
/// `dir/logs/<id>.log`.
fn runner_process(
    stack: &Stack,
    id: &str,
    netns: Option<&str>,
    nodes: Option<&std::path::Path>,
    key_store: &std::path::Path,
    dir: &std::path::Path,
) -> Reaped {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .arg(workspace_binary("outpost-runner"));
            c
        }
        None => Command::new(workspace_binary("outpost-runner")),
    };
    cmd.args(["--insecure", "--id", id, "--tags", id, "--nats-url"])
        .arg(&stack.nats.ws_url)
        .arg("--key-store")
        .arg(key_store)
        .arg("--work-dir")
        .arg(dir.join(format!("{id}-work")));
    if let Some(nodes) = nodes {
        cmd.arg("--nodes-file").arg(nodes);
    }
    let log = std::fs::File::create(dir.join(format!("logs/{id}.log"))).unwrap();
    let child = cmd
        .env("OUTPOST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Reaped(child)
}
