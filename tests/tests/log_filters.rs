//! Rundeck's log filters over the real stack (on a step, and for the whole
//! workflow in `sequence.pluginConfig`). Key Value Data: a step's output
//! sets `${data.KEY}` for the later steps, even on another runner, since
//! the runner reports what it captured and the orchestrator carries it.
//! The masks, Quiet, Highlight and Render Formatted Data rewrite the output
//! on the runner, so what the API serves is what they left.

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
      exec: echo 'deploy ${data.release_id} as ${data.version} [${data.late}] to ${data.greeting} (step 1 said ${1:data.release_id}, step 2 [${2:data.release_id}])'
    - runnerSelector: {filter: deploy}
      script: |
        echo "token @data.version@ @1:data.version@"
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
            // logData: what that filter captured, as one line at the
            // step's end.
            ("1".into(), r#"{"version":"1.2.3"}"#.into()),
            // stderr is not read, as in Rundeck: `${data.late}` stays as
            // written.
            (
                "2".into(),
                "deploy 42 as 1.2.3 [${data.late}] to world (step 1 said 42, step 2 [${2:data.release_id}])".into()
            ),
            ("3".into(), "token 1.2.3 1.2.3".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_that_cannot_run_are_refused_at_import() {
    let stack = Stack::start().await;
    for (yaml, why) in [
        (
            "- name: a\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: json-mapper\n",
            "not supported yet: log filter type `json-mapper`",
        ),
        (
            "- name: b\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: key-value-data\n          config: {regex: '^x=(.+)$'}\n",
            "has one capture group, so `name` must say which key it sets",
        ),
        (
            "- name: c\n  nodefilters: {filter: 'tags: web'}\n  sequence:\n    commands:\n    - exec: 'true'\n      plugins:\n        LogFilter:\n        - type: key-value-data\n          config: {matchSubstrings: 'true'}\n",
            "not supported yet: log filter `key-value-data`: matchSubstrings `true`",
        ),
    ] {
        let (status, body) = stack.import(yaml).await;
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{why}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rundecks_core_filters_rewrite_the_output_on_the_runner() {
    let stack = Stack::start().await;
    let _runner = start_runner(&stack.nats, "app", &["app"]);
    let yaml = r##"
- name: filtered
  loglevel: INFO
  options:
  - {name: token, secure: true, valueExposed: true, required: true}
  sequence:
    pluginConfig:
      LogFilter:
      - type: mask-passwords
        config: {replacement: '<hidden>'}
    commands:
    - runnerSelector: {filter: app}
      exec: 'echo "token is ${option.token}"; echo "api_key=abc123"; echo "progress 50%"; echo "ERROR disk"; echo "#BEGIN:RUNDECK:DATATYPE:csv"; echo "a,b"; echo "1,2"; echo "#END:RUNDECK:DATATYPE"; echo done'
      plugins:
        LogFilter:
        - type: mask-log-output-regex
          config: {regex: '(api_key=)(\S+)', maskOnlyValue: 'true'}
        - type: quiet-output
          config: {regex: '^progress', quietMatch: 'true'}
        - type: highlight-output
          config: {regex: 'ERROR', fgcolor: red}
        - type: render-datatype
"##;
    let job = stack.load(yaml, "filtered").await;
    let id = stack.run_job(job, &[("token", "t0ps3cret")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let out = stack.output_lines(id).await;
    let lines: Vec<(&str, &str)> = out
        .iter()
        .map(|e| (e.level.as_str(), e.log.as_str()))
        .collect();
    // The quieted line is VERBOSE, below an INFO run's threshold, and the
    // marked block's own lines DEBUG: neither is stored.
    assert_eq!(
        lines,
        [
            ("NORMAL", "token is <hidden>"),
            ("NORMAL", "api_key=[SECURE]"),
            ("NORMAL", "\u{1b}[31mERROR\u{1b}[0m disk"),
            ("NORMAL", "a,b\n1,2"),
            ("NORMAL", "done"),
        ]
    );
    assert_eq!(
        out[3].meta.get("content-data-type").map(String::as_str),
        Some("text/csv"),
        "{:?}",
        out[3]
    );
    assert!(out.iter().all(|e| !e.log.contains("t0ps3cret")));
}
