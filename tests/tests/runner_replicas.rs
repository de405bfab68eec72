//! Two replicas of one runner share its work; one is SIGKILLed with work
//! queued: the other finishes the queue, and no step runs twice.

use std::time::Duration;

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;

fn replica(stack: &Stack, dir: &std::path::Path, n: u32) -> Reaped {
    runner_process(
        stack,
        "pair",
        "pair",
        &dir.join(format!("work-{n}")),
        &["--capacity", "1"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_replica_leaves_its_queue_to_the_other_and_no_step_runs_twice() {
    let stack = Stack::start_tuned(NatsServer::start(), ServiceRoles::ALL, |o| {
        o.lost_runner_after = Duration::from_secs(3)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("ran");
    let mut heartbeats = stack.client.subscribe("outpost.hb.pair.*").await.unwrap();
    let mut a = replica(&stack, dir.path(), 1);
    let _b = replica(&stack, dir.path(), 2);
    // Both replicas report in.
    let mut replicas = std::collections::HashSet::new();
    while replicas.len() < 2 {
        let m = next_message(&mut heartbeats, "heartbeat of both replicas").await;
        replicas.insert(m.subject.to_string());
    }
    let job = stack
        .load(
            &format!(
                "- name: tick\n  multipleExecutions: true\n  runnerSelector:\n    filter: pair\n  sequence:\n    commands:\n    - exec: echo ${{job.execid}} $PPID >> {}; sleep 0.3\n",
                counter.display()
            ),
            "tick",
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(stack.run_job(job, &[]).await);
    }
    stack
        .wait_state(ids[3], "a few done", |s| s.status.is_terminal())
        .await;
    a.0.kill().unwrap();
    a.0.wait().unwrap();

    let mut lost = 0;
    for id in &ids {
        let st = stack.wait_terminal(*id).await;
        match st.status {
            ExecutionStatus::Succeeded => {}
            ExecutionStatus::Failed => {
                let reason = st.steps[0].reason.clone().unwrap_or_default();
                assert!(reason.contains("runner-lost"), "{reason}");
                assert_eq!(st.steps[0].status, StepStatus::Failed);
                lost += 1;
            }
            other => panic!("execution {id} ended {other:?}"),
        }
    }
    // At most the one step the killed replica was running (capacity 1).
    assert!(lost <= 1, "{lost} steps lost");
    let ran = std::fs::read_to_string(&counter).unwrap();
    let mut execs: Vec<&str> = ran.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let total = execs.len();
    execs.sort();
    execs.dedup();
    assert_eq!(execs.len(), total, "a step ran twice:\n{ran}");
    assert!(total >= ids.len() - lost, "every succeeded step ran");
    // Both replicas did work before the kill, and the survivor after.
    let shells: std::collections::HashSet<&str> =
        ran.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
    assert!(shells.len() > 1, "{ran}");
}
