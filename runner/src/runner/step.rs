//! One dispatched step: its claim, its secure values, running it, and
//! reporting it through the outbox.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use outpost_schemas::{
    subjects, Event, HandlerOutcome, Header, LogEntry, LogStream, StepClaimed, StepCommand,
    StepDispatched, StepFailure, StepFinished, StepOutcome, StepStarted,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus;
use crate::executor::{self, Exit};
use crate::logs::Admit;
use crate::outbox::Receipt;

use super::nodes::run_nodes;
use super::{
    lane, report, CancelReason, RunnerError, Running, Shared, CLAIM_PATIENCE, RPC_TIMEOUT,
};

pub(super) async fn handle_dispatch(
    shared: Arc<Shared>,
    msg: jetstream::Message,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let dispatched: StepDispatched = match serde_json::from_slice(&msg.payload) {
        Ok(d) => d,
        Err(err) => {
            bus::dead_letter(
                &shared.js,
                &shared.opts.runner_id,
                "dispatch",
                &msg,
                &format!("malformed dispatch message: {err}"),
            )
            .await;
            return;
        }
    };
    let execution_id = dispatched.execution_id;
    let step = dispatched.step;
    let runner_id = shared.opts.runner_id.clone();
    let plugins = dispatched.plugins();
    if !shared.plugins.runs_all(plugins.iter()) {
        // Only a lane of plugins it runs reaches it, so this is a step from
        // before lanes (or a bug): never run it, and leave it to a runner
        // that can, without claiming it.
        tracing::error!(execution_id = %execution_id, step, runner_id = %runner_id, plugins = ?plugins, "a step that needs a plugin this runner does not run reached it; handing it back");
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(30))))
            .await;
        return;
    }
    if shared
        .running
        .lock()
        .unwrap()
        .contains_key(&(execution_id, step))
    {
        // Our own step, redelivered while it runs (an ack got lost in a
        // reconnect): the task running it acks it at the end.
        return;
    }
    if shared.outbox.lane_pending(&lane(execution_id, step)) {
        // A step a previous process of this replica ran, whose report is
        // still in the outbox: asking for its claim now would have it
        // declared lost. Once the report is out, the redelivery finds the
        // step finished (or, if it died with that process, lost).
        let _ = msg
            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
            .await;
        return;
    }
    // Registered before the claim, so that an abort notice, which the
    // orchestrator sends only once a claim exists, always finds the step.
    let cancel = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    shared.running.lock().unwrap().insert(
        (execution_id, step),
        Running {
            execution_id,
            cancel: cancel.clone(),
            reason: reason.clone(),
            ended: false,
        },
    );
    let unregister = {
        let shared = shared.clone();
        move || {
            shared.running.lock().unwrap().remove(&(execution_id, step));
        }
    };
    let request = outpost_schemas::rpc::ClaimRequest {
        execution_id,
        step,
        replica_id: shared.replica_id,
        attempt: Uuid::now_v7(),
    };
    let subject = subjects::rpc(&runner_id, subjects::rpc::CLAIM);
    // A lost reply is asked again with the same attempt id, which the
    // control plane grants again. A busy or restarting control plane is
    // waited for (the dispatch kept ours by progress acks) rather than the
    // step handed back: a claim it made but could not answer in time would
    // otherwise end the step as lost.
    let asked = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    let reply = loop {
        let reply = bus::request_json(&shared.client, &subject, &request, RPC_TIMEOUT).await;
        if reply.is_ok() || asked.elapsed() >= CLAIM_PATIENCE || shared.leaving.is_cancelled() {
            break reply;
        }
        let _ = msg.ack_with(AckKind::Progress).await;
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    };
    use outpost_schemas::rpc::ClaimReply;
    match reply {
        Ok(ClaimReply::Granted) => {}
        Ok(ClaimReply::Aborted) | Ok(ClaimReply::Lost) | Ok(ClaimReply::Stale) => {
            // Aborted before anyone claimed it, or claimed before by a
            // replica that went silent (the control plane ended it as
            // runner-lost): either way, nothing to run.
            unregister();
            let _ = msg.double_ack().await;
            return;
        }
        Ok(ClaimReply::Held) => {
            unregister();
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return;
        }
        Ok(ClaimReply::Refused { reason }) => {
            unregister();
            tracing::warn!(execution_id = %execution_id, step, runner_id, reason, "claim refused; handing the step back");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
            return;
        }
        Err(err) => {
            unregister();
            tracing::warn!(error = %err, execution_id = %execution_id, step, "cannot claim the step; handing it back");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
            return;
        }
    }

    let (message, acker) = msg.split();
    drop(message);
    let acker = Arc::new(acker);
    let progress = {
        let acker = acker.clone();
        let every = shared.opts.progress_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(err) = acker.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %err, "in-progress ack failed");
                }
            }
        })
    };

    let result = run_claimed(&shared, &dispatched, cancel, reason).await;
    if let Some(r) = shared
        .running
        .lock()
        .unwrap()
        .get_mut(&(execution_id, step))
    {
        r.ended = true;
    }
    // The step has ended: its slot is free while its report goes out.
    drop(slot);
    match result {
        Ok(mut finished) => {
            let leaving = shared.leaving.clone();
            shared.reporting.spawn(async move {
                let acked = tokio::select! {
                    a = finished.acked() => a,
                    _ = leaving.cancelled() => false,
                };
                progress.abort();
                // Acked before forgetting the step: a redelivery in between
                // would otherwise find it unknown and ask for its claim.
                if acked {
                    if let Err(err) = acker.double_ack().await {
                        // The finished event is stored; a redelivery will find our claim.
                        tracing::warn!(error = %err, execution_id = %execution_id, step, "final ack failed");
                    }
                }
                // Not acked: still in the outbox (the next start publishes
                // it, and the redelivered dispatch then finds the step
                // finished), or NATS refused it for good.
                unregister();
            });
        }
        Err(err) => {
            progress.abort();
            unregister();
            tracing::error!(error = %err, execution_id = %execution_id, step, runner_id, "could not report the step; leaving it to redelivery");
        }
    }
}

