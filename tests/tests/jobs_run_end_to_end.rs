//! Jobs run end to end over the real stack: nats-server, the control-plane
//! services, the local runner, and remote runners over WebSocket.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_schemas::Event;
use outpost_services::contract::OutputPage;
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_loads_runs_and_follows_with_the_right_exit_code() {
    let stack = Stack::start().await;
    let _demo = start_runner(&stack.nats, "demo", &["demo"]);
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("jobs.yaml");
    std::fs::write(
        &yaml,
        r#"
- name: hello
  group: demo
  options:
  - name: who
    value: world
  sequence:
    commands:
    - exec: echo "hello, ${option.who}"
    - script: |
        #!/bin/sh
        echo "from $1 via $RD_OPTION_WHO"
      args: ${option.who}
      runnerSelector:
        filter: demo
- name: broken
  sequence:
    commands:
    - exec: echo about to fail; exit 7
"#,
    )
    .unwrap();
    let cli = |args: &[&str]| stack.cli(args);
    let (code, stdout, stderr) = cli(&["job", "load", yaml.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("created") && stdout.contains("demo/hello"),
        "{stdout}"
    );

    let (code, stdout, stderr) = cli(&["run", "demo/hello", "-o", "who=Outpost", "--follow"]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "hello, Outpost\nfrom Outpost via Outpost\n");
    assert!(stderr.contains("succeeded"), "{stderr}");

    let (code, stdout, stderr) = cli(&["run", "broken", "--follow"]);
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.starts_with("about to fail\n"), "{stdout}");
    assert!(
        stderr.contains("failed") && stderr.contains("exit code 7"),
        "{stderr}"
    );

    // A user mistake is one line, exit 2, no backtrace.
    let (code, _, stderr) = cli(&["run", "nope"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no job `nope`"), "{stderr}");
    let (code, _, stderr) = cli(&["run", "demo/hello", "-o", "colour=red"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("has no option `colour`"), "{stderr}");
}

const TWO_STEPS_FIRST_FAILS: &str = r#"
- name: stop
  sequence:
    keepgoing: false
    commands:
    - exec: echo first; exit 3
    - exec: echo second
    - exec: echo third
- name: go-on
  sequence:
    keepgoing: true
    commands:
    - exec: echo first; exit 3
    - exec: echo second
    - exec: echo third
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepgoing_false_stops_and_keepgoing_true_runs_the_rest_but_fails() {
    let stack = Stack::start().await;
    let stop = stack.load(TWO_STEPS_FIRST_FAILS, "stop").await;
    let go_on = stack.load(TWO_STEPS_FIRST_FAILS, "go-on").await;

    let id = stack.run_job(stop, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    let statuses: Vec<StepStatus> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [StepStatus::Failed, StepStatus::Skipped, StepStatus::Skipped]
    );
    assert_eq!(st.steps[0].exit_code, Some(3));
    let lines: Vec<String> = stack.log_texts(id).await;
    assert_eq!(lines, ["first", "exit code 3"]);

    let id = stack.run_job(go_on, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(
        st.status,
        ExecutionStatus::Failed,
        "keepgoing still fails the execution"
    );
    let statuses: Vec<StepStatus> = st.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Failed,
            StepStatus::Succeeded,
            StepStatus::Succeeded
        ]
    );
    let lines: Vec<String> = stack.log_texts(id).await;
    assert_eq!(lines, ["first", "exit code 3", "second", "third"]);
    // The output carries Rundeck's step context.
    let steps: Vec<String> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| e.stepctx)
        .collect();
    assert_eq!(steps, ["1", "1", "2", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonzero_exit_code_fails_the_execution_and_is_recorded() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: exit42\n  sequence:\n    commands:\n    - exec: echo out; echo err >&2; exit 42\n",
            "exit42",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed);
    assert_eq!(st.steps[0].exit_code, Some(42));
    assert_eq!(st.steps[0].reason.as_deref(), Some("exit code 42"));
    assert_eq!(st.steps[0].runner_id.as_deref(), Some("_local"));
    assert!(st.started_at.is_some() && st.finished_at.is_some());
    let out = stack.output_lines(id).await;
    let by_stream: Vec<(String, String, String)> = out
        .into_iter()
        .map(|e| (e.stream, e.level, e.log))
        .collect();
    assert!(by_stream.contains(&("stdout".into(), "NORMAL".into(), "out".into())));
    assert!(by_stream.contains(&("stderr".into(), "ERROR".into(), "err".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_with_different_tags_receive_only_their_own_steps() {
    let stack = Stack::start().await;
    let _a = start_runner(&stack.nats, "runner-a", &["linux", "eu"]);
    let _b = start_runner(&stack.nats, "runner-b", &["windows", "us"]);
    let yaml = r#"
- name: on-a
  multipleExecutions: true
  runnerSelector: {filter: "eu, linux", runnerFilterMode: TAGS, runnerFilterType: TAG_FILTER_AND}
  sequence:
    commands:
    - exec: echo a
- name: on-b
  multipleExecutions: true
  runnerSelector: {filter: windows}
  sequence:
    commands:
    - exec: echo b
"#;
    let on_a = stack.load(yaml, "on-a").await;
    let on_b = stack.load(yaml, "on-b").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push((stack.run_job(on_a, &[]).await, "runner-a"));
        ids.push((stack.run_job(on_b, &[]).await, "runner-b"));
    }
    for (id, expected) in ids {
        let st = stack.wait_terminal(id).await;
        assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
        assert_eq!(st.steps[0].runner_id.as_deref(), Some(expected));
        let claims: Vec<String> = stack
            .events(id)
            .await
            .into_iter()
            .filter_map(|e| match e {
                Event::StepClaimed(c) => Some(c.runner_id),
                _ => None,
            })
            .collect();
        assert_eq!(
            claims,
            [expected],
            "exactly one claim, by the matching runner"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_selector_overrides_the_jobs() {
    let stack = Stack::start().await;
    let _a = start_runner(&stack.nats, "runner-a", &["a"]);
    let _b = start_runner(&stack.nats, "runner-b", &["b"]);
    let job = stack
        .load(
            r#"
- name: mixed
  runnerSelector: {filter: a}
  sequence:
    commands:
    - exec: echo one
    - exec: echo two
      runnerSelector: {filter: b}
    - exec: echo three
      runnerSelector: {runnerFilterMode: LOCAL, runnerFilterType: LOCAL_RUNNER}
"#,
            "mixed",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    let runners: Vec<Option<&str>> = st.steps.iter().map(|s| s.runner_id.as_deref()).collect();
    assert_eq!(
        runners,
        [Some("runner-a"), Some("runner-b"), Some("_local")]
    );
    let lines: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.runner, e.log))
        .collect();
    assert_eq!(
        lines,
        [
            ("runner-a".to_string(), "one".to_string()),
            ("runner-b".into(), "two".into()),
            ("_local".into(), "three".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_with_no_live_runner_waits_says_why_and_runs_when_one_connects() {
    let stack = Stack::start().await;
    let job = stack
        .load("- name: gpu\n  runnerSelector: {filter: gpu}\n  sequence:\n    commands:\n    - exec: echo crunch\n", "gpu")
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack
        .wait_state(id, "a waiting step", |s| {
            s.steps[0].status == StepStatus::Waiting
        })
        .await;
    assert_eq!(st.status, ExecutionStatus::Queued);
    let reason = st.steps[0].reason.clone().unwrap();
    assert!(
        reason.contains("no live runner carries all of the tags [gpu]"),
        "{reason}"
    );

    let _gpu = start_runner(&stack.nats, "gpu-box", &["gpu", "linux"]);
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    assert_eq!(st.steps[0].runner_id.as_deref(), Some("gpu-box"));
    assert_eq!(
        st.steps[0].reason, None,
        "the waiting reason is gone once claimed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_defaulted_validated_and_substituted() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            r#"
- name: opts
  options:
  - {name: env, required: true, values: [dev, prod], enforced: true}
  - {name: greeting, value: hi}
  sequence:
    commands:
    - exec: echo "${option.greeting} ${option.env} $RD_OPTION_ENV ${job.name} ${job.project}"
"#,
            "opts",
        )
        .await;
    let (status, body) = stack.try_run(job, &[]).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`env` is required"),
        "{body}"
    );
    let (status, body) = stack.try_run(job, &[("env", "qa")]).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("must be one of"),
        "{body}"
    );

    let id = stack.run_job(job, &[("env", "prod")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    assert_eq!(st.options.get("greeting").map(String::as_str), Some("hi"));
    let lines: Vec<String> = stack.log_texts(id).await;
    assert_eq!(lines, ["hi prod prod opts default"]);

    // Rundeck's option string, as rd and pyrundeck send it: quoted values,
    // a doubled quote inside one.
    let argstring = |s: &str| {
        serde_json::to_value(outpost_services::contract::RunRequest {
            options: Default::default(),
            arg_string: Some(s.into()),
        })
        .unwrap()
    };
    let (status, body) = stack
        .post_json(
            &format!("/job/{job}/run"),
            &argstring("-env dev -greeting 'it''s a   greeting'"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id: outpost_services::contract::RunAccepted = serde_json::from_value(body).unwrap();
    let st = stack.wait_terminal(id.id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    assert_eq!(
        stack.log_texts(id.id).await,
        ["it's a   greeting dev dev opts default"]
    );
    for (arg_string, message) in [
        ("env dev", "argString: `env` is not an option name"),
        ("-env", "argString: option `-env` has no value"),
        ("-env dev -env prod", "option `env` is given twice"),
        ("-env qa", "must be one of"),
        ("-env dev -colour red", "has no option `colour`"),
    ] {
        let (status, body) = stack
            .post_json(&format!("/job/{job}/run"), &argstring(arg_string))
            .await;
        assert_eq!(status, 400, "{arg_string}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{arg_string}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabytes_of_output_arrive_complete_and_in_order() {
    let stack = Stack::start().await;
    // 100,000 numbered lines of 100 bytes (with newline): 10 MB.
    let job = stack
        .load(
            r#"
- name: chatty
  sequence:
    commands:
    - exec: awk 'BEGIN { pad = sprintf("%090s", ""); for (i = 1; i <= 100000; i++) printf "%08d %s\n", i, pad }'
"#,
            "chatty",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded);
    let lines = stack.output_lines(id).await;
    assert_eq!(lines.len(), 100_000);
    let total: usize = lines.iter().map(|l| l.log.len() + 1).sum();
    assert_eq!(total, 10_000_000);
    for (i, l) in lines.iter().enumerate() {
        let n: usize = l.log[..8].parse().unwrap();
        assert_eq!(n, i + 1, "line {} out of order", i + 1);
    }
    assert!(
        st.steps[0].log_chunks > 10,
        "output was batched into chunks: {}",
        st.steps[0].log_chunks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_kills_a_running_step_and_cancels_a_waiting_one() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: sleepy\n  sequence:\n    commands:\n    - exec: echo started; sleep 1000\n    - exec: echo never\n- name: stuck\n  runnerSelector: {filter: nobody}\n  sequence:\n    commands:\n    - exec: echo never\n",
            "sleepy",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack
        .wait_state(id, "a running step", |s| {
            s.steps[0].status == StepStatus::Running
        })
        .await;
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted);
    assert_eq!(st.steps[0].status, StepStatus::Aborted);
    assert_eq!(st.steps[1].status, StepStatus::Aborted);
    assert!(st.abort_requested);

    let stuck = stack
        .load(
            "- name: stuck\n  runnerSelector: {filter: nobody}\n  sequence:\n    commands:\n    - exec: echo never\n",
            "stuck",
        )
        .await;
    let id = stack.run_job(stuck, &[]).await;
    stack
        .wait_state(id, "a waiting step", |s| {
            s.steps[0].status == StepStatus::Waiting
        })
        .await;
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted);
    // A runner that turns up later must not run the aborted step.
    let _late = start_runner(&stack.nats, "late", &["nobody"]);
    let id2 = stack.run_job(stuck, &[]).await;
    let st2 = stack.wait_terminal(id2).await;
    assert_eq!(st2.status, ExecutionStatus::Succeeded);
    let claims = stack
        .events(id)
        .await
        .into_iter()
        .filter(|e| matches!(e, Event::StepClaimed(_)))
        .count();
    assert_eq!(claims, 0, "the aborted step was never claimed");
}

/// Rundeck's project globals: `project.globals.NAME`, set with the CLI, is
/// `${globals.NAME}`, `@globals.NAME@` and `RD_GLOBALS_NAME` in every job of
/// the project, read when a run is planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_globals_set_with_the_cli_reach_the_projects_jobs() {
    let stack = Stack::start().await;
    let (code, out, err) = stack.cli(&[
        "project",
        "config",
        "set",
        "project.globals.region",
        "eu-west",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "project.globals.region=eu-west");
    let job = stack
        .load(
            "- name: where
  multipleExecutions: true
  sequence:
    commands:
    - exec: printf '%s|%s\\n' 'exec ${globals.region}' \"$RD_GLOBALS_REGION\"
    - script: echo \"script @globals.region@\"
",
            "where",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    stack.wait_terminal(id).await;
    assert_eq!(
        stack.log_texts(id).await,
        ["exec eu-west|eu-west", "script eu-west"]
    );

    let (code, _, err) = stack.cli(&["project", "config", "set", "bad key", "x"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("config key `bad key`"), "{err}");

    let (code, out, err) = stack.cli(&["project", "config", "unset", "project.globals.region"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "");
    let id = stack.run_job(job, &[]).await;
    stack.wait_terminal(id).await;
    // Gone: the reference stays as written (as Rundeck leaves an unknown
    // one), the token is blank.
    assert_eq!(
        stack.log_texts(id).await,
        ["exec ${globals.region}|", "script "]
    );
}

/// Rundeck's option rules on every run: `regex` (a whole match),
/// `multivalued` with its `delimiter` (each part checked against `values`),
/// `multivalueAllSelected`; the error names the option and the rule, and
/// `argString` carries the values as Rundeck's clients send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_rules_are_checked_on_each_run_as_rundeck_checks_them() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            r#"
- name: rules
  multipleExecutions: true
  options:
  - {name: version, required: true, regex: '\d+\.\d+'}
  - {name: hosts, multivalued: true, delimiter: ',', values: [web1, web2, db1], enforced: true, multivalueAllSelected: true}
  sequence:
    commands:
    - exec: echo "v=${option.version} hosts=${option.hosts} env=$RD_OPTION_HOSTS"
"#,
            "rules",
        )
        .await;
    for (given, message) in [
        (
            vec![("version", "latest")],
            "option `version` does not match its regex `\\d+\\.\\d+`: `latest`",
        ),
        (
            vec![("version", "1.2"), ("hosts", "web1,mail")],
            "option `hosts` must be one of [\"web1\", \"web2\", \"db1\"], not `mail`",
        ),
        (vec![], "option `version` is required and has no default"),
    ] {
        let (status, body) = stack.try_run(job, &given).await;
        assert_eq!(status, 400, "{given:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{given:?}: {body}"
        );
    }
    let (status, body) = stack
        .post_json(
            &format!("/job/{job}/run"),
            &serde_json::json!({"argString": "-version 1.2 -hosts \"web1,db1\""}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().parse().unwrap();
    stack.wait_terminal(id).await;
    assert_eq!(
        stack.log_texts(id).await,
        ["v=1.2 hosts=web1,db1 env=web1,db1"]
    );
    // No hosts given: all of them, as `multivalueAllSelected` says.
    let id = stack.run_job(job, &[("version", "3.0")]).await;
    stack.wait_terminal(id).await;
    assert_eq!(
        stack.log_texts(id).await,
        ["v=3.0 hosts=web1,web2,db1 env=web1,web2,db1"]
    );
}

/// Rundeck's `timeout`, read for each run from an option: the step in
/// flight is killed, the rest never run, and the run ends `timedout`. A
/// value that is no timeout is the caller's error, not a failed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_from_an_option_stops_the_run_and_a_bad_one_is_refused() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: bounded\n  multipleExecutions: true\n  timeout: '${option.limit}'\n  options:\n  - name: limit\n    value: 1s\n  sequence:\n    commands:\n    - exec: echo started; exec sleep 1000\n    - exec: echo never\n",
            "bounded",
        )
        .await;
    let (status, body) = stack.try_run(job, &[("limit", "soon")]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("timeout `${option.limit}` is `soon` for this run"),
        "{body}"
    );

    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::TimedOut, "{st:#?}");
    assert_eq!(
        [st.steps[0].status, st.steps[1].status],
        [StepStatus::Aborted, StepStatus::Aborted],
        "{st:#?}"
    );
    assert_eq!(stack.log_texts(id).await, ["started"]);
    let shown = stack.execution(id).await;
    assert_eq!(
        serde_json::to_value(shown.status).unwrap(),
        "timedout",
        "Rundeck's word"
    );

    // A run that ends in time leaves no deadline behind to time it out.
    let quick = stack
        .load(
            "- name: quick\n  timeout: 1h\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "quick",
        )
        .await;
    let id = stack.run_job(quick, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let deadlines = stack
        .js
        .get_key_value(outpost_schemas::subjects::DEADLINES_BUCKET)
        .await
        .unwrap();
    wait_for_async("the deadline forgotten", || async {
        deadlines
            .get(outpost_schemas::subjects::execution_key(id))
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_sent_right_after_the_run_always_ends_it_aborted() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: long\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: sleep 1000\n    - exec: echo never\n",
            "long",
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let id = stack.run_job(job, &[]).await;
        stack.abort(id).await;
        ids.push(id);
    }
    for id in ids {
        let st = stack.wait_terminal(id).await;
        assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
        assert_eq!(st.steps[1].status, StepStatus::Aborted);
    }
}

/// `outpost exec output ID | head` ends quietly when `head` has read enough,
/// as Unix tools do: no panic, no backtrace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_output_piped_into_head_exits_quietly() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: chatty\n  sequence:\n    commands:\n    - exec: seq 1 20000\n",
            "chatty",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' exec output {id} | head -n 1",
            workspace_binary("outpost").display()
        ))
        .env("OUTPOST_API_URL", &stack.api)
        .env("OUTPOST_TOKEN", &stack.admin_token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim(), "", "nothing on stderr");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    // pipefail: the writer ended by SIGPIPE (128 + 13), not by a panic (101).
    assert_eq!(out.status.code(), Some(141), "{out:?}");
}

/// Paging parameters at their extremes: an offset or `after` at `u64::MAX`
/// is past the end (not an overflow), and `maxlines` is capped at 10,000
/// entries (rounded up to a whole log chunk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_parameters_at_their_limits_are_served_not_overflowed() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: long-log\n  sequence:\n    commands:\n    - exec: seq 1 12000\n",
            "long-log",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let max = u64::MAX;
    let page: OutputPage = stack
        .get_json(&format!("/execution/{id}/output?offset={max}"))
        .await;
    assert_eq!(page.entries.len(), 0, "{page:?}");
    assert!(page.completed, "{page:?}");
    let page: OutputPage = stack
        .get_json(&format!("/execution/{id}/output?maxlines=100000000"))
        .await;
    // Pages end on a whole log chunk, so the cap may be passed by the rest
    // of the chunk that reached it, never by the whole log.
    let n = page.entries.len();
    assert!((10_000..12_000).contains(&n), "{n} entries");
    let audit: Vec<outpost_services::contract::AuditEntry> =
        stack.get_json(&format!("/audit?after={max}")).await;
    assert_eq!(audit.len(), 0, "{audit:?}");
}

/// Output is shown only when the step's grant vouches for its runner. When
/// the grant cannot be read, the page fails rather than show output nobody
/// vouched for (the check once answered "shown" then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_whose_grant_cannot_be_read_is_refused_not_shown() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: vouched\n  sequence:\n    commands:\n    - exec: echo vouched-for\n",
            "vouched",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    // The grants live in the event stream; without it, no grant can be
    // read. This API has read none of them yet, so it remembers none.
    stack
        .js
        .delete_stream(outpost_schemas::subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let r = stack
        .http
        .get(stack.url(&format!("/execution/{id}/output")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(!body.contains("vouched-for"), "{body}");
    let error: outpost_services::contract::ErrorBody = serde_json::from_str(&body).unwrap();
    assert!(error.message.contains("grants of"), "{}", error.message);
}
