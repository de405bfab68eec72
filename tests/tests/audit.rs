//! Every mutating API call leaves its attempt on record before it runs and
//! its outcome after, both matching the committed schema; reads leave none.
//! A call whose attempt cannot be recorded is refused and changes nothing.

use outpost_schemas::AuditResult;
use outpost_tests::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mutating_call_is_audited_once_and_reads_are_not() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: a\n  sequence:\n    commands:\n    - exec: sleep 1000\n",
            "a",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack.abort(id).await;
    // The abort names who asked for it.
    let abort = stack
        .events(id)
        .await
        .into_iter()
        .find_map(|e| match e {
            outpost_schemas::Event::AbortRequested(a) => Some(a),
            _ => None,
        })
        .expect("an abort event");
    assert_eq!(abort.requested_by, "test-admin");
    let (bad, _) = stack.import("- name: x\n  bogus: 1\n").await;
    assert_eq!(bad, 400);
    let r = stack
        .http
        .delete(stack.url(&format!("/job/{job}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Reads.
    for path in ["/projects", "/project/default/jobs", "/runners"] {
        stack.http.get(stack.url(path)).send().await.unwrap();
    }

    let trail = stack.audit_trail(5).await;
    let (attempts, events): (Vec<_>, Vec<_>) = trail
        .iter()
        .cloned()
        .partition(|e| e.event.result == AuditResult::Attempted);
    // Each outcome follows its own attempt: same call, same request id.
    assert_eq!(attempts.len(), 5, "{trail:?}");
    for outcome in &events {
        let attempt = attempts
            .iter()
            .find(|a| a.event.request_id == outcome.event.request_id)
            .unwrap_or_else(|| panic!("no attempt for {outcome:?}"));
        assert!(attempt.seq < outcome.seq);
        assert_eq!(attempt.event.action, outcome.event.action);
        assert_eq!(attempt.event.actor, outcome.event.actor);
        assert_eq!(attempt.event.status, 0);
    }
    let summary: Vec<(String, u16, String)> = events
        .iter()
        .map(|e| {
            (
                e.event.action.clone(),
                e.event.status,
                serde_json::to_value(e.event.result)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "POST /api/v1/project/{project}/jobs/import".to_string(),
                200,
                "success".to_string()
            ),
            ("POST /api/v1/job/{id}/run".into(), 200, "success".into()),
            (
                "POST /api/v1/execution/{id}/abort".into(),
                200,
                "success".into()
            ),
            (
                "POST /api/v1/project/{project}/jobs/import".into(),
                400,
                "error".into()
            ),
            ("DELETE /api/v1/job/{id}".into(), 204, "success".into()),
        ]
    );
    assert_eq!(events[1].event.target, format!("/api/v1/job/{job}/run"));
    assert!(events[0].event.source.starts_with("127.0.0.1:"));

    // Each event carries what the committed schema requires.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/json/audit_event.v1.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for e in &trail {
        // As served: the same record, flattened beside its `seq`.
        let e = serde_json::to_value(e).unwrap();
        for field in schema["required"].as_array().unwrap() {
            let f = field.as_str().unwrap();
            assert!(!e[f].is_null(), "audit event lacks `{f}`: {e}");
        }
    }

    // The CLI shows them.
    let (code, stdout, _) = stack.cli(&["audit", "tail", "-n", "2"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("DELETE /api/v1/job/{id}"), "{stdout}");
}

/// The audit publish once retried for 120 s inside the response and, when
/// it failed for good, only logged it, after the change had happened. Now
/// the attempt is recorded first, and a call that cannot be recorded does
/// not happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_be_audited_is_refused_and_changes_nothing() {
    let stack = Stack::start().await;
    let (status, _) = stack
        .post_json("/projects", &serde_json::json!({"name": "before"}))
        .await;
    assert_eq!(status, 201);
    stack.audit_trail(1).await;

    // The audit stream refuses every new record: full, and told to discard new ones.
    let mut audit = stack.js.get_stream("OUTPOST_AUDIT").await.unwrap();
    let mut config = audit.info().await.unwrap().config.clone();
    config.max_messages = audit.info().await.unwrap().state.messages as i64;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    stack.js.update_stream(&config).await.unwrap();

    let started = std::time::Instant::now();
    let (status, body) = stack
        .post_json("/projects", &serde_json::json!({"name": "unrecorded"}))
        .await;
    let waited = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorCode"], "api.error.audit-unavailable", "{body}");
    println!("refused after {waited:?}");
    let projects: Value = stack.get_json("/projects").await;
    let names: Vec<&str> = projects
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"before") && !names.contains(&"unrecorded"),
        "{names:?}"
    );

    // Once records are taken again, so are calls.
    config.max_messages = -1;
    config.discard = async_nats::jetstream::stream::DiscardPolicy::Old;
    stack.js.update_stream(&config).await.unwrap();
    let (status, body) = stack
        .post_json("/projects", &serde_json::json!({"name": "unrecorded"}))
        .await;
    assert_eq!(status, 201, "{body}");
}