/// Runs a claimed step; returns the receipt of its finished event.
pub(super) async fn run_claimed(
    shared: &Shared,
    d: &StepDispatched,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
) -> Result<Receipt, RunnerError> {
    let runner_id = shared.opts.runner_id.clone();
    let (execution_id, step) = (d.execution_id, d.step);
    let lane = lane(execution_id, step);
    report(
        &shared.outbox,
        &lane,
        &Event::StepClaimed(StepClaimed {
            header: Header::now(),
            execution_id,
            step,
            runner_id: runner_id.clone(),
            replica_id: shared.replica_id,
            hostname: shared.hostname.clone(),
        }),
    )
    .await?;

    // Secure option values come now, from the control plane, to this
    // claim only; they go into the command and environment here and are
    // masked in everything the step prints.
    let mut d = std::borrow::Cow::Borrowed(d);
    let mut secrets = crate::mask::Secrets::default();
    // Script tokens see the plain context and, here only, the secure values.
    let mut tokens = d.vars.clone();
    let mut auth = BTreeMap::new();
    // Said in the step's log once it has one.
    let mut warnings = Vec::new();
    if !d.secure_options.is_empty() || !d.auth_options.is_empty() {
        let fetched = match fetch_secrets(shared, &d).await {
            Ok(values) => with_stored_defaults(values, &d, &shared.opts.key_store, &mut warnings),
            Err(why) => Err(format!("cannot fetch secure option values: {why}")),
        };
        let mut values = match fetched {
            Ok(values) => values,
            Err(why) => {
                tracing::error!(execution_id = %execution_id, step, runner_id, reason = %why, "cannot resolve secure option values");
                return fail_unstarted(shared, &lane, &d, why).await;
            }
        };
        // An optional secure option left empty is empty, as a plain one is.
        for name in &d.secure_options {
            values.entry(name.clone()).or_default();
        }
        secrets = crate::mask::Secrets::new(values.values());
        if let Some(mask) = crate::log_filters::dispatch_mask(&d) {
            secrets = secrets.masked_as(&mask);
        }
        // Authentication options go to the SSH executor and nowhere else.
        for name in &d.auth_options {
            if let Some(v) = values.remove(name) {
                auth.insert(name.clone(), v);
            }
        }
        values.retain(|name, _| d.secure_options.contains(name));
        let vars: BTreeMap<String, String> = values
            .iter()
            .map(|(k, v)| (format!("option.{k}"), v.clone()))
            .collect();
        tokens.extend(vars.clone());
        let d = d.to_mut();
        for (name, value) in &values {
            d.env
                .insert(outpost_schemas::job::option_env_name(name), value.clone());
        }
        d.command = d.command.substituted(&vars);
        if let Some(h) = d.errorhandler.as_mut() {
            *h = h.substituted(&vars);
        }
        if let Some(nr) = d.node_run.as_mut() {
            for s in &mut nr.steps {
                s.command = s.command.substituted(&vars);
                if let Some(h) = s.errorhandler.as_mut() {
                    *h = h.substituted(&vars);
                }
            }
        }
    }
    // Script bodies the step names by path or URL are read now, once for
    // every node of a node job; tokens are replaced per node there.
    match load_scripts(&d).await {
        Ok(Some(loaded)) => d = std::borrow::Cow::Owned(loaded),
        Ok(None) => {}
        Err(why) => {
            tracing::warn!(execution_id = %execution_id, step, runner_id, reason = %why, "cannot load the step's script");
            return fail_unstarted(shared, &lane, &d, why).await;
        }
    }
    if d.node_run.is_none() {
        let command = crate::script::with_tokens(&d.command, &tokens, None);
        d.to_mut().command = command;
    }
    let d = d.as_ref();

    if let Some(nr) = &d.node_run {
        let values = super::nodes::Values {
            secrets,
            tokens,
            auth,
            warnings,
        };
        return run_nodes(shared, &lane, d, nr, cancel, reason, values).await;
    }

    let (tx, mut rx) = mpsc::channel::<LogEntry>(1024);
    for w in warnings {
        let _ = tx.send(warning_line(w)).await;
    }
    let (ptx, prx) = mpsc::channel(1024);
    // Output goes on the step's lane after its started event, not before
    // it: a started event queued behind a log chunk would wait for that
    // chunk's ack, and pickup latency with it.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let mut started_gate = Some(started_tx);
    let mut limiter = crate::logs::Limiter::new(d.loglimit, d.log_used.clone());
    // The log limit counts what the log filters and the log level let
    // through, as Rundeck's does.
    let mut filters = crate::log_filters::LogFilters::new(&d.log_filters, d.loglevel);
    let forward = {
        let (cancel, reason) = (cancel.clone(), reason.clone());
        tokio::spawn(async move {
            let _ = started_rx.await;
            'lines: while let Some(e) = rx.recv().await {
                for e in filters.observe(e) {
                    let Some(e) = limited(&mut limiter, e, &reason, &cancel) else {
                        continue;
                    };
                    if ptx.send((step, e)).await.is_err() {
                        break 'lines;
                    }
                }
            }
            let (data, held) = filters.finish();
            for e in held {
                if let Some(e) = limited(&mut limiter, e, &reason, &cancel) {
                    let _ = ptx.send((step, e)).await;
                }
            }
            (limiter, data)
        })
    };
    let pump = tokio::spawn(crate::logs::pump(
        shared.outbox.clone(),
        lane.clone(),
        execution_id,
        runner_id.clone(),
        shared.replica_id,
        prx,
    ));
    let mut env: BTreeMap<String, String> = d.env.clone();
    env.insert("OUTPOST_EXECUTION_ID".into(), execution_id.to_string());
    env.insert("OUTPOST_STEP".into(), step.to_string());
    let aborts = [forward.abort_handle(), pump.abort_handle()];
    let mut run = Process {
        shared,
        lane: &lane,
        d,
        tx: &tx,
        secrets: &secrets,
        cancel: &cancel,
        reason: &reason,
        aborts: &aborts,
        started_gate: &mut started_gate,
    };
    // A dispatch that recovers a failure from elsewhere (a job reference's
    // child) runs only the handler.
    let (own, failure) = match &d.recovering {
        Some(failure) => (
            (
                StepOutcome::Failed,
                failure.result_code,
                Some(failure.message.clone()),
            ),
            Some(failure.clone()),
        ),
        None => {
            let own = run.process(&d.command, &env, "script").await?;
            let failure = (own.0 == StepOutcome::Failed && own.2.is_some()).then(|| StepFailure {
                reason: "NonZeroResultCode".into(),
                message: own.2.clone().unwrap_or_default(),
                result_code: own.1,
            });
            (own, failure)
        }
    };
    let handler_command = match &d.recovering {
        Some(_) => Some(&d.command),
        None => d.errorhandler.as_ref(),
    };
    let handler = match (handler_command, failure) {
        (Some(command), Some(failure)) if !cancel.is_cancelled() => {
            system_line(
                &tx,
                format!(
                    "step failed ({}); running its error handler",
                    failure.message
                ),
            )
            .await;
            let vars = failure.vars();
            let mut env = env.clone();
            for (k, v) in &vars {
                env.insert(
                    format!("RD_{}", k.replace('.', "_").to_uppercase()),
                    v.clone(),
                );
            }
            let (outcome, exit_code, reason) = match crate::script::load(command).await {
                Ok(loaded) => {
                    let mut handler_tokens = tokens.clone();
                    handler_tokens.extend(vars.clone());
                    let command = crate::script::with_tokens(
                        &loaded.substituted(&vars),
                        &handler_tokens,
                        None,
                    );
                    run.process(&command, &env, "handler.script").await?
                }
                Err(why) => {
                    system_line(&tx, format!("could not start the error handler: {why}")).await;
                    (StepOutcome::Failed, None, Some(why))
                }
            };
            Some(HandlerOutcome {
                outcome,
                exit_code,
                reason,
            })
        }
        _ => None,
    };
    let (outcome, exit_code, why) = own;
    drop(tx);
    drop(started_gate);
    let (limiter, data) = match forward.await {
        Ok((limiter, data)) => (limiter, data),
        Err(_) => (None, BTreeMap::new()),
    };
    let log_chunks = pump.await.expect("log pump does not panic")?.values().sum();
    let halted = halted_by(&reason, limiter.as_ref());
    report(
        &shared.outbox,
        &lane,
        &Event::StepFinished(StepFinished {
            node_data: Default::default(),
            header: Header::now(),
            execution_id,
            step,
            runner_id,
            outcome,
            exit_code,
            reason: why,
            log_chunks,
            handler,
            log_used: limiter.map(|l| l.used().clone()),
            halted,
            data,
        }),
    )
    .await
}

