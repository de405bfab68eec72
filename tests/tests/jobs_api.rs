//! The jobs API: strict Rundeck YAML import, CRUD, and addressing by uuid or
//! by project, group and name.

use outpost_schemas::state::ExecutionStatus;
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
            vec!["line 3", "[0].sequence.keepgoing", "`sometimes` is not a flag"],
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

const XML_JOB: &str = r#"<joblist>
  <job>
    <context>
      <options preserveOrder='true'>
        <option name='who' value='world' />
      </options>
    </context>
    <description>from XML</description>
    <group>xml</group>
    <name>greet</name>
    <sequence keepgoing='false' strategy='node-first'>
      <command>
        <exec>echo hello ${option.who}</exec>
      </command>
      <command>
        <script><![CDATA[#!/bin/sh
echo "from a script: $1"
]]></script>
        <scriptargs>${option.who}</scriptargs>
      </command>
    </sequence>
  </job>
</joblist>
"#;

/// Rundeck's three job formats go in through the API and the CLI, run, and
/// come out again in each format, reading back to the same jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_load_run_and_export_in_yaml_xml_and_json() {
    let stack = Stack::start().await;
    let r = stack
        .http
        .post(stack.url("/project/default/jobs/import"))
        .header("content-type", "application/xml")
        .body(XML_JOB)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let imported: contract::ImportResult = r.json().await.unwrap();
    let id = imported.succeeded[0].id;
    assert_eq!(imported.succeeded[0].full_name(), "xml/greet");
    let exec = stack.run_job(id, &[("who", "xml")]).await;
    let done = stack.wait_terminal(exec).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:?}");
    assert_eq!(
        stack.log_texts(exec).await,
        ["hello xml", "from a script: xml"]
    );

    // Each format of the one job reads back, through the API, to the same
    // definition.
    let stored: contract::JobDetail = get(&stack, &format!("/job/{id}")).await;
    for format in ["yaml", "xml", "json"] {
        let r = stack
            .http
            .get(stack.url(&format!("/job/{id}?format={format}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.ends_with(format), "{content_type}");
        let text = r.text().await.unwrap();
        let r = stack
            .http
            .put(stack.url(&format!("/job/{id}?fileformat={format}")))
            .body(text.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{format}: {text}");
        let again: contract::JobDetail = get(&stack, &format!("/job/{id}")).await;
        assert_eq!(again.job, stored.job, "{format}:\n{text}");
    }

    // The CLI tells the format by the file's extension, and exports the
    // project as one file, which loads into another project unchanged.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("more.json");
    std::fs::write(
        &json,
        r#"[{"name": "listed", "group": "json", "sequence": {"commands": [{"exec": "true"}]}}]"#,
    )
    .unwrap();
    let (code, stdout, stderr) = stack.cli(&["job", "load", json.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("json/listed"), "{stdout}");
    let (code, exported, stderr) = stack.cli(&["job", "export", "--format", "xml"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(exported.starts_with("<joblist>"), "{exported}");
    let (status, _) = stack
        .post_json("/projects", &serde_json::json!({"name": "copy"}))
        .await;
    assert_eq!(status, 201);
    // Without their ids, as a copy into another project.
    let without_ids: String = exported
        .lines()
        .filter(|l| !l.trim_start().starts_with("<id>") && !l.trim_start().starts_with("<uuid>"))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = stack
        .http
        .post(stack.url("/project/copy/jobs/import"))
        .body(without_ids)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let copied: Vec<contract::JobSummary> = get(&stack, "/project/copy/jobs").await;
    let mut names: Vec<String> = copied
        .iter()
        .map(|j| format!("{}/{}", j.group.clone().unwrap_or_default(), j.name))
        .collect();
    names.sort();
    assert_eq!(names, ["json/listed", "xml/greet"]);
}

/// A broken XML file is refused with its line and element, and nothing of
/// it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_xml_file_names_its_line_and_element_and_stores_nothing() {
    let stack = Stack::start().await;
    let broken = XML_JOB
        .replace("<exec>echo hello", "<exce>echo hello")
        .replace("</exec>", "</exce>");
    let r = stack
        .http
        .post(stack.url("/project/default/jobs/import"))
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let error: contract::ErrorBody = r.json().await.unwrap();
    assert!(
        error.message.contains("line 13")
            && error
                .message
                .contains("joblist/job/sequence/command[1]/exce")
            && error.message.contains("unknown field `exce`"),
        "{}",
        error.message
    );
    let jobs: Vec<contract::JobSummary> = get(&stack, "/project/default/jobs").await;
    assert!(jobs.is_empty(), "{jobs:?}");
}

/// A Rundeck export with a schedule and notifications imports unchanged;
/// nothing is silent about their having no effect yet: the import warns,
/// the API shows the job inactive with why, and the CLI says so. They
/// export back as Rundeck writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_and_notifications_are_stored_and_shown_inactive_with_a_warning() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly.yaml");
    std::fs::write(
        &file,
        r#"- name: nightly
  group: ops
  scheduleEnabled: true
  schedule:
    month: '*'
    time: {hour: '02', minute: '30', seconds: '0'}
    weekday: {day: '*'}
    year: '*'
  timeZone: Europe/Paris
  notification:
    onfailure:
      email: {recipients: 'ops@x.com', subject: FAILED}
      urls: https://hooks.example/rd
      format: json
      httpMethod: post
  notifyAvgDurationThreshold: '+30'
  sequence:
    commands:
    - exec: echo nightly
"#,
    )
    .unwrap();
    let (code, out, err) = stack.cli(&["job", "load", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ops/nightly"), "{out}");
    assert!(
        err.contains("warning: ops/nightly: schedule stored, not active yet"),
        "{err}"
    );
    assert!(
        err.contains("warning: ops/nightly: notification stored, not active yet"),
        "{err}"
    );

    let (status, body) = stack.import(&std::fs::read_to_string(&file).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let imported: contract::ImportResult = serde_json::from_value(body).unwrap();
    assert_eq!(imported.succeeded[0].warnings.len(), 2, "{imported:?}");
    let id = imported.succeeded[0].id;

    let detail: contract::JobDetail = get(&stack, &format!("/job/{id}")).await;
    assert!(!detail.active);
    assert_eq!(detail.inactive.len(), 2);
    let listed: Vec<contract::JobSummary> = get(&stack, "/project/default/jobs").await;
    assert!(listed.iter().any(|j| j.id == id && !j.active));
    let schedule = detail.job.schedule.as_ref().expect("stored");
    assert_eq!(schedule.crontab(), "0 30 02 ? * * *");
    assert_eq!(detail.job.time_zone.as_deref(), Some("Europe/Paris"));

    // Exported in each format and read back, the job is the same.
    for format in ["yaml", "xml", "json"] {
        let text = stack
            .http
            .get(stack.url(&format!("/job/{id}?format={format}")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let again = outpost_services::formats::parse_jobs(
            &text,
            outpost_services::formats::Format::from_name(format).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{format}: {e}\n{text}"));
        assert_eq!(again[0], detail.job, "{format}:\n{text}");
    }

    // A job without either is active.
    let plain = stack
        .load(
            "- name: plain\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "plain",
        )
        .await;
    let detail: contract::JobDetail = get(&stack, &format!("/job/{plain}")).await;
    assert!(detail.active && detail.inactive.is_empty());
}
