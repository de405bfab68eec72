//! Workflow planning: pure functions from a run request to step dispatches,
//! and from a finished step to what happens next.
//!
//! A [`Run`] (in `schemas`) is the orchestrator's per-execution record in
//! `OUTPOST_RUNS`. It is rewritten with compare-and-set, so two orchestrator
//! replicas, or one seeing a redelivery, agree on every transition.

use std::collections::BTreeMap;

use outpost_schemas::job::{
    data_refs, env_suffix, option_env_name, Command, FlowControl, PluginStep, Target,
};
use outpost_schemas::node::Node;
pub use outpost_schemas::run::{
    ControlStep, Deadline, Finish, NodeRunPlan, PlannedHandler, PlannedStep, Run, RunRetry,
};
use outpost_schemas::{
    handled_outcome, AbortCause, ExecutionFinished, ExecutionOutcome, ExecutionRequested, Header,
    JobRefFinished, OptionStorage, ScriptSource, StepCommand, StepDispatched, StepFinished, StepNo,
    StepOutcome,
};
use uuid::Uuid;

/// Builds the run: substitutes `${option.*}` and `${job.*}` into every step
/// and computes the Rundeck-style environment.
pub fn plan(req: &ExecutionRequested) -> Run {
    plan_with(req, &BTreeMap::new())
}

