//! Rundeck's Key Value Data log filter over the real stack (on a step, and
//! for the whole workflow in `sequence.pluginConfig`): a step's output
//! sets `${data.KEY}` for the later steps, even on another runner, since
//! the runner reports what it captured and the orchestrator carries it.

use outpost_schemas::state::ExecutionStatus;
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_data_reaches_the_later_steps_on_another_runner() {
    let stack = Stack::start().await;
    let _build = start_runner(&stack.nats, "build", &["build"]);
    let _deploy = start_runner(&stack.nats, "deploy", &["deploy"]);
    let yaml = r#"
- name: release
  sequence:
    pluginConfig:
      LogFilter:
      - type: key-value-data
        config: {name: greeting, regex: '^hello (.+)$'}
    commands:
    - runnerSelector: {filter: build}
      exec: 'echo RUNDECK:DATA:release_id=42; echo "version: 1.2.3"; echo "RUNDECK:DATA:late = on stderr" >&2; echo hello world'
      plugins:
        LogFilter:
        - type: key-value-data
        - type: key-value-data
          config:
            name: version
            regex: '^version: (.+)$'
            logData: 'true'
    - runnerSelector: {filter: deploy}
      exec: echo 'deploy ${data.release_id} as ${data.version} [${data.late}] to ${data.greeting}'
    - runnerSelector: {filter: deploy}
      script: |
        echo "token @data.version@"
"#;
    let job = stack.load(yaml, "release").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.steps[0].runner_id.as_deref(), Some("build"));
    assert_eq!(st.steps[1].runner_id.as_deref(), Some("deploy"));
    let mut out: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.stepctx, e.log))
        .collect();
    // stdout and stderr of step 1 may interleave either way.
    out.sort();
    assert_eq!(
        out,
        [
            ("1".to_string(), "RUNDECK:DATA:late = on stderr".to_string()),
            ("1".into(), "RUNDECK:DATA:release_id=42".into()),
            ("1".into(), "hello world".into()),
            ("1".into(), "version: 1.2.3".into()),
            // logData: what was captured, as one line at the step's end.
            (
                "1".into(),
                r#"{"greeting":"world","release_id":"42","version":"1.2.3"}"#.into()
            ),
            // stderr is not read, as in Rundeck: `${data.late}` stays as
            // written.
            (
                "2".into(),
                "deploy 42 as 1.2.3 [${data.late}] to world".into()
            ),
            ("3".into(), "token 1.2.3".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_that_cannot_run_are_refused_at_import() {
    let stack = Stack::start().await;
    for (yaml, why) in [
        (
            "- name: a\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: mask-passwords\n",
            "not supported yet: log filter type `mask-passwords`",
        ),
        (
            "- name: b\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: key-value-data\n          config: {regex: '^x=(.+)$'}\n",
            "has one capture group, so `name` must say which key it sets",
        ),
        (
            "- name: c\n  nodefilters: {filter: 'tags: web'}\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: key-value-data\n",
            "not supported yet: a log filter in a job with nodefilters",
        ),
    ] {
        let (status, body) = stack.import(yaml).await;
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{why}: {body}");
    }
}
