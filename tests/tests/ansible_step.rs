//! Rundeck's Ansible workflow steps (`com.batix.rundeck.plugins.*`), run by
//! the runner with the real `ansible-playbook` and `ansible` (ansible-core
//! from PyPI, installed by `just test`) against a real sshd on loopback,
//! with the SSH key from the runner's key store: the playbook's output
//! streams while it runs, its extra vars reach the node, a module's exit
//! decides its step, and an abort leaves no Ansible or SSH process on the
//! runner host.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::*;

struct Node {
    sshd: Sshd,
    runner: RunnerGuard,
    /// An inventory line for the sshd, as `ansible-inventory-inline`.
    inventory: String,
    _dir: tempfile::TempDir,
}

/// An sshd, and a runner tagged `ansible` whose key store holds the key
/// it accepts (`keys/ansible/id`).
async fn node(stack: &Stack) -> Node {
    node_with(stack, |_, _| None).await
}

/// Where a runner's nodes come from.
enum Source {
    /// A `resources.yaml` (`--nodes-file`).
    Resources(String),
    /// An Ansible YAML inventory (`--ansible-inventory`).
    Inventory(String),
}

/// As [`node`], the runner reading its nodes from what `nodes` writes,
/// given the sshd's port and the node's Python; with nodes, once it has
/// reported them (a job run before would match none).
async fn node_with(stack: &Stack, nodes: impl Fn(u16, &str) -> Option<Source>) -> Node {
    node_with_list(stack, nodes, None).await
}

