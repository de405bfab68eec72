//! Strategies, threadcount and keepgoing, on local nodes (`node-executor:
//! local`). The SSH path is covered against a real sshd in `tests/`.
use std::path::Path;
use std::time::Duration;

use super::credentials::store_path;
use super::*;
use crate::ssh::SshAuth;
use outpost_schemas::job::LogFilter;

fn local_nodes(names: &[&str]) -> Vec<Node> {
    let yaml: String = names
        .iter()
        .map(|n| format!("{n}:\n  node-executor: local\n  tags: t\n"))
        .collect();
    outpost_schemas::resources::parse_resources(&yaml).unwrap()
}

fn exec(cmd: &str) -> StepCommand {
    StepCommand::Exec {
        command: cmd.into(),
    }
}

struct Outcome {
    results: Vec<NodeStepResult>,
    events: Vec<NodeEvent>,
    lines: Vec<NodeLine>,
}

async fn go(spec: NodeRunSpec) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let ctx = NodeContext {
        key_store: dir.path().join("keys"),
        ssh: SshOptions {
            known_hosts: dir.path().join("known_hosts"),
            host_key_policy: ssh::HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(2),
            command_timeout: None,
        },
        work_dir: dir.path().to_path_buf(),
        default_user: "root".into(),
        // What a runner whose allow-list leaves every plugin out runs.
        plugins: crate::plugins::Usable::none(),
    };
    let (etx, mut erx) = mpsc::channel(1024);
    let (ltx, mut lrx) = mpsc::channel(1024);
    let collect_events = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = erx.recv().await {
            v.push(e);
        }
        v
    });
    let collect_lines = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = lrx.recv().await {
            v.push(e);
        }
        v
    });
    let results = run(spec, ctx, etx, ltx, CancellationToken::new()).await;
    Outcome {
        results,
        events: collect_events.await.unwrap(),
        lines: collect_lines.await.unwrap(),
    }
}

fn spec(nodes: &[&str], steps: Vec<StepCommand>, strategy: Strategy) -> NodeRunSpec {
    NodeRunSpec {
        loglevel: Default::default(),
        log_filters: Default::default(),
        secrets: Default::default(),
        auth: Default::default(),
        nodes: local_nodes(nodes),
        steps: steps
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as u32 + 1, c))
            .collect(),
        handlers: BTreeMap::new(),
        strategy,
        threadcount: 1,
        node_keepgoing: false,
        step_keepgoing: false,
        env: BTreeMap::new(),
        vars: Default::default(),
    }
}

fn table(results: &[NodeStepResult]) -> Vec<String> {
    results
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r.step,
                r.node,
                match r.outcome {
                    Some(o) => format!("{o:?}"),
                    None => "-".into(),
                }
            )
        })
        .collect()
}

