//! Workflow planning: pure functions from a run request to step dispatches,
//! and from a finished step to what happens next.
//!
//! A [`Run`] (in `schemas`) is the orchestrator's per-execution record in
//! `OUTPOST_RUNS`. It is rewritten with compare-and-set, so two orchestrator
//! replicas, or one seeing a redelivery, agree on every transition.

use std::collections::BTreeMap;

use outpost_schemas::job::{option_env_name, Target};
use outpost_schemas::node::Node;
pub use outpost_schemas::run::{Finish, NodeRunPlan, PlannedStep, Run};
use outpost_schemas::{
    ExecutionFinished, ExecutionOutcome, ExecutionRequested, Header, StepCommand, StepDispatched,
    StepFinished, StepNo, StepOutcome,
};
use uuid::Uuid;

/// Builds the run: substitutes `${option.*}` and `${job.*}` into every step
/// and computes the Rundeck-style environment.
pub fn plan(req: &ExecutionRequested) -> Run {
    let job = &req.job;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for opt in job.options.iter().filter(|o| !o.secure) {
        let value = req.options.get(&opt.name).cloned().unwrap_or_default();
        env.insert(option_env_name(&opt.name), value.clone());
        vars.insert(format!("option.{}", opt.name), value);
    }
    // Secure values are not here: the runner that claims the step fetches
    // them and substitutes `${option.<name>}` itself.
    let secure_options = job
        .options
        .iter()
        .filter(|o| o.secure)
        .map(|o| o.name.clone())
        .collect();
    let job_vars = [
        ("name", job.name.clone()),
        ("group", job.group.clone().unwrap_or_default()),
        ("id", req.job_id.to_string()),
        ("execid", req.execution_id.to_string()),
        ("project", req.project.clone()),
        ("username", req.requested_by.clone()),
        ("loglevel", format!("{:?}", job.loglevel).to_uppercase()),
    ];
    for (k, v) in job_vars {
        env.insert(format!("RD_JOB_{}", k.to_uppercase()), v.clone());
        vars.insert(format!("job.{k}"), v);
    }
    let steps = job
        .sequence
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let command = match (&c.exec, &c.script) {
                (Some(e), _) => StepCommand::Exec {
                    command: substitute(e, &vars),
                },
                (None, Some(s)) => StepCommand::Script {
                    script: substitute(s, &vars),
                    args: c.args.as_ref().map(|a| substitute(a, &vars)),
                    interpreter: c.script_interpreter.clone(),
                },
                (None, None) => unreachable!("job validation requires exec or script"),
            };
            PlannedStep {
                target: job.step_target(i),
                command,
            }
        })
        .collect();
    let node_run = job.nodefilters.as_ref().map(|nf| NodeRunPlan {
        filter: substitute(&nf.filter, &vars),
        dispatch: nf.dispatch.clone(),
        strategy: job.sequence.strategy,
        step_keepgoing: job.sequence.keepgoing,
        nodes: Vec::new(),
    });
    Run {
        node_run,
        nonce: Uuid::nil(),
        execution_id: req.execution_id,
        project: req.project.clone(),
        job_id: req.job_id,
        job_name: job.full_name(),
        keepgoing: job.sequence.keepgoing,
        loglevel: job.loglevel,
        env,
        secure_options,
        steps,
        current: 1,
        failed: Vec::new(),
        abort_requested: false,
        finished: None,
    }
}

pub use outpost_schemas::job::substitute;

/// The run's transitions, pure: what to dispatch, and what a finished step,
/// an abort or a node list does to the run.
pub trait RunPlan {
    fn dispatch(&self) -> StepDispatched;
    fn finished_event(&self) -> Option<ExecutionFinished>;
    fn on_step_finished(&mut self, f: &StepFinished) -> bool;
    fn set_nodes(&mut self, nodes: Vec<Node>);
    fn refuse(&mut self, reason: String);
    fn route_all(&mut self, target: Target);
    fn on_abort(&mut self, current_unclaimed: bool) -> bool;
}

