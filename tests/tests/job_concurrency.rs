//! `multipleExecutions` and `maxMultipleExecutions`: a run beyond a job's
//! limit is refused with Rundeck's 409, and the limit is held in JetStream,
//! so it holds across API replicas.

use std::path::Path;

use outpost_schemas::state::ExecutionStatus;
use outpost_tests::*;
use uuid::Uuid;

/// Jobs whose one step waits for `gate` to exist.
fn gated_jobs(gate: &Path) -> String {
    let step = format!(
        "  sequence:\n    commands:\n    - exec: while [ ! -e {} ]; do sleep 0.05; done\n",
        gate.display()
    );
    format!(
        "- name: once\n{step}- name: two-at-a-time\n  multipleExecutions: true\n  maxMultipleExecutions: '2'\n{step}- name: unlimited\n  multipleExecutions: true\n{step}"
    )
}

fn conflict_message(name: &str, job: Uuid) -> String {
    format!(
        "Execution had a conflict: Job \"{name}\" {{{{Job {job}}}}}: Limit of running executions has been reached."
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_one_at_a_time_unless_it_allows_more_as_in_rundeck() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("open");
    let yaml = gated_jobs(&gate);
    let once = stack.load(&yaml, "once").await;
    let two = stack.load(&yaml, "two-at-a-time").await;
    let unlimited = stack.load(&yaml, "unlimited").await;

    // No `multipleExecutions`: one at a time, Rundeck's default.
    let first = stack.run_job(once, &[]).await;
    let (status, body) = stack.try_run(once, &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errorCode"], "api.error.execution.conflict");
    assert_eq!(body["message"], conflict_message("once", once));

    // `maxMultipleExecutions: '2'`: the third is refused.
    let mut running = vec![first];
    running.push(stack.run_job(two, &[]).await);
    running.push(stack.run_job(two, &[]).await);
    let (status, body) = stack.try_run(two, &[]).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], conflict_message("two-at-a-time", two));

    // No limit: more than the list's pruning length run side by side.
    for _ in 0..40 {
        running.push(stack.run_job(unlimited, &[]).await);
    }

    // A refused run is no execution: the refusals published nothing.
    std::fs::write(&gate, "").unwrap();
    for id in &running {
        assert_eq!(
            stack.wait_terminal(*id).await.status,
            ExecutionStatus::Succeeded
        );
    }

    // Once they have ended, each job runs again: nothing has to hand a slot
    // back for the next run to be admitted.
    let again = stack.run_job(once, &[]).await;
    let twice = [stack.run_job(two, &[]).await, stack.run_job(two, &[]).await];
    for id in std::iter::once(again).chain(twice) {
        assert_eq!(
            stack.wait_terminal(id).await.status,
            ExecutionStatus::Succeeded
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_runs_through_two_api_replicas_admit_exactly_the_limit() {
    let stack = Stack::start().await;
    let replica = Services::start(
        &stack.nats,
        ServiceRoles {
            api: true,
            orchestrator: false,
            projector: false,
            registry: false,
            local_runner: false,
        },
    )
    .await;
    let apis = [
        stack.api.clone(),
        format!("http://{}", replica.api_addr.unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("open");
    let yaml = gated_jobs(&gate);
    let once = stack.load(&yaml, "once").await;
    let two = stack.load(&yaml, "two-at-a-time").await;

    for (job, limit) in [(once, 1), (two, 2)] {
        let asks = (0..10).map(|i| {
            let url = format!("{}/api/v1/job/{job}/run", apis[i % 2]);
            let http = stack.http.clone();
            async move {
                let r = http.post(url).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<serde_json::Value>().await.unwrap())
            }
        });
        let answers = futures::future::join_all(asks).await;
        let admitted: Vec<Uuid> = answers
            .iter()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(admitted.len(), limit, "{answers:?}");
        assert!(
            answers.iter().all(|(status, body)| *status == 200
                || (*status == 409 && body["errorCode"] == "api.error.execution.conflict")),
            "{answers:?}"
        );
    }
    std::fs::write(&gate, "").unwrap();
    replica.stop().await;
}
