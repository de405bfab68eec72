//! Runner health as Rundeck shows it: new, healthy, unhealthy (at
//! capacity), unknown and down as heartbeats stop, down on a graceful stop.
//! The runner is a real process, paused with SIGSTOP to silence it.

use std::time::{Duration, Instant};

use outpost_services::contract::RunnerReplica;
use outpost_tests::*;

async fn health(stack: &Stack, runner: &str) -> String {
    let list: Vec<RunnerReplica> = stack.get_json("/runners").await;
    list.iter()
        .find(|r| r.runner_id == runner)
        .map(|r| serde_json::to_value(r.runner_health).unwrap())
        .and_then(|h| h.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Polls the API until the runner's health is `want` (state another
/// process changes; 20 s at most).
async fn wait_health(stack: &Stack, runner: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = health(stack, runner).await;
        if h == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{runner} stayed {h}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_new_healthy_unhealthy_unknown_down() {
    let stack = Stack::start_tuned(NatsServer::start(), ServiceRoles::ALL, |o| {
        o.runner_health.unknown_after = Duration::from_secs(2);
        o.runner_health.down_after = Duration::from_secs(4);
        // Not under test here; keep it out of the way.
        o.lost_runner_after = Duration::from_secs(600);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    stack.enrol("edge", &["edge"], dir.path()).await;
    assert_eq!(health(&stack, "edge").await, "new");

    let mut runner = runner_process(
        &stack,
        "edge",
        "edge",
        &dir.path().join("work"),
        &["--capacity", "1"],
    );
    wait_health(&stack, "edge", "healthy").await;

    // At capacity (1 of 1): unhealthy until the step ends.
    let gate = dir.path().join("gate");
    let job = stack
        .load(
            &format!(
                "- name: hold\n  runnerSelector:\n    filter: edge\n  sequence:\n    commands:\n    - exec: while [ ! -e {} ]; do sleep 0.05; done\n",
                gate.display()
            ),
            "hold",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    wait_health(&stack, "edge", "unhealthy").await;
    std::fs::write(&gate, "").unwrap();
    stack.wait_terminal(id).await;
    wait_health(&stack, "edge", "healthy").await;

    // Silenced: unknown after 2 s, down after 4 s.
    signal(&runner.0, libc::SIGSTOP);
    let to_unknown = wait_health(&stack, "edge", "unknown").await;
    let to_down = wait_health(&stack, "edge", "down").await + to_unknown;
    println!("silenced: unknown after {to_unknown:?}, down after {to_down:?}");
    assert!(to_down > to_unknown, "down before unknown: {to_down:?}");

    // Back: healthy; then a graceful stop is down at once.
    signal(&runner.0, libc::SIGCONT);
    wait_health(&stack, "edge", "healthy").await;
    signal(&runner.0, libc::SIGTERM);
    let _ = runner.0.wait();
    wait_health(&stack, "edge", "down").await;
    let (code, out, _) = stack.cli(&["runner", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("edge") && l.contains("down") && l.contains("stopped")),
        "{out}"
    );
}
