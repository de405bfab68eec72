//! Data-driven: event sequences and the state they fold into, plus the
//! properties the projector relies on (order and duplicates do not matter).
use chrono::{TimeZone, Utc};
use outpost_schemas::*;
use uuid::Uuid;

use super::*;
use outpost_schemas::state::StepStatus;

const JOB: &str = r#"
- name: deploy
  group: ops
  options:
  - {name: version, value: "1.0"}
  sequence:
    keepgoing: true
    commands:
    - exec: echo one
      description: first step
    - exec: echo two
      runnerSelector: {filter: "linux,eu"}
    - script: echo three
"#;

fn header(sec: u32) -> Header {
    Header {
        schema_version: SCHEMA_VERSION,
        message_id: Uuid::from_u128(0x1000 + sec as u128),
        time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, sec).unwrap(),
    }
}

fn exec_id() -> Uuid {
    Uuid::from_u128(42)
}

fn request() -> Event {
    let job = crate::formats::job_yaml::parse_jobs(JOB).unwrap().remove(0);
    Event::ExecutionRequested(ExecutionRequested {
        header: header(0),
        execution_id: exec_id(),
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job,
        options: [("version".to_string(), "2.0".to_string())].into(),
        requested_by: "alice".into(),
        parent: None,
        retry: None,
    })
}

fn granted(sec: u32, step: u32, runner: &str) -> Event {
    Event::StepGranted(StepGranted {
        last_step: None,
        header: header(sec),
        execution_id: exec_id(),
        step,
        runner_id: runner.into(),
        replica_id: Uuid::from_u128(9),
    })
}

fn claimed(sec: u32, step: u32, runner: &str) -> Event {
    Event::StepClaimed(StepClaimed {
        header: header(sec),
        execution_id: exec_id(),
        step,
        runner_id: runner.into(),
        replica_id: Uuid::from_u128(9),
        hostname: "host-a".into(),
    })
}

fn started(sec: u32, step: u32, runner: &str) -> Event {
    Event::StepStarted(StepStarted {
        header: header(sec),
        execution_id: exec_id(),
        step,
        runner_id: runner.into(),
        pid: Some(1234),
    })
}

fn finished(sec: u32, step: u32, runner: &str, code: i32) -> Event {
    Event::StepFinished(StepFinished {
        node_data: Default::default(),
        data: Default::default(),
        header: header(sec),
        execution_id: exec_id(),
        step,
        runner_id: runner.into(),
        outcome: if code == 0 {
            StepOutcome::Succeeded
        } else {
            StepOutcome::Failed
        },
        exit_code: Some(code),
        reason: (code != 0).then(|| format!("exit code {code}")),
        log_chunks: 2,
        handler: None,
        halted: None,
        log_used: None,
    })
}

fn waiting(sec: u32, step: u32) -> Event {
    Event::StepWaiting(StepWaiting {
        header: header(sec),
        execution_id: exec_id(),
        step,
        reason: "no live runner carries all of the tags [eu,linux]".into(),
    })
}

fn exec_finished(
    sec: u32,
    outcome: ExecutionOutcome,
    failed: Vec<u32>,
    skipped: Vec<u32>,
) -> Event {
    Event::ExecutionFinished(ExecutionFinished {
        header: header(sec),
        execution_id: exec_id(),
        outcome,
        failed_steps: failed,
        skipped_steps: skipped,
        reason: None,
        retry_execution_id: None,
    })
}

fn fold_all(events: &[Event]) -> Option<ExecutionState> {
    let mut state: Option<ExecutionState> = None;
    for e in events {
        match fold(state.as_ref(), e) {
            Folded::Changed(s) => state = Some(*s),
            Folded::Unchanged => {}
            Folded::NeedsRequest => panic!("event before its request"),
        }
    }
    state
}

