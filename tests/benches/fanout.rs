//! `just bench`: one command fanned out to 100 nodes, 25 at a time, through
//! the whole stack (API → orchestrator → runner → SSH), timed beside
//! `ansible all -m command -f 25` and `xargs -P 25 ssh` against the same
//! nodes in the same run. The nodes are entries pointing at four loopback
//! sshd instances.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use outpost_schemas::state::ExecutionStatus;
use outpost_tests::bench::SshFleet;
use outpost_tests::*;

const NODES: usize = 100;
const THREADS: usize = 25;
const SERVERS: usize = 4;
const ROUNDS: usize = 3;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SshFleet::start(dir.path(), SERVERS);
    let (key_store, key, known_hosts, user) = (
        fleet.key_store.clone(),
        fleet.key.clone(),
        fleet.known_hosts.clone(),
        fleet.user.clone(),
    );
    let ports: Vec<u16> = (0..NODES).map(|i| fleet.port(i)).collect();

    // Outpost: a runner serving the 100 nodes; one job, threadcount 25.
    let nodes_yaml: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!("node{i:03}:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  ssh-key-storage-path: keys/id\n")
        })
        .collect();
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(&nodes_file, nodes_yaml).unwrap();
    let stack = Stack::start().await;
    let mut reported = stack
        .client
        .subscribe("outpost.nodes.fanout")
        .await
        .unwrap();
    let _runner = start_runner_with(&stack.nats, "fanout", &[], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
        o.known_hosts = known_hosts.clone();
    });
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();
    let job = stack
        .load(
            &format!("- name: fanout\n  nodefilters:\n    filter: '.*'\n    dispatch: {{threadcount: {THREADS}}}\n  sequence:\n    commands:\n    - exec: uname -n\n"),
            "fanout",
        )
        .await;

    let mut outpost = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let id = stack.run_job(job, &[]).await;
        let st = stack.wait_terminal(id).await;
        outpost.push(t0.elapsed());
        assert_eq!(
            st.status,
            ExecutionStatus::Succeeded,
            "{:?}",
            st.failed_nodes
        );
        assert_eq!(st.successful_nodes.len(), NODES);
    }

    // ansible, same nodes and parallelism.
    let inventory = dir.path().join("inventory.ini");
    let inv: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!("node{i:03} ansible_host=127.0.0.1 ansible_port={p} ansible_user={user}\n")
        })
        .collect();
    std::fs::write(&inventory, format!("[all]\n{inv}")).unwrap();
    let ssh_args = format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o ControlMaster=no -o ControlPath=none",
        known_hosts.display()
    );
    let mut ansible = Vec::new();
    let have_ansible = Command::new("ansible")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if have_ansible {
        for _ in 0..ROUNDS {
            let t0 = Instant::now();
            let out = Command::new("ansible")
                .args(["all", "-i"])
                .arg(&inventory)
                .args([
                    "-m",
                    "command",
                    "-a",
                    "uname -n",
                    "-f",
                    &THREADS.to_string(),
                    "--private-key",
                ])
                .arg(&key)
                .env("ANSIBLE_SSH_ARGS", &ssh_args)
                .env("ANSIBLE_HOST_KEY_CHECKING", "True")
                .env("ANSIBLE_PIPELINING", "True")
                .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
                .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-tmp"))
                .output()
                .unwrap();
            ansible.push(t0.elapsed());
            let failed: Vec<&str> = std::str::from_utf8(&out.stdout)
                .unwrap_or("")
                .lines()
                .filter(|l| l.contains("FAILED") || l.contains("UNREACHABLE"))
                .take(3)
                .collect();
            assert!(
                out.status.success(),
                "ansible failed: {failed:?} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // Plain OpenSSH through xargs.
    let mut xargs = Vec::new();
    let lines: String = ports.iter().map(|p| format!("{p}\n")).collect();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        let mut child = Command::new("xargs")
            .args(["-P", &THREADS.to_string(), "-I{}", "ssh", "-p", "{}", "-i"])
            .arg(&key)
            .args([
                "-o",
                &format!("UserKnownHostsFile={}", known_hosts.display()),
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-l",
                &user,
                "127.0.0.1",
                "uname",
                "-n",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lines.as_bytes())
            .unwrap();
        let status = child.wait().unwrap();
        xargs.push(t0.elapsed());
        assert!(status.success(), "xargs ssh failed");
    }

    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    println!();
    println!("fan-out of `uname -n` to {NODES} nodes ({SERVERS} loopback sshd), {THREADS} at a time, best of {ROUNDS}:");
    println!(
        "  outpost (run request -> execution finished)  {}",
        secs(best(&outpost))
    );
    if have_ansible {
        println!(
            "  ansible all -m command -f {THREADS}             {}   outpost is {:.1}x faster",
            secs(best(&ansible)),
            best(&ansible).as_secs_f64() / best(&outpost).as_secs_f64()
        );
    } else {
        println!("  ansible: not installed (pip install ansible-core)");
    }
    println!(
        "  xargs -P {THREADS} ssh                            {}   outpost takes {:.2}x its time",
        secs(best(&xargs)),
        best(&outpost).as_secs_f64() / best(&xargs).as_secs_f64()
    );
}
