//! The `outpost-runner` binary as an operator runs it: layered config, and a
//! graceful SIGTERM that lets the running step finish and takes no new one.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_schemas::Event;
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_step_finish_and_takes_no_new_one() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The file names the id and a tag; the environment overrides the tags.
    let config = dir.path().join("runner.toml");
    std::fs::write(
        &config,
        "id = \"edge-1\"\ntags = [\"from-file\"]\nshutdown_grace = 30\ninsecure = true\n",
    )
    .unwrap();
    let mut heartbeats = stack.client.subscribe("outpost.hb.edge-1.*").await.unwrap();
    let runner = Command::new(workspace_binary("outpost-runner"))
        .arg("--config")
        .arg(&config)
        .args(["--nats-url", &stack.nats.ws_url, "--work-dir"])
        .arg(dir.path().join("work"))
        .env("OUTPOST_RUNNER_TAGS", "edge,linux")
        .env("OUTPOST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut runner = Reaped(runner);
    let hb = tokio::time::timeout(WAIT, heartbeats.next())
        .await
        .unwrap()
        .unwrap();
    let hb: outpost_schemas::RunnerHeartbeat = serde_json::from_slice(&hb.payload).unwrap();
    assert_eq!(
        hb.tags,
        ["edge", "linux"],
        "environment beats the config file"
    );

    let job = stack
        .load(
            "- name: slow\n  multipleExecutions: true\n  runnerSelector: {filter: edge}\n  sequence:\n    commands:\n    - exec: echo begin; sleep 1; echo end\n",
            "slow",
        )
        .await;
    let first = stack.run_job(job, &[]).await;
    stack
        .wait_state(first, "step running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;

    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(runner.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let second = stack.run_job(job, &[]).await;

    let st = stack.wait_terminal(first).await;
    assert_eq!(
        st.status,
        ExecutionStatus::Succeeded,
        "the running step finished"
    );
    let lines: Vec<String> = stack.log_texts(first).await;
    assert_eq!(lines, ["begin", "end"]);

    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = runner.0.try_wait().unwrap() {
                return Some(s);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
    .expect("runner exits after SIGTERM");
    assert!(status.success(), "clean exit, got {status}");

    let claimed = stack
        .events(second)
        .await
        .into_iter()
        .any(|e| matches!(e, Event::StepClaimed(_)));
    assert!(!claimed, "a draining runner takes no new step");
    assert_eq!(
        stack.execution(second).await.status,
        ExecutionStatus::Queued
    );
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let out = Command::new(workspace_binary("outpost-runner"))
        .env_remove("OUTPOST_RUNNER_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no runner id"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runner.toml");
    std::fs::write(&config, "id = \"x\"\ntagz = [\"a\"]\n").unwrap();
    let out = Command::new(workspace_binary("outpost-runner"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("tagz"), "names the unknown key: {stderr}");
}

#[test]
fn a_plain_gateway_url_needs_insecure() {
    let out = Command::new(workspace_binary("outpost-runner"))
        .args(["--id", "x", "--nats-url", "ws://127.0.0.1:1"])
        .env_remove("OUTPOST_INSECURE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not TLS") && stderr.contains("--insecure"),
        "{stderr}"
    );
}