fn full_run() -> Vec<Event> {
    vec![
        request(),
        granted(1, 1, "_local"),
        claimed(1, 1, "_local"),
        started(2, 1, "_local"),
        finished(3, 1, "_local", 0),
        waiting(4, 2),
        granted(5, 2, "eu-1"),
        claimed(5, 2, "eu-1"),
        started(6, 2, "eu-1"),
        finished(7, 2, "eu-1", 2),
        granted(8, 3, "_local"),
        claimed(8, 3, "_local"),
        started(9, 3, "_local"),
        finished(10, 3, "_local", 0),
        exec_finished(11, ExecutionOutcome::Failed, vec![2], vec![]),
    ]
}

#[test]
fn a_requested_execution_is_queued_with_its_planned_steps() {
    insta::assert_yaml_snapshot!(fold_all(&[request()]));
}

#[test]
fn a_full_run_with_a_failure_under_keepgoing() {
    insta::assert_yaml_snapshot!(fold_all(&full_run()));
}

#[test]
fn waiting_then_abandoned_by_an_abort() {
    let events = vec![
        request(),
        claimed(1, 1, "_local"),
        started(2, 1, "_local"),
        finished(3, 1, "_local", 0),
        waiting(4, 2),
        Event::AbortRequested(AbortRequested {
            header: header(5),
            execution_id: exec_id(),
            requested_by: "bob".into(),
            cause: AbortCause::Requested,
        }),
        exec_finished(6, ExecutionOutcome::Aborted, vec![], vec![2, 3]),
    ];
    insta::assert_yaml_snapshot!(fold_all(&events));
}

#[test]
fn events_before_their_request_ask_to_be_retried() {
    assert_eq!(fold(None, &claimed(1, 1, "_local")), Folded::NeedsRequest);
}

#[test]
fn duplicates_change_nothing() {
    let once = fold_all(&full_run()).unwrap();
    for e in full_run() {
        assert_eq!(
            fold(Some(&once), &e),
            Folded::Unchanged,
            "re-folding {} changed the state",
            e.kind()
        );
    }
}

#[test]
fn any_order_after_the_request_gives_the_same_state() {
    let events = full_run();
    let expected = fold_all(&events).unwrap();
    let rest = &events[1..];
    // Reversed, rotated and interleaved orders: enough to catch an
    // order-dependent field without enumerating all 11! permutations.
    let mut orders: Vec<Vec<Event>> = vec![rest.iter().rev().cloned().collect()];
    for k in 1..rest.len() {
        let mut v = rest.to_vec();
        v.rotate_left(k);
        orders.push(v);
    }
    let (even, odd): (Vec<_>, Vec<_>) = rest
        .iter()
        .cloned()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    orders.push(odd.into_iter().chain(even).map(|(_, e)| e).collect());
    for order in orders {
        let mut all = vec![events[0].clone()];
        all.extend(order);
        assert_eq!(fold_all(&all).unwrap(), expected);
    }
}

