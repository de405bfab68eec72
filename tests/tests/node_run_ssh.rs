//! Node steps over SSH against a real sshd: several nodes, keys from the
//! runner's key store, script copy-run-remove, and an unreachable node among
//! reachable ones.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_runner::node_run::{self, NodeContext, NodeRunSpec, NodeStepResult};
use outpost_runner::ssh::{HostKeyPolicy, SshOptions};
use outpost_schemas::job::Strategy;
use outpost_schemas::resources::parse_resources;
use outpost_schemas::{StepCommand, StepOutcome};
use outpost_tests::sshd::{keygen, Sshd};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn go(
    spec: NodeRunSpec,
    ctx: NodeContext,
) -> (Vec<NodeStepResult>, Vec<(u32, String, String)>) {
    let (etx, mut erx) = mpsc::channel(1024);
    let (ltx, mut lrx) = mpsc::channel::<node_run::NodeLine>(1024);
    let drain = tokio::spawn(async move { while erx.recv().await.is_some() {} });
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some((step, e)) = lrx.recv().await {
            v.push((step, e.node.unwrap_or_default(), e.log));
        }
        v
    });
    let results = node_run::run(spec, ctx, etx, ltx, CancellationToken::new()).await;
    drain.await.unwrap();
    (results, collect.await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_nodes_run_exec_and_script_steps_and_an_unreachable_one_fails_alone() {
    let keys = tempfile::tempdir().unwrap();
    let key_store = keys.path().join("store");
    std::fs::create_dir_all(key_store.join("web")).unwrap();
    let key = keygen(&key_store.join("web"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let nodes = parse_resources(&format!(
        "web1:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  ssh-key-storage-path: keys/web/id\n\
         web2:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  ssh-key-storage-path: keys/web/id\n\
         gone:\n  hostname: 127.0.0.1:{closed}\n  username: {user}\n  ssh-key-storage-path: keys/web/id\n",
        p = sshd.port
    ))
    .unwrap();
    let ctx = NodeContext {
        key_store: key_store.clone(),
        ssh: SshOptions {
            known_hosts: sshd.known_hosts(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Some(Duration::from_secs(30)),
        },
        work_dir: keys.path().to_path_buf(),
        default_user: user.clone(),
        plugins: outpost_runner::plugins::Usable::new(None),
    };
    let spec = NodeRunSpec {
        loglevel: Default::default(),
        log_filters: Default::default(),
        handlers: Default::default(),
        secrets: Default::default(),
        auth: Default::default(),
        nodes,
        steps: vec![
            (
                1,
                StepCommand::Exec {
                    command: "echo exec on $RD_NODE_NAME".into(),
                },
            ),
            (
                2,
                StepCommand::Script {
                    script: "#!/bin/sh\necho \"script $1 at $0\"\n".into(),
                    args: Some("arg1".into()),
                    interpreter: None,
                    source: None,
                    expand_tokens: false,
                    file_extension: None,
                    interpreter_args_quoted: false,
                },
            ),
        ],
        strategy: Strategy::NodeFirst,
        threadcount: 2,
        node_keepgoing: true,
        step_keepgoing: false,
        env: BTreeMap::new(),
        vars: Default::default(),
    };
    let (results, lines) = go(spec, ctx).await;
    let table: Vec<(u32, &str, Option<StepOutcome>)> = results
        .iter()
        .map(|r| (r.step, r.node.as_str(), r.outcome))
        .collect();
    assert_eq!(
        table,
        // A map-form inventory lists nodes by name.
        [
            (1, "gone", Some(StepOutcome::Failed)),
            (1, "web1", Some(StepOutcome::Succeeded)),
            (1, "web2", Some(StepOutcome::Succeeded)),
            (2, "gone", None),
            (2, "web1", Some(StepOutcome::Succeeded)),
            (2, "web2", Some(StepOutcome::Succeeded)),
        ]
    );
    let gone = results
        .iter()
        .find(|r| r.node == "gone" && r.step == 1)
        .unwrap();
    let reason = gone.reason.clone().unwrap();
    assert!(reason.starts_with("unreachable: "), "{reason}");
    assert_eq!(reason.lines().count(), 1);

    for node in ["web1", "web2"] {
        let mine: Vec<&(u32, String, String)> =
            lines.iter().filter(|(_, n, _)| n == node).collect();
        assert_eq!(mine[0].2, format!("exec on {node}"));
        let script_line = &mine[1].2;
        assert!(script_line.starts_with("script arg1 at /"), "{script_line}");
        // The copied script is gone from the node afterwards.
        let path = script_line.rsplit(" at ").next().unwrap();
        assert!(
            !std::path::Path::new(path).exists(),
            "{path} was left on the node"
        );
    }
    // The key's location on the runner never shows in any output.
    assert!(!lines
        .iter()
        .any(|(_, _, l)| l.contains(key_store.to_str().unwrap())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threadcount_bounds_concurrent_ssh_nodes() {
    let keys = tempfile::tempdir().unwrap();
    let key_store = keys.path().join("store");
    std::fs::create_dir_all(&key_store).unwrap();
    let key = keygen(&key_store, "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let yaml: String = (1..=4)
        .map(|i| format!("n{i}:\n  hostname: 127.0.0.1:{}\n  username: {user}\n  ssh-key-storage-path: keys/id\n", sshd.port))
        .collect();
    for (threads, expected_peak) in [(1u32, 1usize), (4, 4)] {
        let ctx = NodeContext {
            key_store: key_store.clone(),
            ssh: SshOptions {
                known_hosts: sshd.known_hosts(),
                host_key_policy: HostKeyPolicy::Strict,
                connect_timeout: Duration::from_secs(5),
                command_timeout: None,
            },
            work_dir: keys.path().to_path_buf(),
            default_user: user.clone(),
            plugins: outpost_runner::plugins::Usable::new(None),
        };
        let spec = NodeRunSpec {
            loglevel: Default::default(),
            log_filters: Default::default(),
            handlers: Default::default(),
            secrets: Default::default(),
            auth: Default::default(),
            nodes: parse_resources(&yaml).unwrap(),
            steps: vec![(
                1,
                StepCommand::Exec {
                    command: "sleep 0.5".into(),
                },
            )],
            strategy: Strategy::NodeFirst,
            threadcount: threads as usize,
            node_keepgoing: false,
            step_keepgoing: false,
            env: BTreeMap::new(),
            vars: Default::default(),
        };
        // Count how many pairs are between Started and Finished at once.
        let (etx, mut erx) = mpsc::channel(64);
        let (ltx, mut lrx) = mpsc::channel::<node_run::NodeLine>(64);
        let peak = tokio::spawn(async move {
            let (mut now, mut peak) = (0usize, 0usize);
            while let Some(e) = erx.recv().await {
                match e {
                    node_run::NodeEvent::Started { .. } => now += 1,
                    node_run::NodeEvent::Finished(_) => now -= 1,
                }
                peak = peak.max(now);
            }
            peak
        });
        let drain = tokio::spawn(async move { while lrx.recv().await.is_some() {} });
        let results = node_run::run(spec, ctx, etx, ltx, CancellationToken::new()).await;
        drain.await.unwrap();
        assert!(
            results
                .iter()
                .all(|r| r.outcome == Some(StepOutcome::Succeeded)),
            "{results:?}"
        );
        let peak = peak.await.unwrap();
        assert!(
            peak <= threads as usize,
            "threadcount {threads}: {peak} at once"
        );
        // Connections take time on a loaded machine: with room for four,
        // demand overlap, not a perfect four.
        if expected_peak > 1 {
            assert!(peak > 1, "threadcount {threads} never overlapped nodes");
        } else {
            assert_eq!(peak, 1);
        }
    }
}