/// As [`plan`], with the project's globals (`${globals.NAME}`,
/// `RD_GLOBALS_NAME`), as the orchestrator read them when it planned.
pub fn plan_with(req: &ExecutionRequested, globals: &BTreeMap<String, String>) -> Run {
    let job = &req.job;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in globals {
        env.insert(format!("RD_GLOBALS_{}", env_suffix(name)), value.clone());
        vars.insert(format!("globals.{name}"), value.clone());
    }
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
        .filter(|o| o.secure && o.value_exposed)
        .map(|o| o.name.clone())
        .collect();
    let auth_options = job
        .options
        .iter()
        .filter(|o| o.auth_only())
        .map(|o| o.name.clone())
        .collect();
    let option_storage = job
        .options
        .iter()
        .filter_map(|o| {
            let path = o.storage_path.clone()?;
            Some((
                o.name.clone(),
                OptionStorage {
                    path,
                    required: o.required,
                },
            ))
        })
        .collect();
    let job_vars = [
        ("name", job.name.clone()),
        ("group", job.group.clone().unwrap_or_default()),
        ("id", req.job_id.to_string()),
        ("execid", req.execution_id.to_string()),
        ("project", req.project.clone()),
        ("username", req.requested_by.clone()),
        ("loglevel", format!("{:?}", job.loglevel).to_uppercase()),
        // Rundeck's retry context: "0" and "false" on a first attempt.
        (
            "retryAttempt",
            req.retry.as_ref().map_or(0, |r| r.attempt).to_string(),
        ),
        ("wasRetry", req.retry.is_some().to_string()),
        (
            "retryInitialExecId",
            req.retry
                .as_ref()
                .map_or("0".into(), |r| r.original_execution_id.to_string()),
        ),
        (
            "retryPrevExecId",
            req.retry
                .as_ref()
                .map_or("0".into(), |r| r.previous_execution_id.to_string()),
        ),
    ];
    for (k, v) in job_vars {
        env.insert(format!("RD_JOB_{}", k.to_uppercase()), v.clone());
        vars.insert(format!("job.{k}"), v);
    }
    // Rundeck's `${execution.*}` context, beside `${job.execid}`.
    for (k, v) in [
        ("id", req.execution_id.to_string()),
        ("user", req.requested_by.clone()),
        ("username", req.requested_by.clone()),
        ("project", req.project.clone()),
        ("loglevel", format!("{:?}", job.loglevel).to_uppercase()),
    ] {
        vars.insert(format!("execution.{k}"), v);
    }
    let steps = job
        .sequence
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| PlannedStep {
            target: job.step_target(i),
            command: runner_command(c, &vars),
            control: control_step(c, &vars),
            // The workflow's first, as Rundeck runs them.
            log_filters: job
                .sequence
                .plugin_config
                .log_filter
                .iter()
                .chain(&c.plugins.log_filter)
                .cloned()
                .collect(),
            jobref: c.jobref.as_ref().map(|r| {
                let mut r = r.clone();
                r.args = r.args.map(|a| substitute(&a, &vars));
                if let Some(nf) = r.nodefilters.as_mut() {
                    nf.filter = substitute(&nf.filter, &vars);
                }
                r
            }),
            errorhandler: c.errorhandler.as_ref().and_then(|h| {
                Some(PlannedHandler {
                    command: runner_command(h, &vars)?,
                    keepgoing_on_success: h.keepgoing_on_success,
                })
            }),
        })
        .collect();
    let node_run = job.nodefilters.as_ref().map(|nf| NodeRunPlan {
        filter: substitute(&nf.filter, &vars),
        dispatch: nf.dispatch.clone(),
        strategy: job.sequence.strategy,
        step_keepgoing: job.sequence.keepgoing,
        nodes: Vec::new(),
    });
    let options = req.options.clone();
    let context = vars.clone();
    // The API checked the values; a child's come from its parent's step.
    // A delayed retry's time counts from when it may start.
    let starts = req
        .retry
        .as_ref()
        .and_then(|r| r.not_before)
        .map_or(req.header.time, |nb| nb.max(req.header.time));
    let mut refused = None;
    let deadline = match job.timeout_for(&req.options) {
        Ok(t) => t.and_then(|(timeout, d)| {
            let at = starts + chrono::Duration::from_std(d).ok()?;
            Some(Deadline { at, timeout })
        }),
        Err(e) => {
            refused = Some(e);
            None
        }
    };
    // Retry is for executions run directly, as in Rundeck: a job
    // reference's child is not retried.
    let retry = match job.retry_for(&req.options) {
        _ if req.parent.is_some() => None,
        Ok(policy) => match (policy, &req.retry) {
            (None, None) => None,
            (policy, of) => Some(RunRetry {
                max: policy.map_or(0, |p| p.max),
                delay_secs: policy.and_then(|p| p.delay).map(|d| d.as_secs()),
                of: of.clone(),
                next: None,
                declined: None,
            }),
        },
        Err(e) => {
            refused.get_or_insert(e);
            None
        }
    };
    let mut run = Run {
        node_run,
        options,
        requested_by: req.requested_by.clone(),
        parent: req.parent.clone(),
        children: BTreeMap::new(),
        node_children: BTreeMap::new(),
        recovering: None,
        nonce: Uuid::nil(),
        execution_id: req.execution_id,
        project: req.project.clone(),
        job_id: req.job_id,
        job_name: job.full_name(),
        keepgoing: job.sequence.keepgoing,
        loglevel: job.loglevel,
        env,
        secure_options,
        auth_options,
        option_storage,
        steps,
        current: 1,
        failed: Vec::new(),
        abort_requested: false,
        timed_out: false,
        deadline,
        loglimit: job.log_limit(),
        log_used: Default::default(),
        retry,
        vars: context,
        exports: BTreeMap::new(),
        finished: None,
    };
    if let Some(reason) = refused {
        run.refuse(reason);
    }
    run
}

pub use outpost_schemas::job::substitute;