/// As [`node_with`], the runner with the allow-list `allowed` (its YAML).
async fn node_with_list(
    stack: &Stack,
    nodes: impl Fn(u16, &str) -> Option<Source>,
    allowed: Option<&str>,
) -> Node {
    let allowed = allowed.map(|text| {
        outpost_runner::plugins::AllowList::parse(
            text,
            &outpost_runner::plugins::Usable::services(),
        )
        .unwrap()
        .0
    });
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("store");
    std::fs::create_dir_all(key_store.join("ansible")).unwrap();
    let key = keygen(&key_store.join("ansible"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let python = python();
    let source = nodes(sshd.port, &python);
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let (nodes_file, inventory_file) = match &source {
        Some(Source::Resources(yaml)) => (Some(write("resources.yaml", yaml)), None),
        Some(Source::Inventory(yaml)) => (None, Some(write("inventory.yml", yaml))),
        None => (None, None),
    };
    let mut reports = stack
        .client
        .subscribe("outpost.nodes.dc-ansible")
        .await
        .unwrap();
    let runner = start_runner_with(&stack.nats, "dc-ansible", &["ansible"], |o| {
        o.key_store = key_store.clone();
        o.nodes_file = nodes_file.clone();
        o.ansible_inventory = inventory_file.clone();
        o.allowed_plugins = allowed.clone();
    });
    if source.is_some() {
        use futures::StreamExt;
        tokio::time::timeout(WAIT, reports.next()).await.unwrap();
    }
    let inventory = format!(
        "node1 ansible_host=127.0.0.1 ansible_port={port} ansible_python_interpreter={python} ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
        port = sshd.port
    );
    Node {
        sshd,
        runner,
        inventory,
        _dir: dir,
    }
}

/// The node's Python: Debian's, which sshd's PATH finds.
fn python() -> String {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3".to_string()
    } else {
        String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v python3"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    }
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// YAML for a block scalar, indented under a key.
fn block(text: &str, indent: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_playbook_streams_while_it_runs_and_its_extra_vars_reach_the_node() {
    let stack = Stack::start().await;
    let n = node(&stack).await;
    let out = tempfile::tempdir().unwrap();
    let released = out.path().join("released");
    let gate = out.path().join("gate");
    let playbook = "- hosts: all\n  gather_facts: false\n  tasks:\n  - name: write the release\n    copy: {dest: '{{ out }}', content: '{{ version }}'}\n  - name: wait for the gate\n    wait_for: {path: '{{ gate }}', timeout: 120}\n";
    let yaml = format!(
        "- name: release\n  runnerSelector: {{filter: ansible}}\n  options:\n  - {{name: version, value: '1.2'}}\n  sequence:\n    commands:\n    - type: com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowStep\n      nodeStep: false\n      configuration:\n        ansible-playbook-inline: |\n{book}        ansible-inventory-inline: |\n{inv}        ansible-extra-vars: |\n          version: '${{option.version}}'\n          out: {out}\n          gate: {gate}\n        ansible-ssh-user: {user}\n        ansible-ssh-key-storage-path: keys/ansible/id\n        ansible-limit: node1\n        ansible-encrypt-extra-vars: 'false'\n",
        book = block(playbook, 10),
        inv = block(&n.inventory, 10),
        out = released.display(),
        gate = gate.display(),
        user = user(),
    );
    let job = stack.load(&yaml, "release").await;
    let id = stack.run_job(job, &[("version", "2.0")]).await;
    // The first task's result is out while the playbook waits at the gate.
    wait_for_async(
        "the first task's result while the playbook runs",
        || async {
            stack
                .output_so_far(id)
                .await
                .iter()
                .any(|l| l.starts_with("changed: [node1]"))
        },
    )
    .await;
    let st = stack
        .wait_state(id, "the step's state", |s| !s.steps.is_empty())
        .await;
    assert_eq!(st.steps[0].status, StepStatus::Running, "{st:#?}");
    assert_eq!(std::fs::read_to_string(&released).unwrap(), "2.0");
    std::fs::write(&gate, "").unwrap();

    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("node1") && l.contains("ok=2") && l.contains("failed=0")),
        "{lines:#?}"
    );
    // The key went to ssh in a scratch file, which went with the step.
    assert!(
        std::fs::read_dir(n.runner.work_dir.path())
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("ansible-")),
        "the scratch directory is gone"
    );
    let private = std::fs::read_to_string(n._dir.path().join("store/ansible/id")).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    assert!(
        find_in_all_streams(&stack.js, secret_line).await.is_empty(),
        "the private key reached a stream"
    );
    drop(n.sshd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modules_exit_decides_its_step() {
    let stack = Stack::start().await;
    let n = node(&stack).await;
    let yaml = format!(
        "- name: check\n  runnerSelector: {{filter: ansible}}\n  sequence:\n    commands:\n    - type: com.batix.rundeck.plugins.AnsibleModuleWorkflowStep\n      nodeStep: false\n      configuration:\n        ansible-module: shell\n        ansible-module-args: echo module-ran-on-$(hostname -s) && exit 3\n        ansible-inventory-inline: |\n{inv}        ansible-ssh-user: {user}\n        ansible-ssh-key-storage-path: keys/ansible/id\n",
        inv = block(&n.inventory, 10),
        user = user(),
    );
    let job = stack.load(&yaml, "check").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].exit_code, Some(2), "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert!(
        lines.iter().any(|l| l.contains("module-ran-on-")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("node1 | FAILED") && l.contains("rc=3")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_leaves_no_ansible_or_ssh_process_on_the_runner_host() {
    let stack = Stack::start().await;
    let n = node(&stack).await;
    let playbook =
        "- hosts: all\n  gather_facts: false\n  tasks:\n  - name: hold\n    command: sleep 3171\n";
    let yaml = format!(
        "- name: hold\n  runnerSelector: {{filter: ansible}}\n  sequence:\n    commands:\n    - type: com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowStep\n      nodeStep: false\n      configuration:\n        ansible-playbook-inline: |\n{book}        ansible-inventory-inline: |\n{inv}        ansible-ssh-user: {user}\n        ansible-ssh-key-storage-path: keys/ansible/id\n",
        book = block(playbook, 10),
        inv = block(&n.inventory, 10),
        user = user(),
    );
    let job = stack.load(&yaml, "hold").await;
    let id = stack.run_job(job, &[]).await;
    wait_for_async("the task holding on the node", || async {
        stack
            .output_so_far(id)
            .await
            .iter()
            .any(|l| l.contains("TASK [hold]"))
    })
    .await;
    let work = n.runner.work_dir.path().to_path_buf();
    // The SSH master (its control socket is in the step's scratch
    // directory) is up, as is ansible-playbook.
    wait_for("an SSH control master for the step", || {
        processes_under(&work).iter().any(|p| p.contains("[mux]"))
    })
    .await;
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    // Ended by the time the step reports: the kill and the masters'
    // closing come before its end.
    assert_eq!(processes_under(&work), Vec::<String>::new());
}

/// Ansible's node steps in a node job, as Rundeck's plugin runs them: once
/// per node, `ansible-playbook -l <nodename>`, here over an inventory the
/// runner writes from its own nodes (their attributes as host vars), so
/// each node's result is its own: one node's failed task fails that node
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_steps_run_per_node_over_an_inventory_of_the_runners_nodes() {
    let stack = Stack::start().await;
    let n = node_with(&stack, |port, python| {
        let node = |name: &str, extra: &str| {
            format!(
                "{name}:\n  hostname: 127.0.0.1:{port}\n  username: {user}\n  tags: web\n  tier: {name}-tier\n  ansible_python_interpreter: {python}\n  ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n{extra}",
                user = user()
            )
        };
        Some(Source::Resources(
            node("web1", "") + &node("web2", "  fail_here: 'yes'\n"),
        ))
    }).await;
    let playbook = "- hosts: all\n  gather_facts: false\n  tasks:\n  - name: say where\n    debug: {msg: 'on {{ inventory_hostname }} of {{ tier }} as {{ username }}'}\n  - name: fail where told\n    fail: {msg: told to}\n    when: fail_here is defined\n";
    let yaml = format!(
        "- name: per-node\n  runnerSelector: {{filter: ansible}}\n  nodefilters:\n    filter: 'tags: web'\n    dispatch: {{threadcount: 2, keepgoing: true}}\n  sequence:\n    commands:\n    - type: com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowNodeStep\n      nodeStep: true\n      configuration:\n        ansible-playbook-inline: |\n{book}        ansible-ssh-user: {user}\n        ansible-ssh-key-storage-path: keys/ansible/id\n",
        book = block(playbook, 10),
        user = user(),
    );
    let job = stack.load(&yaml, "per-node").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let nodes = &st.steps[0].nodes;
    assert_eq!(nodes["web1"].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(nodes["web2"].status, StepStatus::Failed, "{st:#?}");
    // ansible-playbook's exit when a host failed.
    assert_eq!(nodes["web2"].exit_code, Some(2), "{st:#?}");
    // Each node's run touched that node alone, with its attributes.
    let lines = stack.output_lines(id).await;
    for (name, failed) in [("web1", "failed=0"), ("web2", "failed=1")] {
        let own: Vec<&str> = lines
            .iter()
            .filter(|l| l.node.as_deref() == Some(name))
            .map(|l| l.log.as_str())
            .collect();
        let other = if name == "web1" { "web2" } else { "web1" };
        assert!(
            own.iter()
                .any(|l| l.contains(&format!("on {name} of {name}-tier as {}", user()))),
            "{own:#?}"
        );
        assert!(
            own.iter()
                .any(|l| l.starts_with(name) && l.contains(failed) && l.contains("ok=")),
            "{own:#?}"
        );
        assert!(!own.iter().any(|l| l.contains(other)), "{own:#?}");
    }
    drop(n.sshd);
}

/// Rundeck's Ansible node executor: nodes whose `node-executor` is
/// `com.batix.rundeck.plugins.AnsibleNodeExecutor` run a job's exec and
/// script steps through `ansible -m shell -l <node>`, configured from
/// their own `ansible-*` attributes (the key from the runner's key store,
/// the shell from `ansible-executable`), each node's exit its own, the
/// command's output as its own lines (so a log filter's `^…$` holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ansible_node_executor_runs_exec_and_script_steps_on_each_node() {
    let stack = Stack::start().await;
    let n = node_with(&stack, |port, python| {
        let node = |name: &str| {
            format!(
                "{name}:\n  hostname: 127.0.0.1:{port}\n  tags: web\n  node-executor: com.batix.rundeck.plugins.AnsibleNodeExecutor\n  ansible-ssh-user: {user}\n  ansible-ssh-key-storage-path: keys/ansible/id\n  ansible-executable: /bin/bash\n  ansible_python_interpreter: {python}\n  ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n",
                user = user()
            )
        };
        Some(Source::Resources(node("web1") + &node("web2")))
    }).await;
    let yaml = r#"
- name: through-ansible
  runnerSelector: {filter: ansible}
  nodefilters:
    filter: 'tags: web'
    dispatch: {threadcount: 2, keepgoing: true}
  sequence:
    keepgoing: true
    commands:
    - exec: echo "exec on $RD_NODE_NAME in ${BASH_VERSION:+bash}"; test "$RD_NODE_NAME" != web2
    - script: |
        #!/bin/sh
        echo "script on @node.name@ got $1 and $2"
        echo "{{ not templated }}" >&2
      args: first 'second arg'

"#;
    let job = stack.load(yaml, "through-ansible").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let (exec, script) = (&st.steps[0].nodes, &st.steps[1].nodes);
    assert_eq!(exec["web1"].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(exec["web2"].status, StepStatus::Failed, "{st:#?}");
    assert_eq!(script["web1"].status, StepStatus::Succeeded, "{st:#?}");
    assert_eq!(script["web2"].status, StepStatus::Succeeded, "{st:#?}");
    let lines = stack.output_lines(id).await;
    for name in ["web1", "web2"] {
        let own: Vec<&str> = lines
            .iter()
            .filter(|l| l.node.as_deref() == Some(name))
            .map(|l| l.log.as_str())
            .collect();
        for line in [
            format!("exec on {name} in bash"),
            format!("script on {name} got first and second arg"),
            "{{ not templated }}".into(),
        ] {
            assert!(own.contains(&line.as_str()), "{line:?} in {own:#?}");
        }
        // Limited to the node: Ansible's lines name it alone.
        let other = if name == "web1" { "web2" } else { "web1" };
        assert!(!own.iter().any(|l| l.contains(other)), "{own:#?}");
    }
    // The runner's API shows the node executor among what it runs.
    let runners: Vec<outpost_services::contract::RunnerReplica> = stack.get_json("/runners").await;
    assert!(
        runners.iter().any(|r| r
            .plugins
            .iter()
            .any(|p| p.plugin_type == "com.batix.rundeck.plugins.AnsibleNodeExecutor")),
        "{runners:#?}"
    );
    drop(n.sshd);
}

/// A runner whose allow-list leaves the node executor out never claims a
/// node run with such a node; the step waits and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_does_not_allow_the_node_executor_never_claims_its_nodes() {
    let stack = Stack::start().await;
    let n = node_with_list(
        &stack,
        |port, python| {
            Some(Source::Resources(format!(
                "web1:\n  hostname: 127.0.0.1:{port}\n  tags: web\n  node-executor: com.batix.rundeck.plugins.AnsibleNodeExecutor\n  ansible_python_interpreter: {python}\n"
            )))
        },
        Some("allowedPlugins:\n  WorkflowStep: [com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep]\n"),
    )
    .await;
    let yaml = r#"
- name: refused-executor
  runnerSelector: {filter: ansible}
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - exec: echo never
"#;
    let job = stack.load(yaml, "refused-executor").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack
        .wait_state(id, "the node step waiting for a runner", |s| {
            s.steps[0].status == StepStatus::Waiting && s.steps[0].reason.is_some()
        })
        .await;
    let reason = st.steps[0].reason.clone().unwrap();
    assert!(
        reason.contains(
            "runner dc-ansible does not allow `com.batix.rundeck.plugins.AnsibleNodeExecutor`"
        ),
        "{st:#?}"
    );
    let claimed = stack
        .events(id)
        .await
        .into_iter()
        .any(|e| matches!(e, outpost_schemas::Event::StepClaimed(_)));
    assert!(!claimed, "{st:#?}");
    drop(n.sshd);
}

/// An Ansible inventory as the runner's node source (`--ansible-inventory`,
/// read with the real `ansible-inventory --list`): its hosts are nodes
/// tagged with their groups, nested ones too, their vars attributes, so
/// an inventory that names the Ansible node executor runs a node job's
/// step through it; its storage path never leaves the runner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ansible_inventory_is_a_node_source() {
    let stack = Stack::start().await;
    let n = node_with(&stack, |port, python| {
        Some(Source::Inventory(format!(
            "prod:\n  children:\n    web:\n      hosts:\n        inv1:\n          ansible_host: 127.0.0.1\n          ansible_port: {port}\n          ansible_python_interpreter: {python}\n          ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null\n          node-executor: com.batix.rundeck.plugins.AnsibleNodeExecutor\n          ansible-ssh-user: {user}\n          ansible-ssh-key-storage-path: keys/ansible/id\n  vars:\n    ansible_become_password: inventory-s3cret-pw\n",
            user = user()
        )))
    })
    .await;
    let (code, listed, stderr) = stack.cli(&["nodes", "--filter", "tags: prod+web"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(listed.starts_with("inv1 "), "{listed}");

    let yaml = r#"
- name: from-inventory
  runnerSelector: {filter: ansible}
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - exec: echo "from $RD_NODE_NAME in $RD_NODE_TAGS"
"#;
    let job = stack.load(yaml, "from-inventory").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert!(
        lines.iter().any(|l| l.contains("from inv1 in prod,web")),
        "{lines:#?}"
    );
    // Neither a storage path nor a password from the inventory's group
    // vars (which `ansible-inventory --list` folds into each host's) left
    // the runner.
    for secret in ["keys/ansible/id", "inventory-s3cret-pw"] {
        assert!(
            find_in_all_streams(&stack.js, secret).await.is_empty(),
            "{secret} reached a stream"
        );
    }
    drop(n.sshd);
}
