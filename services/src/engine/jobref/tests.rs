//! Data-driven: a parent's job reference step and the job it names, and
//! the child request (or the step's end) that comes of it.
use std::fmt::Write;

use chrono::{TimeZone, Utc};
use outpost_schemas::*;

use super::*;
use crate::engine::plan::plan;

fn job(yaml: &str) -> outpost_schemas::job::Job {
    crate::formats::job_yaml::parse_jobs(yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
}

fn parent_run(yaml: &str, options: &[(&str, &str)], chain: &[(u128, &str)]) -> Run {
    let req = ExecutionRequested {
        header: Header {
            schema_version: SCHEMA_VERSION,
            message_id: Uuid::from_u128(1),
            time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        },
        execution_id: Uuid::from_u128(42),
        project: "ops".into(),
        job_id: Uuid::from_u128(7),
        job: job(yaml),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        requested_by: "alice".into(),
        parent: (!chain.is_empty()).then(|| ParentExecution {
            execution_id: Uuid::from_u128(41),
            step: 1,
            chain: chain
                .iter()
                .map(|(id, name)| JobLink {
                    job_id: Uuid::from_u128(*id),
                    job_name: name.to_string(),
                })
                .collect(),
            node: None,
            node_project: None,
            intersect: None,
        }),
        retry: None,
    };
    plan(&req)
}

fn record(id: u128, yaml: &str) -> JobRecord {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    JobRecord {
        id: Uuid::from_u128(id),
        project: "ops".into(),
        job: job(yaml),
        created_at: t,
        updated_at: t,
    }
}

/// The verdict in a few stable lines.
fn verdict(run: &Run, child: Option<&JobRecord>) -> String {
    let jr = run.steps[0].jobref.clone().expect("step 1 is a jobref");
    let mut out = String::new();
    match child_request(run, &jr, child, None) {
        Ok(req) => {
            let parent = req.parent.as_ref().unwrap();
            writeln!(out, "child of {} step {}", parent.execution_id, parent.step).unwrap();
            writeln!(out, "job {} ({})", req.job.full_name(), req.job_id).unwrap();
            writeln!(out, "options {:?}", req.options).unwrap();
            writeln!(out, "requested_by {}", req.requested_by).unwrap();
            let chain: Vec<&str> = parent.chain.iter().map(|l| l.job_name.as_str()).collect();
            writeln!(out, "chain {chain:?}").unwrap();
            if let Some(nf) = &req.job.nodefilters {
                writeln!(
                    out,
                    "nodes `{}` threadcount {} keepgoing {}",
                    nf.filter, nf.dispatch.threadcount, nf.dispatch.keepgoing
                )
                .unwrap();
            }
        }
        Err(f) => {
            writeln!(out, "no child: {:?}", f.outcome).unwrap();
            if let Some(x) = f.failure {
                writeln!(out, "{}: {}", x.reason, x.message).unwrap();
            }
        }
    }
    out
}

const CHILD: &str = r#"
- name: deploy
  group: web
  options:
  - {name: env, required: true, values: [qa, prod], enforced: true}
  - {name: version, value: '1.0'}
  - {name: note}
  sequence:
    commands:
    - exec: deploy ${option.env} ${option.version}
"#;

#[test]
fn args_and_imported_options_make_the_childs_options() {
    let run = parent_run(
        r#"
- name: release
  options: [{name: env}, {name: note}, {name: unrelated}]
  sequence:
    commands:
    - jobref:
        group: web
        name: deploy
        args: -version ${option.env}-2 -note "from args"
        importOptions: true
"#,
        &[("env", "prod"), ("note", "imported"), ("unrelated", "x")],
        &[],
    );
    insta::assert_snapshot!(verdict(&run, Some(&record(9, CHILD))));
}

#[test]
fn a_refused_option_fails_the_step_with_rundecks_reason() {
    let run = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: deploy, args: '-env staging'}\n",
        &[],
        &[],
    );
    insta::assert_snapshot!(verdict(&run, Some(&record(9, CHILD))));
}

#[test]
fn a_missing_job_fails_the_step_naming_how_it_was_looked_up() {
    let by_name = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: gone}\n",
        &[],
        &[],
    );
    let by_uuid = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {name: gone, uuid: 00000000-0000-0000-0000-000000000063}\n",
        &[],
        &[],
    );
    insta::assert_snapshot!(format!(
        "{}{}",
        verdict(&by_name, None),
        verdict(&by_uuid, None)
    ));
}

#[test]
fn a_cycle_through_the_chain_is_refused_and_named() {
    // root (id 5) → release (7, this run) → web/deploy (id 5 again).
    let run = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: deploy}\n",
        &[],
        &[(5, "web/deploy")],
    );
    let mut child = record(5, CHILD);
    child.job.options.clear();
    child.job.sequence.commands[0].exec = Some("true".into());
    insta::assert_snapshot!(verdict(&run, Some(&child)));
}

#[test]
fn references_nest_no_deeper_than_the_limit() {
    let chain: Vec<(u128, String)> = (0..MAX_REFERENCE_DEPTH as u128 - 1)
        .map(|i| (100 + i, format!("level-{i}")))
        .collect();
    let chain: Vec<(u128, &str)> = chain.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let run = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: deploy}\n",
        &[],
        &chain,
    );
    let mut child = record(9, CHILD);
    child.job.options.clear();
    child.job.sequence.commands[0].exec = Some("true".into());
    insta::assert_snapshot!(verdict(&run, Some(&child)));
}