/// The work a runner does for an `exec` or script step; none for a job
/// reference. A script's `@key@` tokens are the runner's to replace: only
/// it knows the secure values and the node.
fn runner_command(c: &Command, vars: &BTreeMap<String, String>) -> Option<StepCommand> {
    match c.plugin() {
        Some(PluginStep::LocalExec { command }) => {
            return Some(StepCommand::LocalExec {
                command: substitute(&command, vars),
            })
        }
        Some(PluginStep::OnRunner { plugin, .. }) => {
            return Some(StepCommand::Plugin {
                stored: outpost_schemas::job::stored_keys(&plugin, &c.configuration),
                plugin,
                config: c
                    .configuration
                    .iter()
                    .map(|(k, v)| (k.clone(), substitute(v, vars)))
                    .collect(),
            })
        }
        Some(_) => return None,
        None => {}
    }
    if let Some(e) = &c.exec {
        return Some(StepCommand::Exec {
            command: substitute(e, vars),
        });
    }
    let (script, source) = match (&c.script, &c.scriptfile, &c.scripturl) {
        (Some(s), _, _) => (substitute(s, vars), None),
        (None, Some(path), _) => (
            String::new(),
            Some(ScriptSource::File {
                path: substitute(path, vars),
            }),
        ),
        (None, None, Some(url)) => (
            String::new(),
            Some(ScriptSource::Url {
                url: substitute(url, vars),
            }),
        ),
        (None, None, None) => return None,
    };
    Some(StepCommand::Script {
        script,
        args: c.args.as_ref().map(|a| substitute(a, vars)),
        interpreter: c.script_interpreter.as_ref().map(|i| substitute(i, vars)),
        source,
        interpreter_args_quoted: c.interpreter_args_quoted,
        file_extension: c.file_extension.clone(),
        expand_tokens: c.expand_token_in_script_file,
    })
}

/// The step the orchestrator carries out itself, if this is one.
fn control_step(c: &Command, vars: &BTreeMap<String, String>) -> Option<ControlStep> {
    match c.plugin()? {
        PluginStep::FlowControl(FlowControl::Continue) => {
            Some(ControlStep::FlowControl { halt: None })
        }
        PluginStep::FlowControl(FlowControl::Halt { succeeded }) => {
            Some(ControlStep::FlowControl {
                halt: Some(succeeded),
            })
        }
        PluginStep::ExportVar { group, name, value } => Some(ControlStep::ExportVar {
            key: format!("{group}.{name}"),
            value: substitute(&value, vars),
        }),
        PluginStep::LocalExec { .. } | PluginStep::OnRunner { .. } => None,
    }
}

/// The run's transitions, pure: what to dispatch, and what a finished step,
/// an abort or a node list does to the run.
pub trait RunPlan {
    fn dispatch(&self) -> StepDispatched;
    fn finished_event(&self) -> Option<ExecutionFinished>;
    fn on_step_finished(&mut self, f: &StepFinished) -> bool;
    fn on_jobref_finished(&mut self, f: &JobRefFinished) -> bool;
    fn current_step(&self) -> &PlannedStep;
    fn set_nodes(&mut self, nodes: Vec<Node>);
    fn refuse(&mut self, reason: String);
    fn route_all(&mut self, target: Target);
    fn on_abort(&mut self, current_unclaimed: bool, cause: AbortCause) -> bool;
    fn wants_retry(&self) -> bool;
    fn control_finished(&self) -> Option<StepFinished>;
    fn on_export(&mut self, key: &str, value: &str) -> bool;
}

/// How a stopped run ends: `timedout` when its timeout stopped it.
trait Stopped {
    fn stopped_outcome(&self) -> ExecutionOutcome;
    fn timeout_reason(&self) -> Option<String>;
}

impl Stopped for Run {
    fn stopped_outcome(&self) -> ExecutionOutcome {
        if self.timed_out {
            ExecutionOutcome::TimedOut
        } else {
            ExecutionOutcome::Aborted
        }
    }

    fn timeout_reason(&self) -> Option<String> {
        let timeout = self.deadline.as_ref().map(|d| d.timeout.as_str());
        Some(format!(
            "timed out: the job's timeout of {} passed",
            timeout.unwrap_or("?")
        ))
    }
}

