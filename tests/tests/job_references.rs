//! Job references over the real stack: a parent's steps run other jobs as
//! child executions, each on the runners its own selector names; error
//! handlers recover failed steps; aborts reach the children; cycles are
//! refused at import and at run time.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;
use uuid::Uuid;

const JOBS: &str = r#"
- name: child-east
  group: ref
  options:
  - {name: msg, required: true}
  runnerSelector: {filter: east}
  sequence:
    commands:
    - exec: echo "east says ${option.msg}"
- name: child-west
  group: ref
  runnerSelector: {filter: west}
  sequence:
    commands:
    - exec: echo west is failing; exit 3
- name: parent
  group: ref
  retry: '1'
  options:
  - {name: env, value: qa}
  sequence:
    commands:
    - jobref:
        group: ref
        name: child-east
        args: -msg "hello ${option.env}"
    - exec: echo between; exit 4
      errorhandler:
        exec: 'echo "handled ${result.reason} code ${result.resultCode}"' 
        keepgoingOnSuccess: true
    - jobref:
        group: ref
        name: child-west
      errorhandler:
        exec: 'echo "west recovered after ${result.reason} - ${result.message}"' 
        keepgoingOnSuccess: true
    - exec: echo done; test ${job.retryAttempt} -ge 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workflow_spans_two_runners_through_job_references_and_recovers_with_handlers() {
    let stack = Stack::start().await;
    let _east = start_runner(&stack.nats, "east-1", &["east"]);
    let _west = start_runner(&stack.nats, "west-1", &["west"]);
    let parent = stack.load(JOBS, "parent").await;
    // The first attempt fails at its last step, and the parent's retry
    // runs the whole workflow again, children and all.
    let first = stack.run_job(parent, &[("env", "prod")]).await;
    let failed = stack.wait_terminal(first).await;
    assert_eq!(
        failed.status,
        ExecutionStatus::FailedWithRetry,
        "{failed:#?}"
    );
    let id = failed.retry_execution_id.expect("retried");
    let done = stack.wait_terminal(id).await;
    assert_eq!(done.status, ExecutionStatus::Succeeded, "{done:#?}");
    assert_eq!(
        done.retry.as_ref().map(|r| r.previous_execution_id),
        Some(first)
    );

    let exec = stack.execution(id).await;
    let statuses: Vec<StepStatus> = exec.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Succeeded; 4], "{exec:#?}");

    // Step 1: a child on the east runner, linked both ways.
    let east = exec.steps[0]
        .child_execution_id
        .expect("step 1 has a child");
    let east = stack.execution(east).await;
    assert_eq!(east.parent_execution_id, Some(id));
    assert_eq!(east.parent_step, Some(1));
    assert_eq!(east.status, ExecutionStatus::Succeeded);
    assert_eq!(east.steps[0].runner_id.as_deref(), Some("east-1"));
    assert_eq!(
        east.options.get("msg").map(String::as_str),
        Some("hello prod")
    );
    assert!(
        stack
            .log_texts(east.id)
            .await
            .contains(&"east says hello prod".to_string()),
        "{:?}",
        stack.log_texts(east.id).await
    );

    // Step 2: failed locally, recovered by its handler, which saw the exit code.
    let handler = exec.steps[1].errorhandler.as_ref().expect("a handler");
    assert_eq!(handler.status, Some(StepStatus::Succeeded));
    assert!(exec.steps[1]
        .reason
        .as_deref()
        .unwrap_or_default()
        .contains("recovered"));

    // Step 3: a child on the west runner failed; the handler ran on the
    // parent's runner with Rundeck's result context.
    let west = exec.steps[2]
        .child_execution_id
        .expect("step 3 has a child");
    let west = stack.execution(west).await;
    assert_eq!(west.status, ExecutionStatus::Failed);
    assert_eq!(west.parent_execution_id, Some(id));
    assert_eq!(west.steps[0].runner_id.as_deref(), Some("west-1"));
    let handler = exec.steps[2].errorhandler.as_ref().expect("a handler");
    assert_eq!(handler.status, Some(StepStatus::Succeeded));

    // The CLI shows the links both ways.
    let (code, shown, err) = stack.cli(&["exec", "show", &id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        shown.contains(&format!("child execution {}", east.id)),
        "{shown}"
    );
    assert!(shown.contains("error handler succeeded"), "{shown}");
    let (code, shown, err) = stack.cli(&["exec", "show", &west.id.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        shown.contains(&format!("parent:  {id} (step 3)")),
        "{shown}"
    );

    let logs = stack.log_texts(id).await;
    for line in [
        "between",
        "handled NonZeroResultCode code 4",
        "west recovered after JobFailed - Job [ref/child-west] failed: step 1 failed and keepgoing is false",
        "done",
    ] {
        assert!(logs.contains(&line.to_string()), "no `{line}` in {logs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_failure_fails_its_step_and_an_unhandled_one_the_parent() {
    let stack = Stack::start().await;
    let jobs = r#"
- name: breaks
  sequence:
    commands:
    - exec: exit 2
- name: calls-breaks
  sequence:
    commands:
    - jobref: {name: breaks}
    - exec: echo never
- name: calls-nothing
  sequence:
    commands:
    - jobref: {group: no/such, name: job}
"#;
    let calls = stack.load(jobs, "calls-breaks").await;
    let nothing = stack.load(jobs, "calls-nothing").await;
    let id = stack.run_job(calls, &[]).await;
    let done = stack.wait_terminal(id).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.steps[0].status, StepStatus::Failed);
    assert_eq!(done.steps[1].status, StepStatus::Skipped);
    assert_eq!(
        done.steps[0].reason.as_deref(),
        Some("Job [breaks] failed: step 1 failed and keepgoing is false")
    );

    let id = stack.run_job(nothing, &[]).await;
    let done = stack.wait_terminal(id).await;
    assert_eq!(done.status, ExecutionStatus::Failed);
    assert_eq!(done.steps[0].child_execution_id, None);
    assert_eq!(
        done.steps[0].reason.as_deref(),
        Some("Job [no/such/job] not found by name, project: default")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_parent_aborts_its_running_child() {
    let stack = Stack::start().await;
    let jobs = r#"
- name: sleeper
  sequence:
    commands:
    - exec: echo sleeping; sleep 60
- name: waits-for-sleeper
  sequence:
    commands:
    - jobref: {name: sleeper}
"#;
    let parent = stack.load(jobs, "waits-for-sleeper").await;
    let id = stack.run_job(parent, &[]).await;
    let running = stack
        .wait_state(id, "a child started", |s| {
            s.steps[0].child_execution_id.is_some()
        })
        .await;
    let child: Uuid = running.steps[0].child_execution_id.unwrap();
    stack
        .wait_state(child, "the child's step running", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;
    stack.abort(id).await;
    let child = stack.wait_terminal(child).await;
    assert_eq!(child.status, ExecutionStatus::Aborted);
    let parent = stack.wait_terminal(id).await;
    assert_eq!(parent.status, ExecutionStatus::Aborted);
    assert_eq!(parent.steps[0].status, StepStatus::Aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_cycle_is_refused_at_import_naming_it_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let (status, _) = stack
        .import("- name: a\n  sequence:\n    commands:\n    - jobref: {name: b}\n")
        .await;
    assert_eq!(
        status, 200,
        "a reference to a job not there yet is accepted, as in Rundeck"
    );
    let (status, body) = stack
        .import("- name: b\n  sequence:\n    commands:\n    - jobref: {name: c}\n- name: c\n  sequence:\n    commands:\n    - jobref: {name: a}\n")
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("job references would make a cycle: a → b → c → a"),
        "{message}"
    );
    let jobs: Vec<outpost_services::contract::JobSummary> =
        stack.get_json("/project/default/jobs").await;
    let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["a"], "the refused file stored nothing");
}

/// The README's example of a workflow over two runners is a job file that
/// imports as it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_job_reference_example_imports() {
    let yaml = readme_example("deploy-app");
    let stack = Stack::start().await;
    let (status, body) = stack.import(&yaml).await;
    assert_eq!(status, 200, "{body}\n{yaml}");
    let imported: outpost_services::contract::ImportResult = serde_json::from_value(body).unwrap();
    let names: Vec<&str> = imported.succeeded.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["deploy-app", "migrate-db", "release"]);
}
