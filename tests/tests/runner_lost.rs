//! A runner killed mid-step (SIGKILL, a real process) does not leave its step
//! "running": within the lost-runner deadline the step ends `runner-lost`,
//! and the execution goes on or fails per `keepgoing`.

use std::time::{Duration, Instant};

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_step_ends_it_runner_lost_within_the_deadline() {
    let deadline = Duration::from_secs(3);
    let stack = Stack::start_tuned(NatsServer::start(), ServiceRoles::ALL, |o| {
        o.lost_runner_after = deadline
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("step.pid");
    let mut heartbeats = stack.client.subscribe("outpost.hb.doomed.*").await.unwrap();
    let mut runner = runner_process(&stack, "doomed", "edge", &dir.path().join("work"), &[]);
    next_message(&mut heartbeats, "heartbeat").await;
    // Step 1 on the doomed runner; step 2 on the local runner, which runs
    // because of keepgoing.
    let job = stack
        .load(
            &format!(
                "- name: doomed\n  sequence:\n    keepgoing: true\n    commands:\n    - exec: echo $$ > {}; sleep 60\n      runnerSelector:\n        filter: edge\n    - exec: echo after\n",
                pid_file.display()
            ),
            "doomed",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "step 1 running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;

    runner.0.kill().unwrap();
    runner.0.wait().unwrap();
    let killed = Instant::now();
    let st = stack.wait_terminal(id).await;
    let took = killed.elapsed();
    println!("step ended runner-lost {took:?} after the runner was killed (deadline {deadline:?})");

    // The orphaned step process is the test's to clean up.
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        // SAFETY: kill(2) on a pid the step wrote; at worst it is gone.
        unsafe {
            libc::kill(pid.trim().parse().unwrap_or(0), libc::SIGKILL);
        }
    }
    assert_eq!(st.steps[0].status, StepStatus::Failed, "{st:?}");
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("runner-lost") && reason.contains("doomed"),
        "{reason}"
    );
    assert_eq!(
        st.steps[1].status,
        StepStatus::Succeeded,
        "keepgoing ran step 2"
    );
    assert_eq!(st.status, ExecutionStatus::Failed);
    // The deadline, plus a sweep period, the heartbeat cadence, and step 2
    // on a loaded machine.
    assert!(
        took < deadline * 2 + Duration::from_secs(4),
        "took {took:?}"
    );
}