/// The order in which (step, node) pairs started.
fn starts(events: &[NodeEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::Started { step, node } => Some(format!("{step} {node}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn node_first_runs_every_step_on_a_node_before_the_next_node() {
    let o = go(spec(
        &["a", "b"],
        vec![exec("echo one"), exec("echo two")],
        Strategy::NodeFirst,
    ))
    .await;
    assert_eq!(starts(&o.events), ["1 a", "2 a", "1 b", "2 b"]);
    assert!(o
        .results
        .iter()
        .all(|r| r.outcome == Some(StepOutcome::Succeeded)));
    let tagged: Vec<(u32, Option<&str>, &str)> = o
        .lines
        .iter()
        .map(|(s, e)| (*s, e.node.as_deref(), e.log.as_str()))
        .collect();
    assert_eq!(
        tagged,
        [
            (1, Some("a"), "one"),
            (2, Some("a"), "two"),
            (1, Some("b"), "one"),
            (2, Some("b"), "two")
        ]
    );
}

#[tokio::test]
async fn sequential_runs_a_step_on_every_node_before_the_next_step() {
    let o = go(spec(
        &["a", "b"],
        vec![exec("true"), exec("true")],
        Strategy::Sequential,
    ))
    .await;
    assert_eq!(starts(&o.events), ["1 a", "1 b", "2 a", "2 b"]);
}

#[tokio::test]
async fn threadcount_bounds_how_many_nodes_run_at_once() {
    const NODES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
    for (threads, limit) in [(1usize, 1usize), (3, 3)] {
        // Each node marks itself running, records how many were, and leaves.
        let dir = tempfile::tempdir().unwrap();
        let (run, seen) = (dir.path().join("run"), dir.path().join("seen"));
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(&seen).unwrap();
        let step = exec(&format!(
            "touch {r}/$RD_NODE_NAME; ls {r} | wc -l > {s}/$RD_NODE_NAME; sleep 0.3; rm {r}/$RD_NODE_NAME",
            r = run.display(),
            s = seen.display()
        ));
        let mut sp = spec(&NODES, vec![step], Strategy::NodeFirst);
        sp.threadcount = threads;
        let o = go(sp).await;
        assert!(
            o.results
                .iter()
                .all(|r| r.outcome == Some(StepOutcome::Succeeded)),
            "{:?}",
            o.results
        );
        let running: Vec<usize> = NODES
            .iter()
            .map(|n| {
                std::fs::read_to_string(seen.join(n))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect();
        let peak = *running.iter().max().unwrap();
        assert!(
            peak <= limit,
            "threadcount {threads}: saw {running:?} running at once"
        );
        if threads > 1 {
            assert!(
                peak > 1,
                "threadcount {threads} never ran nodes together: {running:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_failed_node_stops_new_nodes_unless_node_keepgoing() {
    let step = exec("test $RD_NODE_NAME != b");
    let o = go(spec(
        &["a", "b", "c"],
        vec![step.clone()],
        Strategy::NodeFirst,
    ))
    .await;
    assert_eq!(table(&o.results), ["1 a Succeeded", "1 b Failed", "1 c -"]);
    assert_eq!(o.results[1].reason.as_deref(), Some("exit code 1"));

    let mut s = spec(&["a", "b", "c"], vec![step], Strategy::NodeFirst);
    s.node_keepgoing = true;
    let o = go(s).await;
    assert_eq!(
        table(&o.results),
        ["1 a Succeeded", "1 b Failed", "1 c Succeeded"]
    );
}

#[tokio::test]
async fn a_failed_step_stops_later_steps_unless_step_keepgoing() {
    let steps = vec![exec("test $RD_NODE_NAME != a"), exec("true")];
    let mut s = spec(&["a", "b"], steps.clone(), Strategy::Sequential);
    s.node_keepgoing = true;
    let o = go(s).await;
    assert_eq!(
        table(&o.results),
        ["1 a Failed", "1 b Succeeded", "2 a -", "2 b -"]
    );

    let mut s = spec(&["a", "b"], steps, Strategy::Sequential);
    s.node_keepgoing = true;
    s.step_keepgoing = true;
    let o = go(s).await;
    assert_eq!(
        table(&o.results),
        [
            "1 a Failed",
            "1 b Succeeded",
            "2 a Succeeded",
            "2 b Succeeded"
        ]
    );
}

/// The handler runs on the node that failed, with `${result.*}`, and
/// decides that node's result as Rundeck's `handled_outcome` does.
#[tokio::test]
async fn a_failed_nodes_error_handler_runs_on_that_node_and_decides_its_result() {
    let steps = vec![exec("test $RD_NODE_NAME != a || exit 3"), exec("true")];
    let handler = exec("echo \"handling ${node.name}: ${result.reason} $RD_RESULT_RESULTCODE\"; test ${result.resultCode} = 3");
    let mut log = Vec::new();
    for (kgos, handler) in [
        (true, handler.clone()),
        (false, handler.clone()),
        (true, exec("exit 1")),
    ] {
        let mut s = spec(&["a", "b"], steps.clone(), Strategy::Sequential);
        s.handlers.insert(1, (handler, kgos));
        let o = go(s).await;
        let a = o
            .results
            .iter()
            .find(|r| r.step == 1 && r.node == "a")
            .unwrap();
        log.push(format!(
            "keepgoingOnSuccess {kgos}: {:?} handler {:?}: {}",
            table(&o.results),
            a.handler.as_ref().map(|h| h.outcome),
            a.reason.as_deref().unwrap_or_default()
        ));
        let said: Vec<&str> = o
            .lines
            .iter()
            .filter(|(_, e)| e.stream != LogStream::System)
            .map(|(_, e)| e.log.as_str())
            .collect();
        log.push(format!("  output {said:?}"));
    }
    assert_eq!(
        log,
        [
            "keepgoingOnSuccess true: [\"1 a Succeeded\", \"1 b Succeeded\", \"2 a Succeeded\", \"2 b Succeeded\"] handler Some(Succeeded): exit code 3; recovered by its error handler",
            "  output [\"handling a: NonZeroResultCode 3\"]",
            "keepgoingOnSuccess false: [\"1 a Failed\", \"1 b -\", \"2 a -\", \"2 b -\"] handler Some(Succeeded): exit code 3; its error handler succeeded, but neither keepgoing nor keepgoingOnSuccess lets the workflow go on",
            "  output [\"handling a: NonZeroResultCode 3\"]",
            "keepgoingOnSuccess true: [\"1 a Failed\", \"1 b -\", \"2 a -\", \"2 b -\"] handler Some(Failed): exit code 3; its error handler failed too (exit code 1)",
            "  output []",
        ]
    );
}

#[tokio::test]
async fn an_ssh_node_without_credentials_fails_with_a_one_line_reason() {
    let mut s = spec(&["a"], vec![exec("true")], Strategy::NodeFirst);
    s.nodes =
        outpost_schemas::resources::parse_resources("remote:\n  hostname: 127.0.0.1:1\n").unwrap();
    let o = go(s).await;
    assert_eq!(o.results[0].outcome, Some(StepOutcome::Failed));
    assert_eq!(
        o.results[0].reason.as_deref(),
        Some("no credentials: set ssh-key-storage-path or ssh-password-storage-path")
    );
    let logged: Vec<&str> = o.lines.iter().map(|(_, e)| e.log.as_str()).collect();
    assert_eq!(
        logged,
        ["node remote: no credentials: set ssh-key-storage-path or ssh-password-storage-path"]
    );
}

/// The runner's own entry for a node may name a node executor the lane
/// was not chosen for; a plugin the runner does not run never starts.
#[tokio::test]
async fn a_node_executor_the_runner_does_not_run_fails_its_node() {
    let mut s = spec(&["a"], vec![exec("true")], Strategy::NodeFirst);
    s.nodes = outpost_schemas::resources::parse_resources(
        "remote:\n  hostname: 127.0.0.1:1\n  node-executor: com.batix.rundeck.plugins.AnsibleNodeExecutor\n",
    )
    .unwrap();
    let o = go(s).await;
    assert_eq!(o.results[0].outcome, Some(StepOutcome::Failed));
    assert_eq!(
        o.results[0].reason.as_deref(),
        Some("node remote: node-executor com.batix.rundeck.plugins.AnsibleNodeExecutor is not among the plugins this runner runs (not installed, or not allowed by its --allowed-plugins)")
    );
}

#[test]
fn storage_paths_stay_inside_the_key_store() {
    let store = Path::new("/srv/keys");
    assert_eq!(
        store_path(store, "keys/web/id").unwrap(),
        Path::new("/srv/keys/web/id")
    );
    assert!(store_path(store, "keys/../../etc/shadow").is_err());
    assert!(store_path(store, "/etc/shadow").is_err());
}

#[test]
fn ssh_passwords_come_from_the_store_or_an_authentication_option_as_rundeck_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path();
    std::fs::create_dir_all(store.join("db")).unwrap();
    std::fs::write(store.join("db/pw"), "from-the-store\n").unwrap();
    let node = |attrs: &[(&str, &str)]| Node {
        nodename: "db1".into(),
        hostname: "127.0.0.1".into(),
        port: None,
        username: None,
        tags: Default::default(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let auth: BTreeMap<String, String> = [
        (
            "sshPassword".to_string(),
            "from-the-default-option".to_string(),
        ),
        ("dbpw".to_string(), "from-a-named-option".to_string()),
    ]
    .into();
    let password = |n: &Node, auth: &BTreeMap<String, String>| match credentials(n, store, auth) {
        Ok(SshAuth::Password(p)) => Ok(p),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e),
    };
    let with_password = [("ssh-authentication", "password")];
    // Rundeck's default option name.
    assert_eq!(
        password(&node(&with_password), &auth).as_deref(),
        Ok("from-the-default-option")
    );
    // The node names its option.
    assert_eq!(
        password(
            &node(&[
                ("ssh-authentication", "password"),
                ("ssh-password-option", "option.dbpw")
            ]),
            &auth
        )
        .as_deref(),
        Ok("from-a-named-option")
    );
    // A storage path wins over the option, as in Rundeck.
    assert_eq!(
        password(
            &node(&[
                ("ssh-authentication", "password"),
                ("ssh-password-storage-path", "keys/db/pw")
            ]),
            &auth
        )
        .as_deref(),
        Ok("from-the-store")
    );
    // Neither: Rundeck's words.
    let err = password(&node(&with_password), &BTreeMap::new()).unwrap_err();
    assert!(err.starts_with("SSH Password was not set"), "{err}");
    // An empty value is no password.
    let empty = [("sshPassword".to_string(), String::new())].into();
    assert!(password(&node(&with_password), &empty).is_err());
}

/// A `key-value-data` filter on step 1 (Rundeck's default pattern,
/// `RUNDECK:DATA:KEY = VALUE`), each node writing its own name.
fn capturing(nodes: &[&str], later: &str, strategy: Strategy) -> NodeRunSpec {
    let mut s = spec(
        nodes,
        vec![exec("echo RUNDECK:DATA:v = ${node.name}"), exec(later)],
        strategy,
    );
    s.log_filters.insert(
        1,
        vec![LogFilter {
            filter_type: "key-value-data".into(),
            config: BTreeMap::new(),
        }],
    );
    s
}

fn step_lines(o: &Outcome, step: StepNo) -> Vec<String> {
    o.lines
        .iter()
        .filter(|(s, _)| *s == step)
        .map(|(_, e)| format!("{} {}", e.node.as_deref().unwrap_or("-"), e.log))
        .collect()
}

#[tokio::test]
async fn a_nodes_captures_are_its_own_data_and_reported_per_node_step() {
    let later = "echo own=${data.v} a=${data.v@a} all=${data.v*} step=${1:data.v}";
    let o = go(capturing(&["a", "b"], later, Strategy::Sequential)).await;
    // Step-first: step 2 starts after every node's step 1, so it sees all
    // of them, listed by node name.
    assert_eq!(
        step_lines(&o, 2),
        ["a own=a a=a all=a,b step=a", "b own=b a=a all=a,b step=b"]
    );
    let captured: Vec<(StepNo, &str, Option<&String>)> = o
        .results
        .iter()
        .map(|r| (r.step, r.node.as_str(), r.data.get("v")))
        .collect();
    let (a, b) = ("a".to_string(), "b".to_string());
    assert_eq!(
        captured,
        [
            (1, "a", Some(&a)),
            (1, "b", Some(&b)),
            (2, "a", None),
            (2, "b", None)
        ]
    );
}

#[tokio::test]
async fn node_first_shows_other_nodes_captures_only_after_the_section() {
    let o = go(capturing(
        &["a", "b"],
        // Quoted: an unresolved reference reaches the shell as written.
        "echo 'own=${data.v} a=${data.v@a} all=${data.v*}'",
        Strategy::NodeFirst,
    ))
    .await;
    // As Rundeck's node-first executor: each node's section runs alone, so
    // `b` does not see what `a` captured, even by name.
    assert_eq!(
        step_lines(&o, 2),
        ["a own=a a=a all=a", "b own=b a=${data.v@a} all=b"]
    );
}

#[tokio::test]
async fn the_run_context_gives_earlier_dispatches_captures_and_a_node_shadows_the_global() {
    let mut s = spec(
        &["a", "b"],
        vec![StepCommand::Script {
            // A body takes data as tokens only; its args as references.
            script: "echo @data.v@ @data.v/b@ @data.v*;@ \"$1\"\n".into(),
            args: Some("${data.v}".into()),
            interpreter: None,
            source: None,
            interpreter_args_quoted: false,
            file_extension: None,
            expand_tokens: false,
        }],
        Strategy::Sequential,
    );
    s.vars = [
        ("data.v", "global"),
        ("data.v@b", "bee"),
        ("1:data.v@b", "bee"),
        ("option.x", "not a data key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let o = go(s).await;
    assert_eq!(
        step_lines(&o, 1),
        ["a global bee bee global", "b bee bee bee bee"]
    );
}

#[tokio::test]
async fn captures_past_the_cap_are_dropped_with_a_warning_not_the_steps_end() {
    let flood = "for i in $(seq 300); do echo \"RUNDECK:DATA:k$i = $(printf '%01000d' 0)\"; done";
    let mut s = capturing(&["a", "b"], "true", Strategy::Sequential);
    s.steps[0].1 = exec(flood);
    let o = go(s).await;
    // Each node's 300 KB is past the run's cap on its own.
    assert!(o.results.iter().all(|r| r.data.is_empty()));
    assert!(o
        .results
        .iter()
        .all(|r| r.outcome == Some(StepOutcome::Succeeded)));
    let warned: Vec<_> = step_lines(&o, 1)
        .into_iter()
        .filter(|l| l.contains("captures passed 256 KiB"))
        .collect();
    assert_eq!(warned.len(), 2, "{warned:?}");
}