impl RunPlan for Run {
    /// The dispatch message for the current step.
    fn dispatch(&self) -> StepDispatched {
        let step = self.current_step();
        // A job reference step is dispatched to a runner only to run its
        // error handler, once its child failed.
        let (command, errorhandler) = match (&self.recovering, &step.command) {
            (Some(_), _) => (
                step.errorhandler
                    .as_ref()
                    .expect("recovering only with a handler")
                    .command
                    .clone(),
                None,
            ),
            (None, Some(c)) => (
                c.clone(),
                step.errorhandler.as_ref().map(|h| h.command.clone()),
            ),
            (None, None) => unreachable!("a job reference step starts a child, not a dispatch"),
        };
        // What earlier `export-var` steps and log filters set, in the
        // commands.
        // A node step sees `${data.*}` from its own node's view first, so
        // the runner resolves those per node (`node_run`); the rest here.
        // A script's body takes data as `@data.KEY@` tokens only, as
        // Rundeck's does, so a captured value is never read again as one.
        let node_exports: BTreeMap<String, String> = self
            .exports
            .iter()
            .filter(|(k, _)| !data_refs::is_data_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let with_exports = |c: &StepCommand| {
            if self.exports.is_empty() {
                c.clone()
            } else {
                c.map_parts(
                    |body| substitute(body, &node_exports),
                    |t| data_refs::expand(t, &self.exports, None),
                )
            }
        };
        // A script's path or URL is read once for every node, before any
        // node resolves anything: it takes the global view here.
        let node_with_exports = |c: &StepCommand| {
            let mut c = c.substituted(&node_exports);
            if let StepCommand::Script {
                source: Some(source),
                ..
            } = &mut c
            {
                match source {
                    ScriptSource::File { path } => {
                        *path = data_refs::expand(path, &self.exports, None)
                    }
                    ScriptSource::Url { url } => *url = data_refs::expand(url, &self.exports, None),
                }
            }
            c
        };
        let end = segment_end(self, self.current);
        let node_run = self
            .node_run
            .as_ref()
            .map(|nr| outpost_schemas::NodeRunDispatch {
                nodes: nr.nodes.clone(),
                steps: (self.current..=end)
                    .map(|n| {
                        let s = &self.steps[(n - 1) as usize];
                        outpost_schemas::NodeStepCommand {
                            step: n,
                            command: node_with_exports(
                                s.command
                                    .as_ref()
                                    .expect("a node run holds runner steps only"),
                            ),
                            errorhandler: s
                                .errorhandler
                                .as_ref()
                                .map(|h| node_with_exports(&h.command)),
                            keepgoing_on_success: s
                                .errorhandler
                                .as_ref()
                                .is_some_and(|h| h.keepgoing_on_success),
                            log_filters: s.log_filters.clone(),
                        }
                    })
                    .collect(),
                strategy: nr.strategy,
                threadcount: nr.dispatch.threadcount,
                node_keepgoing: nr.dispatch.keepgoing,
                step_keepgoing: nr.step_keepgoing,
            });
        let command = with_exports(&command);
        let mut vars = self.vars.clone();
        vars.extend(self.exports.clone());
        StepDispatched {
            header: Header::now(),
            execution_id: self.execution_id,
            step: self.current,
            project: self.project.clone(),
            job_id: self.job_id,
            job_name: self.job_name.clone(),
            target: step.target.clone(),
            command,
            env: self.env.clone(),
            secure_options: self.secure_options.clone(),
            auth_options: self.auth_options.clone(),
            option_storage: self.option_storage.clone(),
            loglevel: self.loglevel,
            node_run,
            errorhandler,
            recovering: self.recovering.clone(),
            loglimit: self.loglimit,
            log_used: self.loglimit.map(|_| self.log_used.clone()),
            vars,
            log_filters: step.log_filters.clone(),
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
            retry_execution_id: self.retry.as_ref().and_then(|r| r.next),
        })
    }