/// Reads the bodies of the scripts a dispatch names by path or URL; none
/// when it names none.
async fn load_scripts(d: &StepDispatched) -> Result<Option<StepDispatched>, String> {
    let names_one = |c: &StepCommand| {
        matches!(
            c,
            StepCommand::Script {
                source: Some(_),
                ..
            }
        )
    };
    let node_step_names_one = d.node_run.as_ref().is_some_and(|nr| {
        nr.steps
            .iter()
            .any(|s| names_one(&s.command) || s.errorhandler.as_ref().is_some_and(names_one))
    });
    if !names_one(&d.command) && !node_step_names_one {
        return Ok(None);
    }
    let mut loaded = d.clone();
    if d.node_run.is_none() {
        loaded.command = crate::script::load(&d.command).await?;
    }
    if let Some(nr) = loaded.node_run.as_mut() {
        for s in &mut nr.steps {
            s.command = crate::script::load(&s.command)
                .await
                .map_err(|e| format!("step {}: {e}", s.step))?;
            if let Some(h) = s.errorhandler.as_mut() {
                *h = crate::script::load(h)
                    .await
                    .map_err(|e| format!("step {}'s error handler: {e}", s.step))?;
            }
        }
    }
    Ok(Some(loaded))
}

/// Ends a step that could not start, with why.
async fn fail_unstarted(
    shared: &Shared,
    lane: &str,
    d: &StepDispatched,
    why: String,
) -> Result<Receipt, RunnerError> {
    // A node run's steps take their state from per-node reports: every
    // node fails its first step, and the rest never run.
    if let Some(nr) = &d.node_run {
        for (i, s) in nr.steps.iter().enumerate() {
            for n in &nr.nodes {
                let first = i == 0;
                report(
                    &shared.outbox,
                    lane,
                    &Event::NodeStepFinished(outpost_schemas::NodeStepFinished {
                        header: Header::now(),
                        execution_id: d.execution_id,
                        step: s.step,
                        node: n.nodename.clone(),
                        runner_id: shared.opts.runner_id.clone(),
                        outcome: first.then_some(StepOutcome::Failed),
                        exit_code: None,
                        reason: Some(match first {
                            true => why.clone(),
                            false => "not run: an earlier failure stopped the dispatch".into(),
                        }),
                        handler: None,
                    }),
                )
                .await?;
            }
        }
    }
    report(
        &shared.outbox,
        lane,
        &Event::StepFinished(StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: Header::now(),
            execution_id: d.execution_id,
            step: d.step,
            runner_id: shared.opts.runner_id.clone(),
            outcome: StepOutcome::Failed,
            exit_code: None,
            reason: Some(why),
            log_chunks: 0,
            handler: None,
            log_used: None,
            halted: None,
        }),
    )
    .await
}