fn node_job_events() -> Vec<Event> {
    let yaml = "- name: fleet\n  nodefilters:\n    filter: '.*'\n  sequence:\n    commands:\n    - exec: one\n    - exec: two\n";
    let job = crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap()
        .remove(0);
    let request = Event::ExecutionRequested(ExecutionRequested {
        header: header(0),
        execution_id: exec_id(),
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job,
        options: Default::default(),
        requested_by: "alice".into(),
        parent: None,
        retry: None,
    });
    let node = |name: &str| outpost_schemas::node::Node {
        nodename: name.into(),
        hostname: "h".into(),
        port: None,
        username: None,
        tags: Default::default(),
        attributes: Default::default(),
    };
    let dispatched = Event::StepDispatched(StepDispatched {
        log_filters: Vec::new(),
        header: header(1),
        execution_id: exec_id(),
        step: 1,
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job_name: "fleet".into(),
        target: outpost_schemas::job::Target::Local,
        command: StepCommand::Exec {
            command: "one".into(),
        },
        env: Default::default(),
        secure_options: vec![],
        auth_options: vec![],
        option_storage: Default::default(),
        loglevel: Default::default(),
        node_run: Some(NodeRunDispatch {
            nodes: vec![node("a"), node("b")],
            steps: vec![
                NodeStepCommand {
                    step: 1,
                    command: StepCommand::Exec {
                        command: "one".into(),
                    },
                    errorhandler: None,
                    keepgoing_on_success: false,
                    log_filters: vec![],
                },
                NodeStepCommand {
                    step: 2,
                    command: StepCommand::Exec {
                        command: "two".into(),
                    },
                    errorhandler: None,
                    keepgoing_on_success: false,
                    log_filters: vec![],
                },
            ],
            strategy: Default::default(),
            threadcount: 1,
            node_keepgoing: false,
            step_keepgoing: false,
        }),
        errorhandler: None,
        recovering: None,
        log_used: None,
        loglimit: None,
        vars: Default::default(),
    });
    let nf = |sec: u32, step: u32, n: &str, outcome: Option<StepOutcome>| {
        Event::NodeStepFinished(NodeStepFinished {
            header: header(sec),
            execution_id: exec_id(),
            step,
            node: n.into(),
            runner_id: "edge".into(),
            outcome,
            exit_code: outcome.map(|o| if o == StepOutcome::Succeeded { 0 } else { 1 }),
            reason: None,
            handler: None,
        })
    };
    vec![
        request,
        dispatched,
        nf(2, 1, "a", Some(StepOutcome::Succeeded)),
        nf(3, 1, "b", Some(StepOutcome::Failed)),
        nf(4, 2, "a", Some(StepOutcome::Succeeded)),
        nf(5, 2, "b", None),
        Event::StepFinished(StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: header(6),
            execution_id: exec_id(),
            step: 1,
            runner_id: "edge".into(),
            outcome: StepOutcome::Failed,
            exit_code: None,
            reason: Some("failed on b".into()),
            log_chunks: 3,
            handler: None,
            halted: None,
            log_used: None,
        }),
    ]
}

#[test]
fn node_steps_settle_from_their_nodes_in_any_order() {
    let events = node_job_events();
    let expected = fold_all(&events).unwrap();
    assert_eq!(expected.failed_nodes, ["b"]);
    assert_eq!(expected.successful_nodes, ["a"]);
    let statuses: Vec<_> = expected.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Failed, StepStatus::Succeeded]);
    // Node results before the dispatch, and the summary first of all.
    let mut reordered = vec![
        events[0].clone(),
        events[6].clone(),
        events[3].clone(),
        events[2].clone(),
    ];
    reordered.extend([events[1].clone(), events[5].clone(), events[4].clone()]);
    assert_eq!(fold_all(&reordered).unwrap(), expected);
}