    /// Applies a finished step. Returns false when the event changes nothing
    /// (a duplicate, a stale step, or a run already over).
    fn on_step_finished(&mut self, f: &StepFinished) -> bool {
        if self.finished.is_some() || f.step != self.current {
            return false;
        }
        if let Some(used) = &f.log_used {
            self.log_used = used.clone();
        }
        // Captured by the step's log filters, as Rundeck's data context:
        // `${data.KEY}`, and `${N:data.KEY}` for this step's own.
        for (k, v) in &f.data {
            self.exports.insert(format!("data.{k}"), v.clone());
            self.exports
                .insert(format!("{}:data.{k}", f.step), v.clone());
        }
        // A node step's captures stay in its node's views (Rundeck copies
        // them to node(N), never to the global view), in step order, so a
        // later step's value wins.
        // Only what the node run could have captured: its steps, its nodes.
        let end = segment_end(self, f.step);
        let mut node_data: Vec<_> = f
            .node_data
            .iter()
            .filter(|d| (f.step..=end).contains(&d.step))
            .filter(|d| {
                self.node_run
                    .as_ref()
                    .is_some_and(|nr| nr.nodes.iter().any(|n| n.nodename == d.node))
            })
            .collect();
        node_data.sort_by_key(|d| d.step);
        for d in node_data {
            for (k, v) in &d.data {
                for key in data_refs::node_capture_keys(d.step, k, &d.node) {
                    self.exports.insert(key, v.clone());
                }
            }
        }
        // A node run covers its step and the node steps after it, up to
        // the next step that runs once.
        let end = segment_end(self, f.step);
        let node_job = self.node_run.is_some();
        if let Some(status) = f.halted {
            // Halted by its log limit: the run stops here, as Rundeck's
            // halt stops the workflow, keepgoing or not.
            if f.outcome != StepOutcome::Succeeded {
                self.failed.push(f.step);
            }
            let outcome = if self.abort_requested {
                self.stopped_outcome()
            } else {
                status.execution_outcome()
            };
            self.recovering = None;
            self.finished = Some(Finish {
                outcome,
                skipped: remaining_after(self, end),
                reason: f.reason.clone(),
            });
            return true;
        }
        let last = self.steps.len() as StepNo;
        let outcome = match (&f.handler, f.outcome) {
            (Some(h), StepOutcome::Failed) => {
                let kgos = self
                    .current_step()
                    .errorhandler
                    .as_ref()
                    .is_some_and(|h| h.keepgoing_on_success);
                handled_outcome(h, self.keepgoing, kgos)
            }
            (_, own) => own,
        };
        match outcome {
            StepOutcome::Succeeded => {}
            StepOutcome::Failed => self.failed.push(f.step),
            StepOutcome::Aborted => {}
        }
        self.recovering = None;
        let stop = |outcome, reason: Option<String>| Finish {
            outcome,
            skipped: remaining_after(self, end),
            reason,
        };
        if outcome == StepOutcome::Aborted || self.abort_requested {
            let reason = if self.timed_out {
                self.timeout_reason()
            } else if node_job {
                f.reason.clone().or_else(|| Some("aborted".into()))
            } else {
                Some("aborted".into())
            };
            self.finished = Some(stop(self.stopped_outcome(), reason));
        } else if outcome == StepOutcome::Failed && !self.keepgoing {
            let generic = format!("step {} failed and keepgoing is false", f.step);
            // A node run's own account names the nodes that failed.
            let reason = match node_job {
                true => f.reason.clone().unwrap_or(generic),
                false => generic,
            };
            self.finished = Some(stop(ExecutionOutcome::Failed, Some(reason)));
        } else if end == last {
            let outcome = if self.failed.is_empty() {
                ExecutionOutcome::Succeeded
            } else {
                ExecutionOutcome::Failed
            };
            let reason = match (node_job, outcome) {
                (true, ExecutionOutcome::Failed) => f.reason.clone(),
                _ => None,
            };
            self.finished = Some(Finish {
                outcome,
                skipped: Vec::new(),
                reason,
            });
        } else {
            self.current = end + 1;
        }
        true
    }