/// What to pass on for `e` under the job's log limit (none: it is dropped);
/// the line that passes a halting limit stops the step.
pub(super) fn limited(
    limiter: &mut Option<crate::logs::Limiter>,
    e: LogEntry,
    reason: &Mutex<Option<CancelReason>>,
    cancel: &CancellationToken,
) -> Option<LogEntry> {
    let Some(l) = limiter.as_mut() else {
        return Some(e);
    };
    match l.admit(e) {
        Admit::Forward(e) => Some(e),
        Admit::Drop => None,
        Admit::Exceeded { message, halt } => {
            if halt {
                halt_for_log_limit(reason, cancel);
            }
            Some(message)
        }
    }
}

/// Stops a step whose output passed a halting log limit. A stop already
/// under way (an abort) keeps its own reason.
fn halt_for_log_limit(reason: &Mutex<Option<CancelReason>>, cancel: &CancellationToken) {
    reason.lock().unwrap().get_or_insert(CancelReason::LogLimit);
    cancel.cancel();
}

/// The status the execution ends with, when its log limit halted the step.
pub(super) fn halted_by(
    reason: &Mutex<Option<CancelReason>>,
    limiter: Option<&crate::logs::Limiter>,
) -> Option<outpost_schemas::job::HaltStatus> {
    let limiter = limiter?;
    (*reason.lock().unwrap() == Some(CancelReason::LogLimit)).then(|| limiter.limit().status)
}

