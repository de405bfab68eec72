//! Node jobs: the workflow split into node runs around the steps that run
//! once (job references, flow steps), and a `nodeStep: true` job
//! reference's children, one per node.

use outpost_schemas::node::Node;
use outpost_schemas::run::NodeChild;
use outpost_schemas::{Header, JobRefFinished, StepNo, StepOutcome};
use uuid::Uuid;

use super::{NodeRunPlan, PlannedStep, Run, RunPlan};

/// What the orchestrator does next for a `nodeStep: true` job reference.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRefWork {
    /// Start the children of these nodes (none: wait for those running).
    Start(Vec<Node>),
    /// Every child that will run has ended: this is the step's end.
    Finish(JobRefFinished),
}

/// The per-node children of a `nodeStep: true` job reference, pure.
pub trait NodePlan {
    fn node_step_ref(&self) -> bool;
    fn node_ref_work(&self) -> NodeRefWork;
    fn record_node_child(&mut self, step: StepNo, node: &str, child: Uuid) -> bool;
    fn on_node_child_finished(&mut self, f: &JobRefFinished) -> bool;
}

impl NodePlan for Run {
    /// Whether the current step is a job reference run once per node.
    fn node_step_ref(&self) -> bool {
        self.node_run.is_some()
            && self
                .current_step()
                .jobref
                .as_ref()
                .is_some_and(|r| r.node_step)
    }

    /// The children to start now, as Rundeck dispatches a node step: in
    /// node order, `threadcount` at a time; after a failure, no new one
    /// unless the dispatch keeps going; after an abort, none.
    fn node_ref_work(&self) -> NodeRefWork {
        let nr = self.node_run.as_ref().expect("a node job");
        let kids = node_children_of(self);
        let running = kids
            .iter()
            .filter(|k| k.execution_id.is_some() && k.outcome.is_none())
            .count();
        let failed: Vec<&NodeChild> = kids
            .iter()
            .filter(|k| matches!(k.outcome, Some(StepOutcome::Failed)))
            .collect();
        let aborted = kids.iter().any(|k| k.outcome == Some(StepOutcome::Aborted));
        let stop_new =
            self.abort_requested || aborted || (!failed.is_empty() && !nr.dispatch.keepgoing);
        let pending: Vec<&NodeChild> = kids
            .iter()
            .filter(|k| k.execution_id.is_none() && k.outcome.is_none())
            .collect();
        if !stop_new && !pending.is_empty() {
            let room = (nr.dispatch.threadcount.max(1) as usize).saturating_sub(running);
            let start = pending
                .iter()
                .take(room)
                .filter_map(|k| nr.nodes.iter().find(|n| n.nodename == k.node).cloned())
                .collect();
            return NodeRefWork::Start(start);
        }
        if running > 0 {
            return NodeRefWork::Start(Vec::new());
        }
        let (outcome, failure) = if aborted || (self.abort_requested && !pending.is_empty()) {
            (
                StepOutcome::Aborted,
                Some(outpost_schemas::StepFailure {
                    reason: "JobFailed".into(),
                    message: "aborted".into(),
                    result_code: None,
                }),
            )
        } else if !failed.is_empty() {
            let nodes: Vec<String> = failed
                .iter()
                .map(|k| match &k.failure {
                    Some(f) => format!("{} ({})", k.node, f.message),
                    None => k.node.clone(),
                })
                .collect();
            (
                StepOutcome::Failed,
                Some(outpost_schemas::StepFailure {
                    reason: "JobFailed".into(),
                    message: format!("failed on {}", nodes.join("; ")),
                    result_code: None,
                }),
            )
        } else {
            (StepOutcome::Succeeded, None)
        };
        NodeRefWork::Finish(JobRefFinished {
            skipped_nodes: pending.iter().map(|k| k.node.clone()).collect(),
            header: Header::now(),
            execution_id: self.execution_id,
            step: self.current,
            child_execution_id: None,
            outcome,
            failure,
            node: None,
        })
    }

    /// Records the child started for a node, the first one only.
    fn record_node_child(&mut self, step: StepNo, node: &str, child: Uuid) -> bool {
        if self.finished.is_some()
            || self.current != step
            || self.abort_requested
            || !self.node_step_ref()
        {
            return false;
        }
        // Checked again here, under compare-and-set, so that two replicas
        // never run more than `threadcount` at once.
        match self.node_ref_work() {
            NodeRefWork::Start(nodes) if nodes.iter().any(|n| n.nodename == node) => {}
            _ => return false,
        }
        let plan = node_children_of_plan(self.node_run.as_ref());
        let list = self.node_children.entry(step).or_insert(plan);
        match list.iter_mut().find(|k| k.node == node) {
            Some(k) => {
                k.execution_id = Some(child);
                k.recorded_at = Some(chrono::Utc::now());
                true
            }
            None => false,
        }
    }

    /// Records how one node's child ended; the step ends with the last.
    fn on_node_child_finished(&mut self, f: &JobRefFinished) -> bool {
        let Some(node) = &f.node else {
            return false;
        };
        if self.finished.is_some() || f.step != self.current || !self.node_step_ref() {
            return false;
        }
        let plan = node_children_of_plan(self.node_run.as_ref());
        let list = self.node_children.entry(f.step).or_insert(plan);
        let Some(k) = list.iter_mut().find(|k| &k.node == node) else {
            return false;
        };
        if k.outcome.is_some() {
            return false;
        }
        k.outcome = Some(f.outcome);
        k.failure = f.failure.clone();
        if k.execution_id.is_none() {
            k.execution_id = f.child_execution_id;
        }
        true
    }
}

/// The current step's node children: recorded ones, or every node pending.
fn node_children_of(run: &Run) -> Vec<NodeChild> {
    run.node_children
        .get(&run.current)
        .cloned()
        .unwrap_or_else(|| node_children_of_plan(run.node_run.as_ref()))
}

fn node_children_of_plan(nr: Option<&NodeRunPlan>) -> Vec<NodeChild> {
    nr.map(|nr| {
        nr.nodes
            .iter()
            .map(|n| NodeChild {
                node: n.nodename.clone(),
                execution_id: None,
                recorded_at: None,
                outcome: None,
                failure: None,
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Whether a step of a node job runs on the nodes (in a node run), rather
/// than once, between node runs (a job reference, a flow step).
pub fn runs_on_nodes(step: &PlannedStep) -> bool {
    step.command.is_some() && step.jobref.is_none() && step.control.is_none()
}

/// The last step of the node run that starts at `step`: the node steps that
/// follow it, up to the next step that runs once. Outside a node job, and
/// for a step that runs once, the step itself.
pub fn segment_end(run: &Run, step: StepNo) -> StepNo {
    let on_nodes = |n: StepNo| run.steps.get((n - 1) as usize).is_some_and(runs_on_nodes);
    if run.node_run.is_none() || !on_nodes(step) {
        return step;
    }
    let mut end = step;
    while on_nodes(end + 1) {
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests;
