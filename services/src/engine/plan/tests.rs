//! Data-driven: jobs and the runs planned from them; finished-step sequences
//! and where they lead.
use chrono::{TimeZone, Utc};
use outpost_schemas::*;
use uuid::Uuid;

use super::*;

fn request(yaml: &str, options: &[(&str, &str)]) -> ExecutionRequested {
    let job = crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap()
        .remove(0);
    ExecutionRequested {
        header: Header {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::from_u128(1),
            time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        },
        execution_id: Uuid::from_u128(42),
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        requested_by: "alice".into(),
        parent: None,
        retry: None,
    }
}

const SUBSTITUTION: &str = r#"
- name: deploy
  group: web/eu
  options:
  - {name: version}
  - {name: dry-run}
  - {name: unset}
  runnerSelector: {filter: "prod, linux"}
  sequence:
    commands:
    - exec: deploy --version ${option.version} --dry-run=${option.dry-run} --x='${option.unset}' ${job.name}/${job.execid}
    - script: |
        echo "${option.version} ${unknown.thing} ${option.version"
      args: ${option.version} ${job.project}
      scriptInterpreter: bash -e
      runnerSelector: {runnerFilterMode: LOCAL}
"#;

#[test]
fn plan_substitutes_options_and_job_context_and_routes_steps() {
    insta::assert_yaml_snapshot!(plan(&request(
        SUBSTITUTION,
        &[("version", "2.1"), ("dry-run", "true")]
    )));
}

#[test]
fn substitute_leaves_unknown_and_unterminated_references() {
    let vars = [("option.a".to_string(), "1".to_string())].into();
    assert_eq!(
        substitute("${option.a}${option.b} ${option.a", &vars),
        "1${option.b} ${option.a"
    );
    assert_eq!(substitute("$${option.a}}", &vars), "$1}");
}

const THREE: &str = "- name: t\n  sequence:\n    keepgoing: KG\n    commands:\n    - exec: a\n    - exec: b\n    - exec: c\n";

fn finished(step: u32, outcome: StepOutcome) -> StepFinished {
    StepFinished {
        node_data: Default::default(),
        data: Default::default(),
        header: Header::now(),
        execution_id: Uuid::from_u128(42),
        step,
        runner_id: "r".into(),
        outcome,
        exit_code: None,
        reason: None,
        log_chunks: 0,
        handler: None,
        halted: None,
        log_used: None,
    }
}

/// Feeds outcomes to a fresh run; renders each step's effect and the end.
fn walk(keepgoing: bool, outcomes: &[StepOutcome]) -> String {
    let mut run = plan(&request(&THREE.replace("KG", &keepgoing.to_string()), &[]));
    let mut log = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        let changed = run.on_step_finished(&finished(i as u32 + 1, *o));
        log.push(format!(
            "step {} {o:?} -> changed={changed} current={} finished={:?}",
            i + 1,
            run.current,
            run.finished
        ));
    }
    log.join("\n")
}

#[test]
fn transitions() {
    use StepOutcome::*;
    let cases = [
        ("all succeed", false, vec![Succeeded, Succeeded, Succeeded]),
        (
            "first fails, keepgoing false",
            false,
            vec![Failed, Succeeded],
        ),
        (
            "first fails, keepgoing true",
            true,
            vec![Failed, Succeeded, Succeeded],
        ),
        ("middle aborted", true, vec![Succeeded, Aborted, Succeeded]),
    ];
    let rendered: Vec<String> = cases
        .iter()
        .map(|(name, kg, outcomes)| format!("## {name}\n{}", walk(*kg, outcomes)))
        .collect();
    insta::assert_snapshot!(rendered.join("\n\n"));
}

#[test]
fn a_timeout_is_read_per_run_and_ends_the_run_timedout() {
    let yaml = "- name: t\n  timeout: '${option.t}'\n  options:\n  - name: t\n  sequence:\n    commands:\n    - exec: a\n    - exec: b\n";
    let req = request(yaml, &[("t", "1m 30s")]);
    let mut run = plan(&req);
    let deadline = run.deadline.clone().expect("a deadline");
    assert_eq!(deadline.timeout, "1m 30s");
    assert_eq!(deadline.at - req.header.time, chrono::Duration::seconds(90));

    assert!(run.on_abort(false, AbortCause::Timeout));
    assert!(run.on_step_finished(&finished(1, StepOutcome::Aborted)));
    let f = run.finished.clone().unwrap();
    assert_eq!(
        (f.outcome, f.skipped, f.reason.as_deref()),
        (
            ExecutionOutcome::TimedOut,
            vec![2],
            Some("timed out: the job's timeout of 1m 30s passed")
        )
    );

    // No value: blank, so no timeout, as in Rundeck.
    assert_eq!(plan(&request(yaml, &[])).deadline, None);
    // A value that is no timeout: the run is refused, saying why.
    let refused = plan(&request(yaml, &[("t", "soon")])).finished.unwrap();
    assert_eq!(refused.outcome, ExecutionOutcome::Failed);
    assert!(refused
        .reason
        .unwrap()
        .starts_with("timeout `${option.t}` is `soon` for this run"),);
}

