//! Workflow planning: pure functions from a run request to step dispatches,
//! and from a finished step to what happens next.
//!
//! A [`Run`] is the orchestrator's per-execution record in `OUTPOST_RUNS`. It
//! is rewritten with compare-and-set, so two orchestrator replicas, or one
//! seeing a redelivery, agree on every transition.

use std::collections::BTreeMap;

use outpost_schemas::job::{option_env_name, LogLevel, NodeDispatch, Strategy, Target};
use outpost_schemas::node::Node;
use outpost_schemas::{
    ExecutionFinished, ExecutionOutcome, ExecutionRequested, Header, StepCommand, StepDispatched,
    StepFinished, StepNo, StepOutcome,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub target: Target,
    pub command: StepCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub execution_id: Uuid,
    /// Random, set by the orchestrator when it stores the run, and known
    /// only to the control plane (runners cannot read `OUTPOST_RUNS`). It
    /// salts the dedup ids of the control plane's events, so that a runner
    /// cannot pre-empt them by publishing first under a guessed id.
    #[serde(default, skip_serializing_if = "Uuid::is_nil")]
    pub nonce: Uuid,
    pub project: String,
    pub job_id: Uuid,
    pub job_name: String,
    pub keepgoing: bool,
    pub loglevel: LogLevel,
    pub env: BTreeMap<String, String>,
    /// Options whose values only the claiming runner receives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secure_options: Vec<String>,
    pub steps: Vec<PlannedStep>,
    /// The step in flight (1-based).
    pub current: StepNo,
    pub failed: Vec<StepNo>,
    pub abort_requested: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Finish>,
    /// For a job with `nodefilters`: the whole workflow is one dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_run: Option<NodeRunPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRunPlan {
    /// The filter with `${option.*}` substituted.
    pub filter: String,
    pub dispatch: NodeDispatch,
    pub strategy: Strategy,
    pub step_keepgoing: bool,
    /// Resolved by the orchestrator from the inventory, ranked.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub outcome: ExecutionOutcome,
    pub skipped: Vec<StepNo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

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

impl Run {
    /// The dispatch message for the current step.
    pub fn dispatch(&self) -> StepDispatched {
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

    pub fn finished_event(&self) -> Option<ExecutionFinished> {
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

    fn remaining_after(&self, step: StepNo) -> Vec<StepNo> {
        (step + 1..=self.steps.len() as StepNo).collect()
    }

    /// Applies a finished step. Returns false when the event changes nothing
    /// (a duplicate, a stale step, or a run already over).
    pub fn on_step_finished(&mut self, f: &StepFinished) -> bool {
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
            skipped: self.remaining_after(f.step),
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
    pub fn set_nodes(&mut self, nodes: Vec<Node>) {
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
    pub fn refuse(&mut self, reason: String) {
        self.finished = Some(Finish {
            outcome: ExecutionOutcome::Failed,
            skipped: (1..=self.steps.len() as StepNo).collect(),
            reason: Some(reason),
        });
    }

    /// Routes every step of a node job to one target.
    pub fn route_all(&mut self, target: Target) {
        for s in &mut self.steps {
            s.target = target.clone();
        }
    }

    /// Records an abort. When `current_unclaimed` the step in flight never
    /// started (and now never will), so the run ends here; otherwise it ends
    /// when the runner reports the killed step.
    pub fn on_abort(&mut self, current_unclaimed: bool) -> bool {
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

#[cfg(test)]
mod tests;
