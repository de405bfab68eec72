//! The plugin steps Rundeck's core ships, over the real stack: `export-var`
//! (a variable for the later steps), `localexec` (a command on the runner)
//! and `flow-control` (halt with a status), checked against one registry.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_plugin_steps_export_a_variable_run_locally_and_halt_the_workflow() {
    let stack = Stack::start().await;
    let jobs = r#"
- name: flow
  options: [{name: env, value: qa}]
  sequence:
    keepgoing: true
    commands:
    - type: export-var
      nodeStep: false
      configuration: {export: target, group: export, value: 'web-${option.env}'}
    - exec: echo "target ${export.target}"
    - script: echo "token @export.target@"
    - type: localexec
      nodeStep: true
      configuration: {command: 'echo local ${export.target}'}
    - type: flow-control
      configuration: {halt: 'true', fail: 'false'}
    - exec: echo never
- name: stops
  sequence:
    keepgoing: true
    commands:
    - type: flow-control
      configuration: {halt: 'true'}
    - exec: echo never
"#;
    let flow = stack.load(jobs, "flow").await;
    let stops = stack.load(jobs, "stops").await;

    let id = stack.run_job(flow, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let statuses: Vec<StepStatus> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Succeeded,
            StepStatus::Skipped
        ],
        "{st:#?}"
    );
    assert_eq!(
        stack.log_texts(id).await,
        ["target web-qa", "token web-qa", "local web-qa"]
    );
    // The control steps took no runner.
    assert_eq!(st.steps[0].runner_id, None, "{st:#?}");
    assert_eq!(st.steps[4].runner_id, None);

    // A bare halt fails (`fail` defaults to true), keepgoing or not.
    let id = stack.run_job(stops, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Failed);
    assert_eq!(
        st.steps[0].reason.as_deref(),
        Some("flow control: halt, failed")
    );
    assert_eq!(st.steps[1].status, StepStatus::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_plugin_step_type_is_refused_with_the_known_ones_and_nothing_is_stored() {
    let stack = Stack::start().await;
    let (status, body) = stack
        .import("- name: custom\n  sequence:\n    commands:\n    - type: acme-deploy\n      configuration: {env: prod}\n")
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("line 4")
            && message.contains("unknown plugin step type `acme-deploy`")
            && message.contains("`flow-control`"),
        "{message}"
    );
    let jobs: Vec<serde_json::Value> = stack.get_json("/project/default/jobs").await;
    assert!(jobs.is_empty(), "{jobs:?}");
}