/// What one process of a step needs: the step's lane, output and abort.
struct Process<'a> {
    shared: &'a Shared,
    lane: &'a str,
    d: &'a StepDispatched,
    tx: &'a mpsc::Sender<LogEntry>,
    secrets: &'a crate::mask::Secrets,
    cancel: &'a CancellationToken,
    reason: &'a Arc<Mutex<Option<CancelReason>>>,
    /// The output tasks, stopped first when the step cannot be reported.
    aborts: &'a [tokio::task::AbortHandle],
    /// Open once the step's started event is out: the first process
    /// reports it, a handler after it does not again.
    started_gate: &'a mut Option<tokio::sync::oneshot::Sender<()>>,
}

impl Process<'_> {
    /// Runs `command` to its end: the outcome, exit code and why.
    async fn process(
        &mut self,
        command: &StepCommand,
        env: &BTreeMap<String, String>,
        suffix: &str,
    ) -> Result<(StepOutcome, Option<i32>, Option<String>), RunnerError> {
        let (execution_id, step) = (self.d.execution_id, self.d.step);
        let runner_id = &self.shared.opts.runner_id;
        let script_name = format!("{}-{step}.{suffix}", execution_id.simple());
        let proc = match executor::spawn(
            command,
            env,
            &self.shared.opts.work_dir,
            &self.shared.opts.key_store,
            &script_name,
            self.tx.clone(),
            self.secrets,
        ) {
            Err(err) => {
                system_line(self.tx, format!("could not start the step: {err}")).await;
                return Ok((StepOutcome::Failed, None, Some(err.to_string())));
            }
            Ok(proc) => proc,
        };
        if let Some(gate) = self.started_gate.take() {
            let started = report(
                &self.shared.outbox,
                self.lane,
                &Event::StepStarted(StepStarted {
                    header: Header::now(),
                    execution_id,
                    step,
                    runner_id: runner_id.clone(),
                    pid: proc.pid(),
                }),
            )
            .await;
            if let Err(err) = started {
                // Work that cannot be reported must not go on: kill it all,
                // and its output with it. The output tasks go first: the
                // readers may be blocked handing lines to them.
                for a in self.aborts {
                    a.abort();
                }
                self.cancel.cancel();
                proc.wait(self.cancel.clone()).await;
                return Err(err);
            }
            let _ = gate.send(());
            tracing::debug!(execution_id = %execution_id, step, runner_id, "step started");
        }
        Ok(match proc.wait(self.cancel.clone()).await {
            Exit::Code(0) => (StepOutcome::Succeeded, Some(0), None),
            Exit::Code(c) => {
                system_line(self.tx, format!("exit code {c}")).await;
                (StepOutcome::Failed, Some(c), Some(format!("exit code {c}")))
            }
            Exit::Signal(s) => {
                system_line(self.tx, format!("killed by signal {s}")).await;
                (
                    StepOutcome::Failed,
                    None,
                    Some(format!("killed by signal {s}")),
                )
            }
            Exit::Failed(why) => {
                system_line(self.tx, why.clone()).await;
                (StepOutcome::Failed, None, Some(why))
            }
            Exit::Killed => match *self.reason.lock().unwrap() {
                Some(CancelReason::ShutdownDeadline) => (
                    StepOutcome::Failed,
                    None,
                    Some("runner shutdown deadline passed; step killed".into()),
                ),
                Some(CancelReason::LogLimit) => {
                    let limit = self.d.loglimit.expect("halted by a limit it has");
                    (
                        limit.status.step_outcome(),
                        None,
                        Some(limit.exceeded_message()),
                    )
                }
                _ => (StepOutcome::Aborted, None, Some("aborted".into())),
            },
        })
    }
}

