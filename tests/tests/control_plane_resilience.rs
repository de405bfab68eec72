//! Stateless services: restarts mid-run, replicas side by side, and a
//! projection rebuilt from the event stream equal to the live one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_schemas::{subjects, Event};
use outpost_services::engine::projector;
use outpost_tests::*;

fn roles(api: bool, orchestrator: bool, projector: bool, local_runner: bool) -> ServiceRoles {
    ServiceRoles {
        api,
        orchestrator,
        projector,
        // Runner requests are answered beside the orchestrator.
        registry: orchestrator,
        local_runner,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_and_projector_restarted_mid_run_and_the_execution_still_finishes() {
    let stack = Stack::start_with(roles(true, false, false, true)).await;
    let engine = Services::start(&stack.nats, roles(false, true, true, false)).await;
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let job = stack
        .load(
            &format!(
                "- name: gated\n  sequence:\n    commands:\n    - exec: while [ ! -e {g} ]; do sleep 0.05; done; echo through\n    - exec: echo second\n",
                g = gate_file.display()
            ),
            "gated",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "step 1 running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;

    // Both services go away while step 1 runs, and step 1 finishes while
    // they are gone: its finished event waits in the stream.
    engine.stop().await;
    let mut finished = stack
        .client
        .subscribe(subjects::event("step_finished", id, "*"))
        .await
        .unwrap();
    std::fs::write(&gate_file, "").unwrap();
    tokio::time::timeout(WAIT, finished.next())
        .await
        .expect("step 1 finishes")
        .unwrap();
    assert_eq!(
        stack.execution(id).await.steps[0].status,
        StepStatus::Running,
        "projector is down"
    );

    let _engine = Services::start(&stack.nats, roles(false, true, true, false)).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines: Vec<String> = stack.log_texts(id).await;
    assert_eq!(lines, ["through", "second"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_every_service_process_each_thing_once() {
    let stack = Stack::start().await;
    let _second = Services::start(&stack.nats, ServiceRoles::ALL).await;
    let job = stack
        .load(
            "- name: three\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: echo a\n    - exec: echo b\n    - exec: echo c\n",
            "three",
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(stack.run_job(job, &[]).await);
    }
    for id in ids {
        let st = stack.wait_terminal(id).await;
        assert_eq!(st.status, ExecutionStatus::Succeeded);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in stack.events(id).await {
            let key = match &e {
                Event::StepDispatched(d) => format!("dispatched {}", d.step),
                Event::StepGranted(g) => format!("granted {}", g.step),
                Event::StepClaimed(c) => format!("claimed {}", c.step),
                Event::StepFinished(f) => format!("finished {}", f.step),
                Event::StepStarted(s) => format!("started {}", s.step),
                other => other.kind().to_string(),
            };
            *counts.entry(key).or_default() += 1;
        }
        for (what, n) in &counts {
            assert_eq!(*n, 1, "{what} happened {n} times in {id}: {counts:?}");
        }
        assert_eq!(counts.len(), 17, "{counts:?}");
        let lines: Vec<String> = stack.log_texts(id).await;
        assert_eq!(lines, ["a", "b", "c"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_rebuilt_from_the_event_stream_equals_the_live_one() {
    let stack = Stack::start().await;
    let yaml = r#"
- name: ok
  multipleExecutions: true
  sequence:
    commands:
    - exec: echo fine
    - exec: echo also fine
- name: bad
  multipleExecutions: true
  sequence:
    keepgoing: true
    commands:
    - exec: exit 4
    - exec: echo after
- name: stuck
  runnerSelector: {filter: nobody}
  sequence:
    commands:
    - exec: echo never
"#;
    let ok = stack.load(yaml, "ok").await;
    let bad = stack.load(yaml, "bad").await;
    let stuck = stack.load(yaml, "stuck").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(stack.run_job(ok, &[]).await);
        ids.push(stack.run_job(bad, &[]).await);
    }
    for id in &ids {
        stack.wait_terminal(*id).await;
    }
    let waiting = stack.run_job(stuck, &[]).await;
    stack
        .wait_state(waiting, "a waiting step", |s| {
            s.steps[0].status == StepStatus::Waiting
        })
        .await;
    wait_projector_idle(&stack).await;

    let report = projector::rebuild(&stack.js, "REBUILT").await.unwrap();
    assert_eq!(report.executions, 7);
    assert_eq!(report.orphans, 0);
    let live = projector::read_all(&stack.js, subjects::EXECUTIONS_BUCKET)
        .await
        .unwrap();
    let rebuilt = projector::read_all(&stack.js, "REBUILT").await.unwrap();
    assert_eq!(live.len(), 7);
    assert_eq!(live, rebuilt);

    // The same through the CLI, which compares for us.
    let out = std::process::Command::new(workspace_binary("outpost"))
        .args(["projector", "rebuild", "--bucket", "REBUILT_CLI"])
        .env("OUTPOST_NATS_URL", &stack.nats.client_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("7 executions") && stdout.contains("0 differ"),
        "{stdout}"
    );
}

/// Provenance once read the claims bucket, which expired after 7 days while
/// events stay 90: a rebuild then judged every runner event "unclaimed" and
/// left the steps `dispatched`, and the API hid their output. The grant
/// event in the stream is the input now; the bucket's contents do not
/// matter once the execution is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_whose_claims_expired_rebuilds_the_same_and_keeps_its_output() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: two\n  sequence:\n    commands:\n    - exec: echo one\n    - exec: echo two\n",
            "two",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack.wait_terminal(id).await;
    wait_projector_idle(&stack).await;
    let live = stack.execution(id).await;
    assert_eq!(live.status, ExecutionStatus::Succeeded, "{live:#?}");

    // What expiry leaves: no claim, no in-flight entry.
    for bucket in [subjects::CLAIMS_BUCKET, subjects::ACTIVE_BUCKET] {
        let purged = stack
            .js
            .get_stream(format!("KV_{bucket}"))
            .await
            .unwrap()
            .purge()
            .await
            .unwrap();
        assert!(purged.purged > 0, "{bucket} held the execution's claims");
    }

    let report = projector::rebuild(&stack.js, "REBUILT_EXPIRED")
        .await
        .unwrap();
    assert_eq!(report.executions, 1);
    let rebuilt = projector::read_all(&stack.js, "REBUILT_EXPIRED")
        .await
        .unwrap();
    let rebuilt = &rebuilt[&subjects::execution_key(id)];
    assert_eq!(
        &outpost_services::contract::Execution::from(rebuilt.clone()),
        &live
    );
    assert!(rebuilt
        .steps
        .iter()
        .all(|s| s.status == StepStatus::Succeeded && s.runner_id.is_some()));
    // The API's log check reads the same grants; this API never looked at
    // this execution before, so it remembers nothing of it.
    assert_eq!(stack.log_texts(id).await, ["one", "two"]);
}

/// The projector has nothing pending or unacknowledged. No event exists for
/// that, so poll the consumer's counters.
async fn wait_projector_idle(stack: &Stack) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = stack
            .js
            .get_consumer_from_stream(subjects::PROJECTOR_CONSUMER, subjects::EVENTS_STREAM)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector never caught up: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
