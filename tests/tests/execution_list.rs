//! `GET /project/{p}/executions` answers from a per-project index that each
//! API replica keeps with one watch: newest first, only the project's own,
//! and no JetStream consumer per request (a key scan of every execution
//! made one each time, and read every execution of every project).

use std::time::{Duration, Instant};

use outpost_schemas::subjects;
use outpost_tests::*;
use serde_json::json;
use uuid::Uuid;

async fn listed(stack: &Stack, project: &str, max: usize) -> Vec<Uuid> {
    let list: outpost_services::contract::ExecutionList = stack
        .get_json(&format!("/project/{project}/executions?max={max}"))
        .await;
    list.executions.iter().map(|e| e.id).collect()
}

async fn consumers(stack: &Stack, bucket: &str) -> usize {
    let mut stream = stack.js.get_stream(format!("KV_{bucket}")).await.unwrap();
    stream.info().await.unwrap().state.consumer_count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_listed_per_project_newest_first_from_the_index() {
    let stack = Stack::start().await;
    let (status, body) = stack
        .post_json("/projects", &json!({"name": "other"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let job = stack
        .load(
            "- name: mine\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "mine",
        )
        .await;
    let r = stack
        .http
        .post(stack.url("/project/other/jobs/import"))
        .body("- name: theirs\n  sequence:\n    commands:\n    - exec: 'true'\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: outpost_services::contract::ImportResult = r.json().await.unwrap();
    let other_job = body.succeeded[0].id;

    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(stack.run_job(job, &[]).await);
    }
    let theirs = stack.run_job(other_job, &[]).await;
    for id in mine.iter().chain([&theirs]) {
        stack.wait_terminal(*id).await;
    }

    // The projector records each execution in the index, and the API's
    // watch brings it into memory: both follow the run, so wait for them.
    let deadline = Instant::now() + WAIT;
    let newest = loop {
        let got = listed(&stack, "default", 3).await;
        if got.len() == 3 && got[0] == mine[4] {
            break got;
        }
        assert!(Instant::now() < deadline, "never listed: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let expected: Vec<Uuid> = mine[2..].iter().rev().copied().collect();
    assert_eq!(newest, expected, "newest first, at most `max`");
    let all = listed(&stack, "default", 100).await;
    assert_eq!(all.len(), 5, "only this project's: {all:?}");
    assert!(!all.contains(&theirs));
    let deadline = Instant::now() + WAIT;
    while listed(&stack, "other", 100).await != [theirs] {
        assert!(
            Instant::now() < deadline,
            "the other project's never listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Lists read memory and the listed states only. The harness's own
    // waits watch the executions bucket too, so compare before and after.
    let before = consumers(&stack, subjects::EXECUTIONS_BUCKET).await;
    for _ in 0..100 {
        assert_eq!(listed(&stack, "default", 20).await, all);
    }
    let after = consumers(&stack, subjects::EXECUTIONS_BUCKET).await;
    assert!(after <= before, "lists made consumers: {before} -> {after}");
    assert_eq!(
        consumers(&stack, subjects::EXECUTION_INDEX_BUCKET).await,
        1,
        "only the API's own watch"
    );
}