/// A node-step job reference: each node's child in that node's state; a
/// flow step between node runs ends as in any job.
#[test]
fn a_node_step_references_children_show_per_node() {
    let yaml = "- name: fleet\n  nodefilters:\n    filter: '.*'\n  sequence:\n    strategy: sequential\n    keepgoing: true\n    commands:\n    - jobref: {name: child, nodeStep: true}\n    - type: flow-control\n      nodeStep: false\n      configuration: {halt: 'false'}\n";
    let job = crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap()
        .remove(0);
    let request = Event::ExecutionRequested(ExecutionRequested {
        header: header(0),
        execution_id: exec_id(),
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job,
        options: Default::default(),
        requested_by: "alice".into(),
        parent: None,
        retry: None,
    });
    let started = |sec: u32, node: &str, child: u128| {
        Event::JobRefStarted(JobRefStarted {
            header: header(sec),
            execution_id: exec_id(),
            step: 1,
            child_execution_id: Uuid::from_u128(child),
            job_id: Uuid::from_u128(8),
            job_name: "child".into(),
            node: Some(node.into()),
        })
    };
    let ended = |sec: u32, node: Option<&str>, child: Option<u128>, outcome: StepOutcome| {
        Event::JobRefFinished(JobRefFinished {
            skipped_nodes: Vec::new(),
            header: header(sec),
            execution_id: exec_id(),
            step: 1,
            child_execution_id: child.map(Uuid::from_u128),
            outcome,
            failure: (outcome != StepOutcome::Succeeded).then(|| StepFailure {
                reason: "JobFailed".into(),
                message: "Job [child] failed".into(),
                result_code: None,
            }),
            node: node.map(str::to_string),
        })
    };
    let control = Event::StepFinished(StepFinished {
        node_data: Default::default(),
        data: Default::default(),
        header: header(6),
        execution_id: exec_id(),
        step: 2,
        runner_id: subjects::CONTROL_PLANE_SOURCE.into(),
        outcome: StepOutcome::Succeeded,
        exit_code: None,
        reason: None,
        log_chunks: 0,
        handler: None,
        halted: None,
        log_used: None,
    });
    let mut summary = ended(5, None, None, StepOutcome::Failed);
    if let Event::JobRefFinished(e) = &mut summary {
        e.skipped_nodes = vec!["c".into()];
    }
    let events = vec![
        request,
        started(1, "a", 101),
        started(2, "b", 102),
        ended(3, Some("a"), Some(101), StepOutcome::Succeeded),
        ended(4, Some("b"), Some(102), StepOutcome::Failed),
        summary,
        control,
    ];
    let state = fold_all(&events).unwrap();
    let step = &state.steps[0];
    assert_eq!(step.status, StepStatus::Failed);
    assert_eq!(step.nodes["a"].status, StepStatus::Succeeded);
    assert_eq!(
        step.nodes["a"].child_execution_id,
        Some(Uuid::from_u128(101))
    );
    assert_eq!(step.nodes["b"].status, StepStatus::Failed);
    assert_eq!(step.nodes["c"].status, StepStatus::Skipped);
    assert_eq!(state.nodes, ["a", "b", "c"]);
    assert_eq!(state.steps[1].status, StepStatus::Succeeded);
    assert_eq!(state.failed_nodes, ["b"]);
    assert_eq!(state.successful_nodes, ["a"]);
    // Duplicates change nothing.
    let mut twice = events.clone();
    twice.extend(events[1..].iter().cloned());
    assert_eq!(fold_all(&twice).unwrap(), state);
}

/// An abort that came before a reference's child failed: the orchestrator
/// runs no handler, so the step must end with the child's failure, not
/// wait for a handler that never runs.
#[test]
fn a_reference_whose_child_fails_after_an_abort_does_not_wait_for_its_handler() {
    let yaml = "- name: p\n  sequence:\n    commands:\n    - jobref: {name: child}\n      errorhandler: {exec: echo handled}\n    - exec: echo next\n";
    let job = crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap()
        .remove(0);
    let events = vec![
        Event::ExecutionRequested(ExecutionRequested {
            header: header(0),
            execution_id: exec_id(),
            project: "default".into(),
            job_id: Uuid::from_u128(7),
            job,
            options: Default::default(),
            requested_by: "alice".into(),
            parent: None,
            retry: None,
        }),
        Event::JobRefStarted(JobRefStarted {
            header: header(1),
            execution_id: exec_id(),
            step: 1,
            child_execution_id: Uuid::from_u128(9),
            job_id: Uuid::from_u128(8),
            job_name: "child".into(),
            node: None,
        }),
        Event::AbortRequested(AbortRequested {
            header: header(2),
            execution_id: exec_id(),
            requested_by: "alice".into(),
            cause: AbortCause::Requested,
        }),
        Event::JobRefFinished(JobRefFinished {
            header: header(3),
            execution_id: exec_id(),
            step: 1,
            child_execution_id: Some(Uuid::from_u128(9)),
            outcome: StepOutcome::Failed,
            failure: Some(StepFailure {
                reason: "JobFailed".into(),
                message: "Job [child] failed".into(),
                result_code: None,
            }),
            node: None,
            skipped_nodes: Vec::new(),
        }),
        exec_finished(4, ExecutionOutcome::Aborted, vec![1], vec![2]),
    ];
    let state = fold_all(&events).unwrap();
    assert_eq!(state.status, ExecutionStatus::Aborted);
    let statuses: Vec<StepStatus> = state.steps.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [StepStatus::Failed, StepStatus::Aborted]);
}