/// Rundeck's rule: retried unless it succeeded or someone aborted it; a
/// timeout and a log limit's halt are retried.
#[test]
fn a_failed_run_is_retried_as_rundeck_decides() {
    let yaml = "- name: r\n  retry: '1'\n  timeout: 5s\n  sequence:\n    keepgoing: true\n    commands:\n    - exec: a\n";
    let ended = |change: &dyn Fn(&mut Run)| {
        let mut run = plan(&request(yaml, &[]));
        change(&mut run);
        assert!(run.finished.is_some());
        run.wants_retry()
    };
    let mut table = Vec::new();
    table.push((
        "succeeded",
        ended(&|r| {
            r.on_step_finished(&finished(1, StepOutcome::Succeeded));
        }),
    ));
    table.push((
        "failed",
        ended(&|r| {
            r.on_step_finished(&finished(1, StepOutcome::Failed));
        }),
    ));
    table.push((
        "aborted",
        ended(&|r| {
            r.on_abort(true, AbortCause::Requested);
        }),
    ));
    table.push((
        "timed out",
        ended(&|r| {
            r.on_abort(true, AbortCause::Timeout);
        }),
    ));
    table.push((
        "halted by its log limit, status aborted",
        ended(&|r| {
            let mut f = finished(1, StepOutcome::Aborted);
            f.halted = Some(outpost_schemas::job::HaltStatus::Aborted);
            r.on_step_finished(&f);
        }),
    ));
    table.push((
        "failed, last attempt",
        ended(&|r| {
            r.retry.as_mut().unwrap().of = Some(RetryAttempt {
                attempt: 1,
                previous_execution_id: Uuid::from_u128(1),
                original_execution_id: Uuid::from_u128(1),
                not_before: None,
            });
            r.on_step_finished(&finished(1, StepOutcome::Failed));
        }),
    ));
    let rendered: Vec<String> = table
        .iter()
        .map(|(what, retried)| {
            format!(
                "{what}: {}",
                if *retried { "retried" } else { "not retried" }
            )
        })
        .collect();
    insta::assert_snapshot!(rendered.join("\n"));

    // A child of a job reference is not retried, as in Rundeck.
    let mut req = request(yaml, &[]);
    req.parent = Some(ParentExecution {
        execution_id: Uuid::from_u128(9),
        step: 1,
        chain: vec![],
        node: None,
        node_project: None,
        intersect: None,
    });
    let mut child = plan(&req);
    child.on_step_finished(&finished(1, StepOutcome::Failed));
    assert!(!child.wants_retry());
}

#[test]
fn the_first_cause_of_a_stop_decides_how_the_run_ends() {
    let yaml = "- name: t\n  timeout: 5s\n  sequence:\n    commands:\n    - exec: a\n";
    let mut run = plan(&request(yaml, &[]));
    assert!(run.on_abort(false, AbortCause::Requested));
    assert!(!run.on_abort(false, AbortCause::Timeout));
    assert!(run.on_step_finished(&finished(1, StepOutcome::Aborted)));
    assert_eq!(run.finished.unwrap().outcome, ExecutionOutcome::Aborted);

    // Timed out before any runner claimed the step: it ends at once.
    let mut run = plan(&request(yaml, &[]));
    assert!(run.on_abort(true, AbortCause::Timeout));
    assert_eq!(run.finished.unwrap().outcome, ExecutionOutcome::TimedOut);
}

#[test]
fn a_stale_or_duplicate_finish_changes_nothing() {
    let mut run = plan(&request(&THREE.replace("KG", "false"), &[]));
    assert!(run.on_step_finished(&finished(1, StepOutcome::Succeeded)));
    let before = run.clone();
    assert!(
        !run.on_step_finished(&finished(1, StepOutcome::Succeeded)),
        "duplicate"
    );
    assert!(
        !run.on_step_finished(&finished(3, StepOutcome::Succeeded)),
        "not the current step"
    );
    assert_eq!(run, before);
}