/// The run's secure values with each unset key-store default read from
/// this runner's key store, as Rundeck reads its key storage: a value the
/// run gave wins; a required option whose key cannot be read fails the
/// step (Rundeck's words); an optional one stays empty, with a warning.
fn with_stored_defaults(
    mut values: BTreeMap<String, String>,
    d: &StepDispatched,
    key_store: &std::path::Path,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, String> {
    for (name, at) in &d.option_storage {
        if values.get(name).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        match crate::node_run::read_stored(key_store, &at.path) {
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(why) if at.required => {
                return Err(format!(
                    "Required option '{name}' default value could not be loaded from key storage path: {}: {why}",
                    at.path
                ))
            }
            Err(why) => warnings.push(format!(
                "Option '{name}' default value could not be loaded from key storage path: {}: {why}",
                at.path
            )),
        }
    }
    Ok(values)
}

/// Asks for the step's secure option values, sealed to a one-use key.
pub(super) async fn fetch_secrets(
    shared: &Shared,
    d: &StepDispatched,
) -> Result<outpost_schemas::rpc::SecretValues, String> {
    use outpost_schemas::rpc::{SecretsReply, SecretsRequest};
    let key = nkeys::XKey::new();
    let request = SecretsRequest {
        execution_id: d.execution_id,
        step: d.step,
        reply_key: key.public_key(),
    };
    let subject = subjects::rpc(&shared.opts.runner_id, subjects::rpc::SECRETS);
    let reply: SecretsReply = bus::request_json(&shared.client, &subject, &request, RPC_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        SecretsReply::Refused { reason } => Err(reason),
        SecretsReply::Sealed { sender, sealed } => {
            let sender = nkeys::XKey::from_public_key(&sender).map_err(|e| e.to_string())?;
            let sealed = data_encoding::BASE64
                .decode(sealed.as_bytes())
                .map_err(|e| e.to_string())?;
            let plain = key.open(&sealed, &sender).map_err(|e| e.to_string())?;
            serde_json::from_slice(&plain).map_err(|e| e.to_string())
        }
    }
}

/// A warning of the runner's own, in the step's log.
pub(super) fn warning_line(text: String) -> LogEntry {
    LogEntry::now(LogStream::System, "WARN", text)
}

pub(super) async fn system_line(tx: &mpsc::Sender<LogEntry>, text: String) {
    let _ = tx
        .send(LogEntry::now(LogStream::System, "ERROR", text))
        .await;
}
