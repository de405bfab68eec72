//! `just bench`: one Ansible playbook on 25 nodes, through Outpost (Rundeck's
//! `AnsiblePlaybookWorkflowStep`, run by a runner with the real
//! `ansible-playbook`) and with `ansible-playbook` run directly, against the
//! same inventory and `ansible.cfg`, in the same run. The nodes are 25
//! inventory entries pointing at five loopback sshd. What Outpost adds is
//! the run request, dispatch, the runner starting the process and its
//! output streamed back; Ansible's own work is the same.

use std::process::Command;
use std::time::{Duration, Instant};

use outpost_schemas::state::ExecutionStatus;
use outpost_tests::bench::SshFleet;
use outpost_tests::*;

const NODES: usize = 25;
const FORKS: usize = 25;
const SERVERS: usize = 5;
const ROUNDS: usize = 3;
const LIMIT: Duration = Duration::from_secs(900);

const PLAYBOOK: &str = "- hosts: all
  gather_facts: false
  tasks:
  - name: who
    command: uname -n
  - name: a file
    copy:
      content: \"{{ inventory_hostname }}\\n\"
      dest: \"/tmp/outpost-bench-{{ inventory_hostname }}\"
  - name: tidy
    file:
      path: \"/tmp/outpost-bench-{{ inventory_hostname }}\"
      state: absent
";

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    assert!(
        Command::new("ansible-playbook")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "ansible-playbook is not installed: run `just test-deps`"
    );
    let dir = tempfile::tempdir().unwrap();
    let fleet = SshFleet::start(dir.path(), SERVERS);
    let (key, known_hosts, user) = (
        fleet.key.clone(),
        fleet.known_hosts.clone(),
        fleet.user.clone(),
    );
    let inventory = dir.path().join("inventory.ini");
    let hosts: String = (0..NODES)
        .map(|i| {
            format!(
                "node{i:02} ansible_host=127.0.0.1 ansible_port={} ansible_user={user}\n",
                fleet.port(i)
            )
        })
        .collect();
    std::fs::write(&inventory, format!("[all]\n{hosts}")).unwrap();
    let playbook = dir.path().join("site.yml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    // One configuration for both: forks, host keys checked, pipelining,
    // the node's Python, and no SSH connection sharing, so that no round
    // reuses a connection an earlier one left (the runner closes its
    // masters after each step; a direct run would keep them).
    let config = dir.path().join("ansible.cfg");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nforks = {FORKS}\nhost_key_checking = True\ninterpreter_python = /usr/bin/python3\nlocal_tmp = {tmp}\n\n[ssh_connection]\npipelining = True\nssh_args = -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none\n",
            tmp = dir.path().join("ansible-tmp").display(),
            kh = known_hosts.display()
        ),
    )
    .unwrap();

    // Outpost: a runner on this host; the job's step names the same
    // playbook, inventory, key and configuration.
    let stack = Stack::start().await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let _runner = start_runner_with(&stack.nats, "ansible", &["ansible"], |o| {
        o.work_dir = work.clone();
    });
    let job = stack
        .load(
            &format!(
                "- name: bench\n  runnerSelector: {{filter: ansible}}\n  sequence:\n    commands:\n    - type: com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep\n      nodeStep: false\n      configuration:\n        ansible-playbook: {playbook}\n        ansible-inventory: {inventory}\n        ansible-ssh-keypath: {key}\n        ansible-config-file-path: {config}\n",
                playbook = playbook.display(),
                inventory = inventory.display(),
                key = key.display(),
                config = config.display(),
            ),
            "bench",
        )
        .await;
    let mut outpost = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let id = stack.run_job(job, &[]).await;
        // A playbook on 25 nodes outlasts the tests' wait on two cores.
        let st = wait_state_for(&stack.js, id, "a terminal status", LIMIT, |s| {
            s.status.is_terminal()
        })
        .await;
        outpost.push(t0.elapsed());
        assert_eq!(
            st.status,
            ExecutionStatus::Succeeded,
            "{:?}",
            stack.log_texts(id).await
        );
    }

    // ansible-playbook itself, as the runner starts it.
    let mut direct = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let out = Command::new("ansible-playbook")
            .arg(&playbook)
            .arg("-i")
            .arg(&inventory)
            .arg(format!("--private-key={}", key.display()))
            .env("ANSIBLE_CONFIG", &config)
            .output()
            .unwrap();
        direct.push(t0.elapsed());
        assert!(
            out.status.success(),
            "ansible-playbook failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let (o, d) = (best(&outpost), best(&direct));
    println!();
    println!("an Ansible playbook (3 tasks) on {NODES} nodes ({SERVERS} loopback sshd), forks {FORKS}, best of {ROUNDS}:");
    println!(
        "  ansible-playbook, run directly                 {}",
        secs(d)
    );
    println!(
        "  outpost (run request -> execution finished)    {}   {:+.2} s, {:.2}x",
        secs(o),
        o.as_secs_f64() - d.as_secs_f64(),
        o.as_secs_f64() / d.as_secs_f64()
    );
}
