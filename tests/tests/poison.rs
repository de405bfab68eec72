//! A message a consumer cannot read is dead-lettered, with where it came
//! from and why, and the consumer goes on with the next one.

use std::time::{Duration, Instant};

use outpost_schemas::state::ExecutionStatus;
use outpost_schemas::subjects;
use outpost_tests::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_next_good_one_is_processed() {
    let stack = Stack::start().await;
    let bogus = Uuid::now_v7();
    let event_subject = subjects::event("step_finished", bogus, subjects::CONTROL_PLANE_SOURCE);
    let dispatch_subject = subjects::dispatch(subjects::LOCAL_TOKEN, bogus, 1);
    for (subject, payload) in [
        (
            event_subject.clone(),
            "{\"type\": \"step_finished\", \"oops\"",
        ),
        (dispatch_subject.clone(), "not a dispatch"),
    ] {
        stack
            .js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Good work, behind the poison, still runs.
    let job = stack
        .load(
            "- name: after\n  sequence:\n    commands:\n    - exec: echo fine\n",
            "after",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    assert_eq!(stack.log_texts(id).await, ["fine"]);

    // The orchestrator and the projector each dead-lettered the event, the
    // local runner the dispatch.
    let mut stream = stack
        .js
        .get_stream(subjects::DEADLETTER_STREAM)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream.info().await.unwrap().state.messages < 3 {
        assert!(Instant::now() < deadline, "dead letters did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Vec::new();
    for seq in 1..=3 {
        let m = stream.direct_get(seq).await.unwrap();
        let h = |name: &str| {
            m.headers
                .get(name)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let original = h(subjects::DLQ_SUBJECT_HEADER);
        let error = h(subjects::DLQ_ERROR_HEADER);
        assert!(error.starts_with("malformed"), "{error}");
        assert!(!h(subjects::DLQ_SEQUENCE_HEADER).is_empty());
        if original == event_subject {
            assert_eq!(
                m.payload.as_ref(),
                b"{\"type\": \"step_finished\", \"oops\""
            );
        } else {
            assert_eq!(original, dispatch_subject);
            assert_eq!(m.payload.as_ref(), b"not a dispatch");
        }
        seen.push(m.subject.to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            subjects::dead_letter("_cp", "orchestrator"),
            subjects::dead_letter("_cp", "projector"),
            subjects::dead_letter("_local", "dispatch"),
        ]
    );
    // Counted, and shown with why.
    let v: outpost_services::contract::DeadLetters = stack.get_json("/deadletters").await;
    assert_eq!(
        v.counts.get(&subjects::dead_letter("_cp", "orchestrator")),
        Some(&1),
        "{v:?}"
    );
    assert_eq!(
        v.counts.get(&subjects::dead_letter("_local", "dispatch")),
        Some(&1),
        "{v:?}"
    );
    assert_eq!(v.recent.len(), 3, "{v:?}");

    let (code, out, _) = stack.cli(&["deadletters"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("outpost.dlq._local.dispatch") && out.contains("malformed dispatch message"),
        "{out}"
    );

    // Terminated, not redelivered: still three after another round trip.
    let again = stack.run_job(job, &[]).await;
    stack.wait_terminal(again).await;
    assert_eq!(stream.info().await.unwrap().state.messages, 3);
    // And nothing of it is left pending on the consumers that read it.
    for name in [
        subjects::ORCHESTRATOR_CONSUMER,
        subjects::PROJECTOR_CONSUMER,
    ] {
        let mut c = stack
            .js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                name,
                subjects::EVENTS_STREAM,
            )
            .await
            .unwrap();
        let info = c.info().await.unwrap();
        assert_eq!(info.num_ack_pending, 0, "{name}");
        assert_eq!(info.num_redelivered, 0, "{name}");
    }
}

/// A record the projector reads back that is not what it wrote (a corrupt
/// execution state) cannot be cured by retrying: the event is dead-lettered
/// at once, with why, rather than handed back forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_corrupt_state_is_dead_lettered_not_retried_forever() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let job = stack
        .load(
            &format!(
                "- name: gated\n  sequence:\n    commands:\n    - exec: while [ ! -f {} ]; do sleep 0.05; done\n",
                go.display()
            ),
            "gated",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "running", |s| {
            s.status == ExecutionStatus::Running && s.steps[0].started_at.is_some()
        })
        .await;
    let executions = stack
        .js
        .get_key_value(subjects::EXECUTIONS_BUCKET)
        .await
        .unwrap();
    executions
        .put(subjects::execution_key(id), "{not json".into())
        .await
        .unwrap();
    // The step's end is the next event the projector folds.
    std::fs::write(&go, "").unwrap();
    let stream = stack
        .js
        .get_stream(subjects::DEADLETTER_STREAM)
        .await
        .unwrap();
    let subject = subjects::dead_letter("_cp", "projector");
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        if let Ok(m) = stream.direct_get_last_for_subject(&subject).await {
            break m;
        }
        assert!(Instant::now() < deadline, "the event was not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = dead
        .headers
        .get(subjects::DLQ_ERROR_HEADER)
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(error.contains("corrupt"), "{error}");
    assert!(
        dead.headers
            .get(subjects::DLQ_SUBJECT_HEADER)
            .is_some_and(|s| s.as_str().contains(&id.simple().to_string())),
        "{:?}",
        dead.headers
    );
}
