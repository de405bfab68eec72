//! `outpost runner drain`: the running step finishes, no new one starts, the
//! runner stops and shows down. `outpost runner ping` measures a round trip.

use std::time::{Duration, Instant};

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_the_running_step_finish_takes_no_new_one_and_stops() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut heartbeats = stack.client.subscribe("outpost.hb.edge.*").await.unwrap();
    let mut runner = runner_process(&stack, "edge", "edge", &dir.path().join("work"), &[]);
    next_message(&mut heartbeats, "heartbeat").await;

    // Ping: one replica answers.
    let (code, out, err) = stack.cli(&["runner", "ping", "edge"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("edge replica") && out.contains(" ms"), "{out}");
    let (code, _, err) = stack.cli(&["runner", "ping", "nobody"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no replica"), "{err}");

    let gate = dir.path().join("gate");
    let job = stack
        .load(
            &format!(
                "- name: held\n  multipleExecutions: true\n  runnerSelector:\n    filter: edge\n  sequence:\n    commands:\n    - exec: while [ ! -e {} ]; do sleep 0.05; done; echo finished\n",
                gate.display()
            ),
            "held",
        )
        .await;
    let running = stack.run_job(job, &[]).await;
    stack
        .wait_state(running, "step running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;

    let (code, out, err) = stack.cli(&["runner", "drain", "edge"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("draining runner edge (1 live"), "{out}");
    // The heartbeat says draining; then new work is not taken.
    let t0 = Instant::now();
    loop {
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut heartbeats),
        )
        .await
        .expect("heartbeats go on while draining")
        .unwrap();
        let hb: Value = serde_json::from_slice(&msg.payload).unwrap();
        if hb["state"] == "draining" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    let queued = stack.run_job(job, &[]).await;
    stack
        .wait_state(queued, "dispatched", |s| {
            s.steps[0].status >= StepStatus::Dispatched
        })
        .await;

    // The running step finishes; the runner then stops by itself.
    std::fs::write(&gate, "").unwrap();
    let st = stack.wait_terminal(running).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    assert_eq!(stack.log_texts(running).await, ["finished"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = runner.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the drained runner did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let list: Vec<outpost_services::contract::RunnerReplica> = stack.get_json("/runners").await;
    let edge = list.iter().find(|r| r.runner_id == "edge").unwrap();
    assert_eq!(
        edge.health,
        outpost_services::contract::Health::Down,
        "{edge:?}"
    );
    // The queued step was not started: it waits for another runner.
    let q = stack.execution(queued).await;
    assert!(!q.status.is_terminal(), "{q:?}");
    assert!(q.steps[0].status < StepStatus::Running, "{q:?}");
}

/// A drain waits for running steps however long they take; a SIGTERM during
/// it turns it into a plain stop, with the usual grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_drain_stops_the_runner_within_its_grace() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut heartbeats = stack.client.subscribe("outpost.hb.slow.*").await.unwrap();
    let mut runner = runner_process(
        &stack,
        "slow",
        "slow",
        &dir.path().join("work"),
        &["--shutdown-grace", "1"],
    );
    next_message(&mut heartbeats, "heartbeat").await;
    let job = stack
        .load(
            "- name: endless\n  runnerSelector:\n    filter: slow\n  sequence:\n    commands:\n    - exec: sleep 600\n",
            "endless",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "step running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;
    let (code, _, err) = stack.cli(&["runner", "drain", "slow"]);
    assert_eq!(code, Some(0), "{err}");
    loop {
        let hb: Value = serde_json::from_slice(
            &next_message(&mut heartbeats, "a draining heartbeat")
                .await
                .payload,
        )
        .unwrap();
        if hb["state"] == "draining" {
            break;
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(runner.0.id() as i32, libc::SIGTERM);
    }
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:?}");
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("shutdown deadline"), "{reason}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = runner.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the runner did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
}
