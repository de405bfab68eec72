//! Every mutating API call leaves exactly one audit event, which matches the
//! committed schema; reads leave none.

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

    let events: Vec<Value> = stack.get_json("/audit").await;
    let summary: Vec<(String, u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
                e["result"].as_str().unwrap().to_string(),
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
    assert_eq!(events[1]["target"], format!("/api/v1/job/{job}/run"));
    assert!(events[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    // Each event carries what the committed schema requires.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../schemas/json/audit_event.v1.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for e in &events {
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