    /// Applies the end of a job reference step's child. A failure with an
    /// error handler dispatches the handler (the step goes on); anything
    /// else ends the step as the child ended.
    fn on_jobref_finished(&mut self, f: &JobRefFinished) -> bool {
        if f.node.is_some() {
            return self.on_node_child_finished(f);
        }
        if self.finished.is_some()
            || f.step != self.current
            || self.recovering.is_some()
            || self.current_step().jobref.is_none()
        {
            return false;
        }
        if f.outcome == StepOutcome::Failed
            && !self.abort_requested
            && self.current_step().errorhandler.is_some()
        {
            self.recovering =
                Some(
                    f.failure
                        .clone()
                        .unwrap_or_else(|| outpost_schemas::StepFailure {
                            reason: "JobFailed".into(),
                            message: "the referenced job failed".into(),
                            result_code: None,
                        }),
                );
            return true;
        }
        self.on_step_finished(&StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: f.header.clone(),
            execution_id: f.execution_id,
            step: f.step,
            runner_id: outpost_schemas::subjects::CONTROL_PLANE_SOURCE.into(),
            outcome: f.outcome,
            exit_code: None,
            reason: f.failure.as_ref().map(|x| x.message.clone()),
            log_chunks: 0,
            handler: None,
            halted: None,
            log_used: None,
        })
    }

    fn current_step(&self) -> &PlannedStep {
        &self.steps[(self.current - 1) as usize]
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
    /// Whether the run, now over, is retried, as Rundeck decides it: it did
    /// not succeed, nobody aborted it (a timeout or a log limit's halt is
    /// retried), and it has attempts left.
    fn wants_retry(&self) -> bool {
        let (Some(f), Some(r)) = (&self.finished, &self.retry) else {
            return false;
        };
        let aborted_by_someone = self.abort_requested && !self.timed_out;
        f.outcome != ExecutionOutcome::Succeeded
            && !aborted_by_someone
            && r.attempt() < r.max
            && r.declined.is_none()
    }

    /// How the current step ends when the orchestrator carries it out
    /// (`flow-control`, `export-var`); none for a runner's step.
    fn control_finished(&self) -> Option<StepFinished> {
        let control = self.current_step().control.as_ref()?;
        let (outcome, reason, halted) = match control {
            ControlStep::FlowControl { halt: None } | ControlStep::ExportVar { .. } => {
                (StepOutcome::Succeeded, None, None)
            }
            ControlStep::FlowControl { halt: Some(true) } => (
                StepOutcome::Succeeded,
                Some("flow control: halt, succeeded".to_string()),
                Some(outpost_schemas::job::HaltStatus::Succeeded),
            ),
            ControlStep::FlowControl { halt: Some(false) } => (
                StepOutcome::Failed,
                Some("flow control: halt, failed".to_string()),
                Some(outpost_schemas::job::HaltStatus::Failed),
            ),
        };
        Some(StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: Header::now(),
            execution_id: self.execution_id,
            step: self.current,
            runner_id: outpost_schemas::subjects::CONTROL_PLANE_SOURCE.into(),
            outcome,
            exit_code: None,
            reason,
            log_chunks: 0,
            handler: None,
            log_used: None,
            halted,
        })
    }

    /// Records a variable an `export-var` step set.
    fn on_export(&mut self, key: &str, value: &str) -> bool {
        if self.exports.get(key).map(String::as_str) == Some(value) {
            return false;
        }
        self.exports.insert(key.to_string(), value.to_string());
        true
    }

    fn on_abort(&mut self, current_unclaimed: bool, cause: AbortCause) -> bool {
        if self.finished.is_some() || (self.abort_requested && !current_unclaimed) {
            return false;
        }
        // The first cause decides: a timeout after an abort changes nothing.
        if !self.abort_requested {
            self.timed_out = cause == AbortCause::Timeout;
        }
        self.abort_requested = true;
        if current_unclaimed {
            let reason = if self.timed_out {
                self.timeout_reason()
            } else {
                Some("aborted before the step was claimed".into())
            };
            self.finished = Some(Finish {
                outcome: self.stopped_outcome(),
                skipped: (self.current..=self.steps.len() as StepNo).collect(),
                reason,
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

mod nodes;
pub use nodes::{runs_on_nodes, segment_end, NodePlan, NodeRefWork};
