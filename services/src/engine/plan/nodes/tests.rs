//! Data-driven: node jobs walked through their node runs, the steps that
//! run once between them, and a node-step reference's children.
use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use outpost_schemas::node::Node;
use outpost_schemas::*;
use uuid::Uuid;

use super::super::{plan, ControlStep, RunPlan};
use super::*;

fn run_of(yaml: &str, nodes: &[&str]) -> Run {
    let job = crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap()
        .remove(0);
    let req = ExecutionRequested {
        header: Header {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::from_u128(1),
            time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        },
        execution_id: Uuid::from_u128(42),
        project: "default".into(),
        job_id: Uuid::from_u128(7),
        job,
        options: Default::default(),
        requested_by: "alice".into(),
        parent: None,
        retry: None,
    };
    let mut run = plan(&req);
    run.set_nodes(
        nodes
            .iter()
            .map(|n| Node {
                nodename: n.to_string(),
                hostname: format!("{n}.example"),
                username: None,
                port: None,
                tags: BTreeSet::new(),
                attributes: Default::default(),
            })
            .collect(),
    );
    run
}

fn finished(step: u32, outcome: StepOutcome, reason: Option<&str>) -> StepFinished {
    StepFinished {
        node_data: Default::default(),
        data: Default::default(),
        header: Header::now(),
        execution_id: Uuid::from_u128(42),
        step,
        runner_id: "r".into(),
        outcome,
        exit_code: None,
        reason: reason.map(str::to_string),
        log_chunks: 0,
        handler: None,
        halted: None,
        log_used: None,
    }
}

fn child_end(step: u32, node: Option<&str>, outcome: StepOutcome) -> JobRefFinished {
    JobRefFinished {
        skipped_nodes: Vec::new(),
        header: Header::now(),
        execution_id: Uuid::from_u128(42),
        step,
        child_execution_id: None,
        outcome,
        failure: (outcome != StepOutcome::Succeeded).then(|| StepFailure {
            reason: "JobFailed".into(),
            message: "Job [child] failed".into(),
            result_code: None,
        }),
        node: node.map(str::to_string),
    }
}

/// What the run asks for now, in one line.
fn next(run: &Run) -> String {
    if let Some(f) = &run.finished {
        return format!(
            "end {:?} skipped {:?} ({})",
            f.outcome,
            f.skipped,
            f.reason.clone().unwrap_or_default()
        );
    }
    let step = run.current_step();
    if let Some(c) = &step.control {
        return format!("step {}: control {c:?}", run.current);
    }
    if step.jobref.is_some() {
        return match run.node_step_ref() {
            true => match run.node_ref_work() {
                NodeRefWork::Start(nodes) => {
                    let names: Vec<&str> = nodes.iter().map(|n| n.nodename.as_str()).collect();
                    format!("step {}: start children for {names:?}", run.current)
                }
                NodeRefWork::Finish(end) => format!(
                    "step {}: ends {:?} ({})",
                    run.current,
                    end.outcome,
                    end.failure.map(|f| f.message).unwrap_or_default()
                ),
            },
            false => format!("step {}: one child", run.current),
        };
    }
    let d = run.dispatch();
    let nr = d.node_run.expect("a node run");
    let steps: Vec<String> = nr
        .steps
        .iter()
        .map(|s| format!("{} {:?}", s.step, s.command))
        .collect();
    format!("step {}: node run of {}", d.step, steps.join(", "))
}

const SPLIT: &str = r#"
- name: split
  nodefilters: {filter: 'tags: web'}
  sequence:
    keepgoing: KG
    commands:
    - exec: echo one
    - exec: echo two
    - jobref: {name: child}
    - type: export-var
      nodeStep: false
      configuration: {export: where, value: eu}
    - exec: echo ${export.where}
"#;

#[test]
fn a_node_job_runs_its_node_steps_in_node_runs_split_around_the_steps_that_run_once() {
    let mut run = run_of(&SPLIT.replace("KG", "false"), &["n1", "n2"]);
    let mut log = vec![next(&run)];
    assert!(run.on_step_finished(&finished(1, StepOutcome::Succeeded, None)));
    log.push(next(&run));
    assert!(run.on_jobref_finished(&child_end(3, None, StepOutcome::Succeeded)));
    log.push(next(&run));
    let ControlStep::ExportVar { key, value } = run.current_step().control.clone().unwrap() else {
        panic!("step 4 exports");
    };
    run.on_export(&key, &value);
    let control = run.control_finished().unwrap();
    assert!(run.on_step_finished(&control));
    log.push(next(&run));
    assert!(run.on_step_finished(&finished(5, StepOutcome::Succeeded, None)));
    log.push(next(&run));
    insta::assert_snapshot!(log.join("\n"));
}

#[test]
fn a_failed_node_run_ends_the_job_unless_it_keeps_going() {
    let mut log = Vec::new();
    for kg in ["false", "true"] {
        let mut run = run_of(&SPLIT.replace("KG", kg), &["n1", "n2"]);
        run.on_step_finished(&finished(
            1,
            StepOutcome::Failed,
            Some("failed on n2 (step 2: exit 1)"),
        ));
        log.push(format!("keepgoing {kg}: {}", next(&run)));
    }
    insta::assert_snapshot!(log.join("\n"));
}