#[test]
fn abort_before_claim_ends_the_run_and_after_claim_waits_for_the_runner() {
    let mut run = plan(&request(&THREE.replace("KG", "false"), &[]));
    assert!(run.on_abort(false, AbortCause::Requested));
    assert!(run.finished.is_none(), "waits for the runner's report");
    assert!(
        !run.on_abort(false, AbortCause::Requested),
        "a second abort changes nothing"
    );
    assert!(run.on_step_finished(&finished(1, StepOutcome::Aborted)));
    let f = run.finished.clone().unwrap();
    assert_eq!(
        (f.outcome, f.skipped),
        (ExecutionOutcome::Aborted, vec![2, 3])
    );

    let mut run = plan(&request(&THREE.replace("KG", "false"), &[]));
    assert!(run.on_abort(true, AbortCause::Requested));
    let f = run.finished.clone().unwrap();
    assert_eq!(
        (f.outcome, f.skipped),
        (ExecutionOutcome::Aborted, vec![1, 2, 3])
    );
}

/// Rundeck's rule (`BaseWorkflowExecutor`): a failed step whose handler
/// succeeds is recovered when the workflow may go on; otherwise it fails.
#[test]
fn an_error_handler_recovers_a_step_as_rundeck_decides() {
    use StepOutcome::*;
    // keepgoing, handler, keepgoingOnSuccess → the step, the run.
    let table = [
        (true, Succeeded, false, Succeeded, "running step 2"),
        (true, Failed, true, Failed, "running step 2"),
        (false, Succeeded, true, Succeeded, "running step 2"),
        (false, Succeeded, false, Failed, "Failed"),
        (false, Failed, true, Failed, "Failed"),
    ];
    for (keepgoing, handler, kgos, step, then) in table {
        let yaml = format!(
            "- name: h\n  sequence:\n    keepgoing: {keepgoing}\n    commands:\n    - exec: 'false'\n      errorhandler:\n        exec: echo handled\n        keepgoingOnSuccess: {kgos}\n    - exec: echo next\n"
        );
        let mut run = plan(&request(&yaml, &[]));
        let h = run.steps[0].errorhandler.as_ref().expect("planned");
        assert_eq!(h.keepgoing_on_success, kgos);
        let mut f = finished(1, Failed);
        f.handler = Some(HandlerOutcome {
            outcome: handler,
            exit_code: None,
            reason: None,
        });
        assert!(run.on_step_finished(&f));
        let now = match &run.finished {
            Some(fin) => format!("{:?}", fin.outcome),
            None => format!("running step {}", run.current),
        };
        assert_eq!(
            (
                handled_outcome(f.handler.as_ref().unwrap(), keepgoing, kgos),
                now.as_str()
            ),
            (step, then),
            "keepgoing {keepgoing}, handler {handler:?}, keepgoingOnSuccess {kgos}"
        );
        assert_eq!(run.failed.contains(&1), step == Failed);
    }
}

/// A job reference step: the child's failure dispatches the handler on
/// the same step; the handler's report then decides it.
#[test]
fn a_failed_child_runs_the_references_handler_before_the_step_ends() {
    let yaml = "- name: p\n  sequence:\n    commands:\n    - jobref: {name: c}\n      errorhandler:\n        exec: echo ${result.reason}\n        keepgoingOnSuccess: true\n    - exec: echo next\n";
    let mut run = plan(&request(yaml, &[]));
    let failed = JobRefFinished {
        skipped_nodes: Vec::new(),
        header: Header::now(),
        execution_id: run.execution_id,
        step: 1,
        child_execution_id: Some(Uuid::from_u128(9)),
        node: None,
        outcome: StepOutcome::Failed,
        failure: Some(StepFailure {
            reason: "JobFailed".into(),
            message: "Job [c] failed".into(),
            result_code: None,
        }),
    };
    assert!(run.on_jobref_finished(&failed));
    assert!(!run.on_jobref_finished(&failed), "a repeat changes nothing");
    let d = run.dispatch();
    assert_eq!(d.step, 1);
    assert_eq!(
        d.recovering.as_ref().map(|r| r.reason.as_str()),
        Some("JobFailed")
    );
    assert!(
        matches!(&d.command, StepCommand::Exec { command } if command == "echo ${result.reason}")
    );
    let mut f = finished(1, StepOutcome::Failed);
    f.handler = Some(HandlerOutcome {
        outcome: StepOutcome::Succeeded,
        exit_code: Some(0),
        reason: None,
    });
    assert!(run.on_step_finished(&f));
    assert_eq!(
        (
            run.current,
            run.finished.is_none(),
            run.recovering.is_none()
        ),
        (2, true, true)
    );
    assert!(run.failed.is_empty());
}
