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
fn node(stack: &Stack) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("store");
    std::fs::create_dir_all(key_store.join("ansible")).unwrap();
    let key = keygen(&key_store.join("ansible"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let runner = start_runner_with(&stack.nats, "dc-ansible", &["ansible"], |o| {
        o.key_store = key_store.clone();
    });
    // The node's Python: Debian's, which sshd's PATH finds.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
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
    };
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

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Any process whose command line names `path`: what a step under that
/// work dir left running (ansible's workers, SSH control masters).
fn processes_under(path: &std::path::Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| {
            let raw = std::fs::read(p.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'));
            (line.contains(&needle) && !zombie).then_some(line)
        })
        .collect()
}

/// The output so far of a running execution (one page, from the start).
async fn output_so_far(stack: &Stack, id: uuid::Uuid) -> Vec<String> {
    let page: outpost_services::contract::OutputPage = stack
        .http
        .get(stack.url(&format!("/execution/{id}/output")))
        .query(&[("offset", "0"), ("maxlines", "20000")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page.entries.into_iter().map(|e| e.log).collect()
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
    let n = node(&stack);
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
            output_so_far(&stack, id)
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
    let n = node(&stack);
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
    let n = node(&stack);
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
        output_so_far(&stack, id)
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