const PER_NODE: &str = r#"
- name: per-node
  nodefilters:
    filter: 'tags: web'
    dispatch: {threadcount: 2, keepgoing: NKG}
  sequence:
    strategy: sequential
    keepgoing: true
    commands:
    - jobref: {name: child, nodeStep: true, args: '-host ${node.name}'}
    - exec: echo after
"#;

#[test]
fn a_node_step_reference_runs_a_child_per_node_threadcount_at_a_time() {
    let mut log = Vec::new();
    for nkg in ["false", "true"] {
        log.push(format!("node keepgoing {nkg}:"));
        let mut run = run_of(&PER_NODE.replace("NKG", nkg), &["n1", "n2", "n3"]);
        log.push(next(&run));
        assert!(run.record_node_child(1, "n1", Uuid::from_u128(101)));
        assert!(run.record_node_child(1, "n2", Uuid::from_u128(102)));
        // Two run: a third waits, and a second record of one is refused.
        assert!(!run.record_node_child(1, "n3", Uuid::from_u128(103)));
        assert!(!run.record_node_child(1, "n1", Uuid::from_u128(111)));
        log.push(next(&run));
        assert!(run.on_jobref_finished(&child_end(1, Some("n1"), StepOutcome::Failed)));
        assert!(!run.on_jobref_finished(&child_end(1, Some("n1"), StepOutcome::Failed)));
        log.push(next(&run));
        assert!(run.on_jobref_finished(&child_end(1, Some("n2"), StepOutcome::Succeeded)));
        log.push(next(&run));
        if let NodeRefWork::Start(more) = run.node_ref_work() {
            for n in more {
                run.record_node_child(1, &n.nodename, Uuid::from_u128(103));
                run.on_jobref_finished(&child_end(1, Some(&n.nodename), StepOutcome::Succeeded));
            }
            log.push(next(&run));
        }
        let NodeRefWork::Finish(end) = run.node_ref_work() else {
            panic!("the step ends");
        };
        assert!(run.on_jobref_finished(&end));
        log.push(next(&run));
    }
    insta::assert_snapshot!(log.join("\n"));
}

#[test]
fn an_abort_starts_no_new_child_and_ends_the_step_when_the_running_ones_end() {
    let mut run = run_of(&PER_NODE.replace("NKG", "true"), &["n1", "n2", "n3"]);
    assert!(run.record_node_child(1, "n1", Uuid::from_u128(101)));
    assert!(run.on_abort(false, AbortCause::Requested));
    assert!(!run.record_node_child(1, "n2", Uuid::from_u128(102)));
    assert_eq!(run.node_ref_work(), NodeRefWork::Start(vec![]));
    run.on_jobref_finished(&child_end(1, Some("n1"), StepOutcome::Aborted));
    let NodeRefWork::Finish(end) = run.node_ref_work() else {
        panic!("the step ends");
    };
    assert_eq!(end.outcome, StepOutcome::Aborted);
    run.on_jobref_finished(&end);
    insta::assert_snapshot!(next(&run));
}

const CAPTURES: &str = r#"
- name: captures
  nodefilters: {filter: 'tags: web'}
  sequence:
    commands:
    - exec: cat /etc/version
    - type: flow-control
      nodeStep: false
      configuration: {halt: 'false'}
    - exec: echo ${data.v} ${data.v@n2} ${1:data.v} ${export.where}
    - scriptfile: /opt/${data.release}/run.sh
"#;

#[test]
fn a_node_runs_captures_stay_in_their_nodes_views_for_the_runner_to_resolve() {
    let mut run = run_of(CAPTURES, &["n1", "n2"]);
    run.on_export("export.where", "eu");
    run.on_export("data.release", "r7");
    let mut end = finished(1, StepOutcome::Succeeded, None);
    // What the node run could not have captured (a step past it, a node
    // it does not have) is not taken.
    end.node_data = [(1, "n1"), (1, "n2"), (3, "n1"), (1, "zz")]
        .iter()
        .map(|(step, n)| NodeData {
            step: *step,
            node: n.to_string(),
            data: [("v".to_string(), format!("v-{n}"))].into(),
        })
        .collect();
    assert!(run.on_step_finished(&end));
    let control = run.control_finished().unwrap();
    assert!(run.on_step_finished(&control));
    let d = run.dispatch();
    let nr = d.node_run.expect("a node run");
    // Data references wait for the node that resolves them; the rest is
    // expanded here.
    assert_eq!(
        nr.steps[0].command,
        StepCommand::Exec {
            command: "echo ${data.v} ${data.v@n2} ${1:data.v} eu".into()
        }
    );
    // A script's path is read once for every node: the global view.
    let StepCommand::Script {
        source: Some(ScriptSource::File { path }),
        ..
    } = &nr.steps[1].command
    else {
        panic!("step 4 is a script file: {:?}", nr.steps[1].command);
    };
    assert_eq!(path, "/opt/r7/run.sh");
    let data: Vec<(&str, &str)> = d
        .vars
        .iter()
        .filter(|(k, _)| k.contains("data."))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // A node's captures never in the global view (`data.v`), as in
    // Rundeck; an export to the data group is there.
    assert_eq!(
        data,
        [
            ("1:data.v@n1", "v-n1"),
            ("1:data.v@n2", "v-n2"),
            ("data.release", "r7"),
            ("data.v@n1", "v-n1"),
            ("data.v@n2", "v-n2"),
        ]
    );
}