#[test]
fn a_disabled_job_is_skipped_unless_fail_on_disable() {
    let mut child = record(9, CHILD);
    child.job.execution_enabled = false;
    let skip = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: deploy}\n",
        &[],
        &[],
    );
    let fail = parent_run(
        "- name: release\n  sequence:\n    commands:\n    - jobref: {group: web, name: deploy, failOnDisable: true}\n",
        &[],
        &[],
    );
    insta::assert_snapshot!(format!(
        "{}{}",
        verdict(&skip, Some(&child)),
        verdict(&fail, Some(&child))
    ));
}

#[test]
fn the_references_node_filter_overrides_the_childs() {
    let run = parent_run(
        r#"
- name: release
  options: [{name: tier, value: web}]
  sequence:
    commands:
    - jobref:
        group: web
        name: deploy
        args: -env qa
        nodefilters:
          filter: 'tags: ${option.tier}'
          dispatch: {threadcount: 3, keepgoing: true}
"#,
        &[("tier", "db")],
        &[],
    );
    insta::assert_snapshot!(verdict(&run, Some(&record(9, CHILD))));
}

#[test]
fn a_childs_end_becomes_its_parents_step_result() {
    let parent = ParentExecution {
        execution_id: Uuid::from_u128(42),
        step: 2,
        chain: vec![],
        node: None,
        node_project: None,
        intersect: None,
    };
    let mut child = parent_run(
        "- name: c\n  sequence:\n    commands:\n    - exec: x\n",
        &[],
        &[],
    );
    child.job_name = "web/deploy".into();
    let mut out = String::new();
    for (outcome, reason) in [
        (ExecutionOutcome::Succeeded, None),
        (
            ExecutionOutcome::Failed,
            Some("step 1 failed and keepgoing is false"),
        ),
        (ExecutionOutcome::Aborted, Some("aborted")),
    ] {
        let fin = ExecutionFinished {
            header: Header::now(),
            execution_id: child.execution_id,
            outcome,
            failed_steps: vec![],
            skipped_steps: vec![],
            reason: reason.map(Into::into),
            retry_execution_id: None,
        };
        let f = child_finished(&child, &parent, &fin);
        writeln!(
            out,
            "{outcome:?} → step {} of {}: {:?} {:?}",
            f.step,
            f.execution_id,
            f.outcome,
            f.failure.map(|x| format!("{}: {}", x.reason, x.message))
        )
        .unwrap();
    }
    insta::assert_snapshot!(out);
}

/// A node-step reference: the node's `${node.*}` in `args` and the filter,
/// the node named on the request, and where the child's nodes come from.
#[test]
fn a_node_step_child_sees_its_node_and_selects_as_rundeck_does() {
    let yaml = r#"
- name: parent
  nodefilters: {filter: 'tags: web'}
  sequence:
    strategy: sequential
    commands:
    - jobref:
        name: deploy
        group: web
        project: other
        nodeStep: true
        args: -env prod -note ${node.name}@${node.hostname}
        nodefilters:
          filter: 'name: ${node.name}'
          dispatch: {nodeIntersect: true}
"#;
    let mut run = parent_run(yaml, &[], &[]);
    let node = |name: &str| outpost_schemas::node::Node {
        nodename: name.into(),
        hostname: format!("{name}.example"),
        port: None,
        username: None,
        tags: Default::default(),
        attributes: Default::default(),
    };
    run.node_run.as_mut().unwrap().nodes = vec![node("web1"), node("web2")];
    let jr = run.steps[0].jobref.clone().unwrap();
    let mut other = record(9, CHILD);
    other.project = "other".into();
    let mut out = String::new();
    for child_nodes in [false, true] {
        let mut jr = jr.clone();
        jr.child_nodes = child_nodes;
        let req = child_request(&run, &jr, Some(&other), Some(&node("web2"))).unwrap();
        let p = req.parent.as_ref().unwrap();
        writeln!(out, "childNodes {child_nodes}:").unwrap();
        writeln!(out, "  options {:?}", req.options).unwrap();
        writeln!(out, "  filter `{}`", req.job.nodefilters.unwrap().filter).unwrap();
        writeln!(
            out,
            "  node {:?} node_project {:?} intersect {:?}",
            p.node, p.node_project, p.intersect
        )
        .unwrap();
    }
    // Not a node step: the intersection is the parent's whole node set.
    let mut once = jr.clone();
    once.node_step = false;
    once.args = Some("-env qa".into());
    let req = child_request(&run, &once, Some(&other), None).unwrap();
    let p = req.parent.as_ref().unwrap();
    writeln!(
        out,
        "nodeStep false: node {:?} intersect {:?}",
        p.node, p.intersect
    )
    .unwrap();
    // A refusal names the node it was for.
    let refused = child_request(&run, &jr, None, Some(&node("web1"))).unwrap_err();
    writeln!(
        out,
        "not found: node {:?}: {}",
        refused.node,
        refused.failure.unwrap().message
    )
    .unwrap();
    insta::assert_snapshot!(out);
}