impl RunPlan for Run {
    /// The dispatch message for the current step.
    fn dispatch(&self) -> StepDispatched {
        let step = &self.steps[(self.current - 1) as usize];
        let node_run = self
            .node_run
            .as_ref()
            .map(|nr| outpost_schemas::NodeRunDispatch {
                nodes: nr.nodes.clone(),
                steps: self
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| outpost_schemas::NodeStepCommand {
                        step: i as StepNo + 1,
                        command: s.command.clone(),
                    })
                    .collect(),
                strategy: nr.strategy,
                threadcount: nr.dispatch.threadcount,
                node_keepgoing: nr.dispatch.keepgoing,
                step_keepgoing: nr.step_keepgoing,
            });
        StepDispatched {
            header: Header::now(),
            execution_id: self.execution_id,
            step: self.current,
            project: self.project.clone(),
            job_id: self.job_id,
            job_name: self.job_name.clone(),
            target: step.target.clone(),
            command: step.command.clone(),
            env: self.env.clone(),
            secure_options: self.secure_options.clone(),
            loglevel: self.loglevel,
            node_run,
        }
    }

    fn finished_event(&self) -> Option<ExecutionFinished> {
        let f = self.finished.as_ref()?;
        Some(ExecutionFinished {
            header: Header::now(),
            execution_id: self.execution_id,
            outcome: f.outcome,
            failed_steps: self.failed.clone(),
            skipped_steps: f.skipped.clone(),
            reason: f.reason.clone(),
        })
    }

    /// Applies a finished step. Returns false when the event changes nothing
    /// (a duplicate, a stale step, or a run already over).
    fn on_step_finished(&mut self, f: &StepFinished) -> bool {
        if self.finished.is_some() || f.step != self.current {
            return false;
        }
        if self.node_run.is_some() {
            // One dispatch ran every step on every node: this is the end.
            let (outcome, skipped) = match f.outcome {
                StepOutcome::Succeeded if !self.abort_requested => {
                    (ExecutionOutcome::Succeeded, vec![])
                }
                StepOutcome::Failed if !self.abort_requested => {
                    self.failed.push(f.step);
                    (ExecutionOutcome::Failed, vec![])
                }
                _ => (ExecutionOutcome::Aborted, vec![]),
            };
            self.finished = Some(Finish {
                outcome,
                skipped,
                reason: f.reason.clone(),
            });
            return true;
        }
        let last = self.steps.len() as StepNo;
        match f.outcome {
            StepOutcome::Succeeded => {}
            StepOutcome::Failed => self.failed.push(f.step),
            StepOutcome::Aborted => {}
        }
        let stop = |outcome, reason: Option<String>| Finish {
            outcome,
            skipped: remaining_after(self, f.step),
            reason,
        };
        if f.outcome == StepOutcome::Aborted || self.abort_requested {
            self.finished = Some(stop(ExecutionOutcome::Aborted, Some("aborted".into())));
        } else if f.outcome == StepOutcome::Failed && !self.keepgoing {
            self.finished = Some(stop(
                ExecutionOutcome::Failed,
                Some(format!("step {} failed and keepgoing is false", f.step)),
            ));
        } else if f.step == last {
            let outcome = if self.failed.is_empty() {
                ExecutionOutcome::Succeeded
            } else {
                ExecutionOutcome::Failed
            };
            self.finished = Some(Finish {
                outcome,
                skipped: Vec::new(),
                reason: None,
            });
        } else {
            self.current += 1;
        }
        true
    }

    /// Settles the node set: ranked nodes to run on, or the end of the run
    /// when there are none.
    fn set_nodes(&mut self, nodes: Vec<Node>) {
        let Some(nr) = self.node_run.as_mut() else {
            return;
        };
        if nodes.is_empty() {
            let all: Vec<StepNo> = (1..=self.steps.len() as StepNo).collect();
            self.finished = Some(if nr.dispatch.success_on_empty_node_filter {
                Finish {
                    outcome: ExecutionOutcome::Succeeded,
                    skipped: all,
                    reason: Some(format!(
                        "the node filter `{}` matched no node (successOnEmptyNodeFilter)",
                        nr.filter
                    )),
                }
            } else {
                Finish {
                    outcome: ExecutionOutcome::Failed,
                    skipped: all,
                    reason: Some(format!("the node filter `{}` matched no node", nr.filter)),
                }
            });
        }
        nr.nodes = nodes;
    }

    /// Ends the run before it starts, for a reason found while planning.
    fn refuse(&mut self, reason: String) {
        self.finished = Some(Finish {
            outcome: ExecutionOutcome::Failed,
            skipped: (1..=self.steps.len() as StepNo).collect(),
            reason: Some(reason),
        });
    }

    /// Routes every step of a node job to one target.
    fn route_all(&mut self, target: Target) {
        for s in &mut self.steps {
            s.target = target.clone();
        }
    }

    /// Records an abort. When `current_unclaimed` the step in flight never
    /// started (and now never will), so the run ends here; otherwise it ends
    /// when the runner reports the killed step.
    fn on_abort(&mut self, current_unclaimed: bool) -> bool {
        if self.finished.is_some() || (self.abort_requested && !current_unclaimed) {
            return false;
        }
        self.abort_requested = true;
        if current_unclaimed {
            self.finished = Some(Finish {
                outcome: ExecutionOutcome::Aborted,
                skipped: (self.current..=self.steps.len() as StepNo).collect(),
                reason: Some("aborted before the step was claimed".into()),
            });
        }
        true
    }
}

fn remaining_after(run: &Run, step: StepNo) -> Vec<StepNo> {
    (step + 1..=run.steps.len() as StepNo).collect()
}

#[cfg(test)]
mod tests;
