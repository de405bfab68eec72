//! Job references, pure: from a run's job reference step and the job it
//! names to the child's request (or the reason there is none), and from a
//! child's end to its parent's step.
//!
//! Rundeck runs a referenced job inside its parent's execution. Outpost runs
//! it as a child execution with its own id and its own runner selection,
//! linked both ways, which is how one workflow spans several runners. The
//! failure reasons and messages are Rundeck's (`JobReferenceFailureReason`).

use std::collections::BTreeMap;

use outpost_schemas::job::{JobRef, NodeDispatch, NodeFilters, MAX_REFERENCE_DEPTH};
use outpost_schemas::node::Node;
use outpost_schemas::records::JobRecord;
use outpost_schemas::run::Run;
use outpost_schemas::{
    ExecutionFinished, ExecutionOutcome, ExecutionRequested, Header, JobLink, JobRefFinished,
    ParentExecution, StepFailure, StepOutcome,
};
use uuid::Uuid;

/// The child's request for the run's current step, which is `jr`; `found`
/// is the job it names, if any; `node` is the parent's node it runs for,
/// for a `nodeStep: true` reference in a node job. The request's id is a
/// proposal: the orchestrator keeps the first one it recorded.
pub fn child_request(
    run: &Run,
    jr: &JobRef,
    found: Option<&JobRecord>,
    node: Option<&Node>,
) -> Result<ExecutionRequested, Box<JobRefFinished>> {
    let step = run.current;
    // What earlier steps exported (`${export.*}`, `${data.*}`), and for a
    // node step its node, as Rundeck expands a reference's `args` and
    // filter from the shared data context.
    let mut vars = run.exports.clone();
    if let Some(n) = node {
        vars.extend(
            n.context()
                .into_iter()
                .map(|(k, v)| (format!("node.{k}"), v)),
        );
    }
    // Seen from the node for a node step: its own `${data.*}` first.
    let seen_from = node.map(|n| n.nodename.as_str());
    let expand = |t: &str| outpost_schemas::job::data_refs::expand(t, &vars, seen_from);
    let mut expanded = jr.clone();
    expanded.args = expanded.args.map(|a| expand(&a));
    if let Some(nf) = expanded.nodefilters.as_mut() {
        nf.filter = expand(&nf.filter);
    }
    let jr = &expanded;
    let node_name = node.map(|n| n.nodename.clone());
    let fail = |reason: &str, message: String| {
        Box::new(JobRefFinished {
            skipped_nodes: Vec::new(),
            header: Header::now(),
            execution_id: run.execution_id,
            step,
            child_execution_id: None,
            outcome: StepOutcome::Failed,
            failure: Some(StepFailure {
                reason: reason.into(),
                message,
                result_code: None,
            }),
            node: node_name.clone(),
        })
    };
    let project = jr.project.clone().unwrap_or_else(|| run.project.clone());
    let Some(rec) = found else {
        // Named as Rundeck names it: by the uuid unless looked up by name.
        let (how, named) = match (jr.by_name(), jr.uuid) {
            (false, Some(u)) => ("uuid", u.to_string()),
            _ => ("name", jr.label()),
        };
        return Err(fail(
            "NotFound",
            format!("Job [{named}] not found by {how}, project: {project}"),
        ));
    };
    // Looked up by name, the job is in `project`; by uuid Rundeck takes it
    // from any project, and so do we.
    let label = rec.job.full_name();
    let mut chain = run
        .parent
        .as_ref()
        .map(|p| p.chain.clone())
        .unwrap_or_default();
    chain.push(JobLink {
        job_id: run.job_id,
        job_name: run.job_name.clone(),
    });
    if let Some(at) = chain.iter().position(|l| l.job_id == rec.id) {
        let mut names: Vec<&str> = chain[at..].iter().map(|l| l.job_name.as_str()).collect();
        names.push(&label);
        return Err(fail(
            "ReferenceCycle",
            format!("job reference cycle: {}", names.join(" → ")),
        ));
    }
    if chain.len() >= MAX_REFERENCE_DEPTH {
        return Err(fail(
            "ReferenceDepth",
            format!(
                "Job [{label}] would nest job references {} deep; the limit is {MAX_REFERENCE_DEPTH}",
                chain.len() + 1
            ),
        ));
    }
    if !rec.job.execution_enabled {
        if jr.fail_on_disable {
            return Err(fail(
                "ExecutionsDisabled",
                format!("Job [{label}] execution disabled"),
            ));
        }
        // Rundeck: without failOnDisable the step succeeds and the child
        // does not run.
        return Err(Box::new(JobRefFinished {
            outcome: StepOutcome::Succeeded,
            failure: Some(StepFailure {
                reason: "ExecutionsDisabled".into(),
                message: format!(
                    "Job [{label}] execution disabled; skipped (failOnDisable is not set)"
                ),
                result_code: None,
            }),
            ..*fail("", String::new())
        }));
    }
    if rec.job.options.iter().any(|o| o.secure) {
        return Err(fail(
            "InvalidOptions",
            format!(
                "{}: a referenced job with secure options (Job [{label}]); secure values are never passed between executions",
                outpost_schemas::job::NOT_SUPPORTED_YET
            ),
        ));
    }
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    if let Some(args) = &jr.args {
        match outpost_schemas::job::arg_string::parse(args) {
            Ok(pairs) => given.extend(pairs),
            Err(e) => return Err(fail("InvalidOptions", format!("Invalid options: {e}"))),
        }
    }
    if jr.import_options {
        // Only options the child defines; `args` win.
        for (name, value) in &run.options {
            if rec.job.options.iter().any(|o| &o.name == name) {
                given.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    let (options, _) = rec
        .job
        .resolve_options(given)
        .map_err(|e| fail("InvalidOptions", format!("Invalid options: {e}")))?;
    let mut job = rec.job.clone();
    if let Some(nf) = jr.filter_override() {
        let mut dispatch = job
            .nodefilters
            .as_ref()
            .map(|n| n.dispatch.clone())
            .unwrap_or_else(NodeDispatch::default);
        if let Some(d) = &nf.dispatch {
            if let Some(t) = d.threadcount {
                dispatch.threadcount = t.max(1);
            }
            if let Some(k) = d.keepgoing {
                dispatch.keepgoing = k;
            }
            if let Some(a) = &d.rank_attribute {
                dispatch.rank_attribute = Some(a.clone());
            }
            if let Some(o) = d.rank_order {
                dispatch.rank_order = o;
            }
        }
        job.nodefilters = Some(NodeFilters {
            filter: nf.filter.clone(),
            dispatch,
        });
    }
    Ok(ExecutionRequested {
        header: Header::now(),
        execution_id: Uuid::now_v7(),
        project: rec.project.clone(),
        job_id: rec.id,
        job,
        options,
        requested_by: run.requested_by.clone(),
        parent: Some(ParentExecution {
            execution_id: run.execution_id,
            step,
            chain,
            node: node_name.clone(),
            // Rundeck selects a child's nodes from the parent's project
            // unless `childNodes` says the child's own.
            node_project: (!jr.child_nodes && rec.project != run.project)
                .then(|| run.project.clone()),
            intersect: jr.node_intersect().then(|| match node {
                Some(n) => vec![n.nodename.clone()],
                None => run
                    .node_run
                    .as_ref()
                    .map(|nr| nr.nodes.iter().map(|n| n.nodename.clone()).collect())
                    .unwrap_or_default(),
            }),
        }),
        retry: None,
    })
}

/// What a finished child tells its parent's step.
pub fn child_finished(
    child: &Run,
    parent: &ParentExecution,
    fin: &ExecutionFinished,
) -> JobRefFinished {
    let label = &child.job_name;
    let (outcome, failure) = match fin.outcome {
        ExecutionOutcome::Succeeded => (StepOutcome::Succeeded, None),
        ExecutionOutcome::Failed => (
            StepOutcome::Failed,
            Some(StepFailure {
                reason: "JobFailed".into(),
                message: match &fin.reason {
                    Some(r) => format!("Job [{label}] failed: {r}"),
                    None => format!("Job [{label}] failed"),
                },
                result_code: None,
            }),
        ),
        // Rundeck fails the step when the child's own timeout stops it.
        ExecutionOutcome::TimedOut => (
            StepOutcome::Failed,
            Some(StepFailure {
                reason: "JobFailed".into(),
                message: match &fin.reason {
                    Some(r) => format!("Job [{label}] {r}"),
                    None => format!("Job [{label}] timed out"),
                },
                result_code: None,
            }),
        ),
        ExecutionOutcome::Aborted => (
            StepOutcome::Aborted,
            Some(StepFailure {
                reason: "JobFailed".into(),
                message: format!("Job [{label}] was aborted"),
                result_code: None,
            }),
        ),
    };
    JobRefFinished {
        skipped_nodes: Vec::new(),
        header: Header::now(),
        execution_id: parent.execution_id,
        step: parent.step,
        child_execution_id: Some(child.execution_id),
        outcome,
        failure,
        node: parent.node.clone(),
    }
}

/// The step of a run aborted before its child started.
pub fn aborted_unstarted(run: &Run) -> JobRefFinished {
    JobRefFinished {
        skipped_nodes: Vec::new(),
        header: Header::now(),
        execution_id: run.execution_id,
        step: run.current,
        child_execution_id: None,
        outcome: StepOutcome::Aborted,
        failure: Some(StepFailure {
            reason: "JobFailed".into(),
            message: "aborted before the referenced job started".into(),
            result_code: None,
        }),
        node: None,
    }
}

#[cfg(test)]
mod tests;
