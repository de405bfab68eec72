//! nats-server SIGKILLed while executions run and wait, then restarted on
//! the same store: services and runners reconnect by themselves, and every
//! execution completes, each step run exactly once.

use std::time::{Duration, Instant};

use outpost_schemas::state::ExecutionStatus;
use outpost_tests::*;
use serde_json::Value;

const RUNS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_execution_completes_exactly_once_across_a_nats_kill_and_restart() {
    let mut stack = Stack::start().await;
    let _runner = start_runner_with(&stack.nats, "w", &["w"], |o| o.capacity = 8);
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("ran");
    // Step 1 on the WebSocket runner, step 2 on the local one; each appends
    // a line naming its execution and step.
    let job = stack
        .load(
            &format!(
                "- name: twice\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: sleep 0.05; echo ${{job.execid}} 1 >> {c}\n      runnerSelector:\n        filter: w\n    - exec: echo ${{job.execid}} 2 >> {c}\n",
                c = counter.display()
            ),
            "twice",
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(stack.run_job(job, &[]).await);
    }
    // Some done, most in flight or queued.
    stack
        .wait_state(ids[5], "a few done", |s| s.status.is_terminal())
        .await;
    stack.nats.kill();
    let killed = Instant::now();
    // Down for a moment: clients see the connection refused and retry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.nats.restart();
    println!("nats-server was down for {:?}", killed.elapsed());

    // Every execution ends, read through the API (which reconnects too).
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut pending: Vec<_> = ids.clone();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} executions never finished, e.g. {}",
            pending.len(),
            pending[0]
        );
        let mut still = Vec::new();
        for id in pending {
            let r = stack
                .http
                .get(stack.url(&format!("/execution/{id}")))
                .send()
                .await;
            let done = match r {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap();
                    let status = v["status"].as_str().unwrap_or("").to_string();
                    assert!(
                        status != "failed" && status != "aborted",
                        "execution {id} ended {status}: {v}"
                    );
                    status == "succeeded"
                }
                _ => false,
            };
            if !done {
                still.push(id);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    println!(
        "all {RUNS} executions done {:?} after the kill",
        killed.elapsed()
    );

    // Exactly once: two lines per execution, no line twice.
    let ran = std::fs::read_to_string(&counter).unwrap();
    let mut lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), 2 * RUNS, "every step ran, none twice");
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), 2 * RUNS, "no step ran twice");
    for id in &ids {
        let st = stack.execution(*id).await;
        assert_eq!(st.status, ExecutionStatus::Succeeded);
    }
}
