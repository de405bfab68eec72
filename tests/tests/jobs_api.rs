//! The jobs API: strict Rundeck YAML import, CRUD, and addressing by uuid or
//! by project, group and name.

use outpost_services::contract;
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_yaml_is_rejected_with_field_and_line_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let cases = [
        (
            "- name: good\n  sequence:\n    commands:\n    - exec: echo ok\n- name: typo\n  sequence:\n    commands:\n    - exec: echo hi\n      desciption: x\n",
            vec!["line 9", "[1].sequence.commands[0].desciption", "unknown field `desciption`"],
        ),
        (
            "- name: wrong-type\n  sequence:\n    keepgoing: sometimes\n    commands:\n    - exec: x\n",
            vec!["line 3", "[0].sequence.keepgoing", "expected a boolean"],
        ),
        (
            "- name: broken\n  sequence:\n    commands:\n    - exec: 'unterminated\n",
            vec!["line 5", "while scanning a quoted scalar"],
        ),
    ];
    for (yaml, expected) in cases {
        let (status, body) = stack.import(yaml).await;
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap();
        for e in expected {
            assert!(message.contains(e), "`{message}` lacks `{e}`");
        }
    }
    let jobs: Vec<contract::JobSummary> = stack.get_json("/project/default/jobs").await;
    assert_eq!(
        jobs,
        [],
        "a refused import stores nothing, not even its valid jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_created_read_updated_and_deleted_by_uuid_or_name() {
    let stack = Stack::start().await;
    let v1 = "- name: backup\n  group: db/nightly\n  description: v1\n  sequence:\n    commands:\n    - exec: echo v1\n";
    let id = stack.load(v1, "backup").await;

    let by_name: contract::JobDetail = get(&stack, "/project/default/job/db/nightly/backup").await;
    assert_eq!(by_name.id, id);
    assert_eq!(by_name.job.group.as_deref(), Some("db/nightly"));

    // Re-importing the same name updates in place and keeps the uuid.
    let (status, body) = stack.import(&v1.replace("v1", "v2")).await;
    assert_eq!(status, 200);
    let imported: contract::ImportResult = serde_json::from_value(body).unwrap();
    assert_eq!(
        imported.succeeded[0].action,
        contract::ImportAction::Updated
    );
    assert_eq!(imported.succeeded[0].id, id);
    let job: contract::JobDetail = get(&stack, &format!("/job/{id}")).await;
    assert_eq!(job.job.description, "v2");

    // dupeOption=create refuses, dupeOption=skip leaves it alone.
    let r = stack
        .http
        .post(stack.url("/project/default/jobs/import?dupeOption=create"))
        .body(v1.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r: contract::ImportResult = stack
        .http
        .post(stack.url("/project/default/jobs/import?dupeOption=skip"))
        .body(v1.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.succeeded[0].action, contract::ImportAction::Skipped);

    // PUT by uuid, with a rename: the old name no longer resolves.
    let r = stack
        .http
        .put(stack.url(&format!("/job/{id}")))
        .body("- name: backup-all\n  group: db/nightly\n  sequence:\n    commands:\n    - exec: echo v3\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = stack
        .http
        .get(stack.url("/project/default/job/db/nightly/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let renamed: contract::JobDetail =
        get(&stack, "/project/default/job/db/nightly/backup-all").await;
    assert_eq!(renamed.id, id);

    // The YAML form round-trips through the importer.
    let yaml = stack
        .http
        .get(stack.url(&format!("/job/{id}?format=yaml")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        yaml.contains("name: backup-all") && yaml.contains(&id.to_string()),
        "{yaml}"
    );
    let (status, body) = stack.import(&yaml).await;
    assert_eq!(
        (status, body["succeeded"][0]["action"].clone()),
        (200, "updated".into())
    );

    let r = stack
        .http
        .delete(stack.url(&format!("/job/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = stack
        .http
        .get(stack.url(&format!("/job/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: contract::ErrorBody = r.json().await.unwrap();
    assert!(body.error);
    assert_eq!(body.error_code, "api.error.item.doesnotexist");

    // Projects: `default` exists from the start; others are created.
    let projects: Vec<contract::Project> = get(&stack, "/projects").await;
    assert_eq!(projects[0].name, "default");
    let r = stack
        .http
        .get(stack.url("/project/nope/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn get<T: serde::de::DeserializeOwned>(stack: &Stack, path: &str) -> T {
    let r = stack.http.get(stack.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}
