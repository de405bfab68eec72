//! Runs node steps on a set of nodes: the matrix of steps × nodes, in
//! Rundeck's strategies, with `threadcount` nodes at a time and Rundeck's
//! two keepgoing flags.
//!
//! - `node-first`: each node runs every step in turn; up to `threadcount`
//!   nodes at once.
//! - `sequential` (`step-first`): each step runs on every node (up to
//!   `threadcount` at once) before the next step starts.
//! - `parallel`: every (step, node) pair may run at once, up to
//!   `threadcount`; steps do not wait for each other, so `step_keepgoing`
//!   has nothing to stop.
//!
//! `node_keepgoing` (`nodefilters.dispatch.keepgoing`): after a node fails,
//! other nodes still start. `step_keepgoing` (`sequence.keepgoing`): after a
//! step fails, later steps still run.
//!
//! A node runs locally (`node-executor: local`) or over SSH with credentials
//! resolved here, on the runner, from its key store.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use outpost_schemas::job::Strategy;
use outpost_schemas::node::Node;
use outpost_schemas::{
    handled_outcome, HandlerOutcome, LogEntry, LogStream, NodeData, StepCommand, StepFailure,
    StepNo, StepOutcome,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::executor::{self, shell_quote, Exit};
use crate::plugins::copyfile::Target;
use crate::ssh::{self, SshOptions, SshTarget};
use outpost_schemas::job::copyfile::{CopyFileConfig, TYPES as COPYFILE_TYPES};

#[derive(Debug, Clone)]
pub struct NodeRunSpec {
    /// In dispatch order (already ranked).
    pub nodes: Vec<Node>,
    pub steps: Vec<(StepNo, StepCommand)>,
    /// Each step's error handler, with its `keepgoingOnSuccess`: run on a
    /// node where the step failed.
    pub handlers: BTreeMap<StepNo, (StepCommand, bool)>,
    pub strategy: Strategy,
    pub threadcount: usize,
    pub node_keepgoing: bool,
    pub step_keepgoing: bool,
    pub env: BTreeMap<String, String>,
    /// The context scripts' `@key@` tokens are replaced with (plain and
    /// secure options, the job), each node's added.
    pub vars: BTreeMap<String, String>,
    /// Secure option values, masked in the output.
    pub secrets: crate::mask::Secrets,
    /// Each step's log filters (the workflow's first), run over each
    /// node's output of the step, and the job's log level after them.
    pub log_filters: BTreeMap<StepNo, Vec<outpost_schemas::job::LogFilter>>,
    pub loglevel: outpost_schemas::job::LogLevel,
    /// Secure options no step sees (Rundeck's Secure Remote
    /// Authentication), by name: read only for SSH logins
    /// (`ssh-password-option`, `ssh-key-passphrase-option`).
    pub auth: BTreeMap<String, String>,
}

/// What the runner brings: where keys live, how to check hosts.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// Root of the runner-local key store; storage paths resolve below it.
    pub key_store: PathBuf,
    pub ssh: SshOptions,
    pub work_dir: PathBuf,
    /// SSH user when a node names none.
    pub default_user: String,
    /// The plugins this runner runs. A node's executor is checked here,
    /// where it runs: the runner's own entry for a node, which replaces
    /// the dispatched one, may name another than the lane was chosen for.
    pub plugins: crate::plugins::Usable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Started { step: StepNo, node: String },
    Finished(NodeStepResult),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStepResult {
    pub step: StepNo,
    pub node: String,
    /// `None`: never ran (an earlier failure stopped it). After the
    /// step's error handler, when one ran.
    pub outcome: Option<StepOutcome>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub handler: Option<HandlerOutcome>,
    /// What the step's `key-value-data` log filters captured on the node.
    pub data: BTreeMap<String, String>,
}

/// What one node run may capture in all, so that its `StepFinished` stays
/// well inside a NATS message (1 MiB).
pub const MAX_CAPTURED_BYTES: usize = 256 * 1024;

/// A log line of a node step.
pub type NodeLine = (StepNo, LogEntry);

struct Shared {
    spec: NodeRunSpec,
    ctx: NodeContext,
    events: mpsc::Sender<NodeEvent>,
    lines: mpsc::Sender<NodeLine>,
    cancel: CancellationToken,
    /// Set when a node failed and `node_keepgoing` is off: start no node.
    stop_new: AtomicBool,
    /// What node steps of this run captured, as they finished.
    captured: std::sync::Mutex<Vec<NodeData>>,
    /// Their keys' and values' bytes, against [`MAX_CAPTURED_BYTES`].
    captured_bytes: std::sync::atomic::AtomicUsize,
    /// The run's `${data.*}` from earlier dispatches: `vars`' data keys.
    run_data: BTreeMap<String, String>,
}

impl Shared {
    /// The data context a pair starts with: the run's (`${data.*}` in
    /// every view, from earlier dispatches) and what this run captured that
    /// Rundeck would let it see. Node-first: the node's own earlier steps
    /// (other nodes' captures of the section show only after it, as in
    /// Rundeck's node-first executor). Sequential: every node's earlier
    /// steps, all finished. Parallel: nothing of this run.
    fn data_context(&self, step: StepNo, node: &str) -> BTreeMap<String, String> {
        let mut vars = self.run_data.clone();
        let captured = self.captured.lock().expect("not poisoned");
        let mut seen: Vec<_> = captured
            .iter()
            .filter(|c| match self.spec.strategy {
                Strategy::NodeFirst => c.node == node && c.step < step,
                Strategy::Sequential => c.step < step,
                Strategy::Parallel => false,
            })
            .collect();
        // Later steps overwrite a node's view, as Rundeck's merge does.
        seen.sort_by_key(|c| c.step);
        for c in seen {
            for (k, v) in &c.data {
                for key in outpost_schemas::job::data_refs::node_capture_keys(c.step, k, &c.node) {
                    vars.insert(key, v.clone());
                }
            }
        }
        vars
    }
}

/// Runs the matrix; returns one result per (step, node), in step then node
/// order, including the pairs that never ran.
pub async fn run(
    spec: NodeRunSpec,
    ctx: NodeContext,
    events: mpsc::Sender<NodeEvent>,
    lines: mpsc::Sender<NodeLine>,
    cancel: CancellationToken,
) -> Vec<NodeStepResult> {
    let threads = spec.threadcount.max(1);
    let run_data = spec
        .vars
        .iter()
        .filter(|(k, _)| outpost_schemas::job::data_refs::is_data_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let shared = Arc::new(Shared {
        run_data,
        spec,
        ctx,
        events,
        lines,
        cancel,
        stop_new: AtomicBool::new(false),
        captured: Default::default(),
        captured_bytes: Default::default(),
    });
    let slots = Arc::new(Semaphore::new(threads));
    let mut results: Vec<NodeStepResult> = Vec::new();
    match shared.spec.strategy {
        Strategy::NodeFirst => {
            let mut tasks = tokio::task::JoinSet::new();
            for node in shared.spec.nodes.clone() {
                let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                if shared.stop_new.load(Ordering::SeqCst) || shared.cancel.is_cancelled() {
                    break;
                }
                let sh = shared.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    let mut out = Vec::new();
                    let mut failed = false;
                    for (step, cmd) in sh.spec.steps.clone() {
                        if (failed && !sh.spec.step_keepgoing) || sh.cancel.is_cancelled() {
                            break;
                        }
                        let r = run_pair(&sh, step, &cmd, &node).await;
                        failed |= r.outcome != Some(StepOutcome::Succeeded);
                        out.push(r);
                    }
                    if failed && !sh.spec.node_keepgoing {
                        sh.stop_new.store(true, Ordering::SeqCst);
                    }
                    out
                });
            }
            while let Some(r) = tasks.join_next().await {
                results.extend(r.expect("node task does not panic"));
            }
        }
        Strategy::Sequential => {
            for (step, cmd) in shared.spec.steps.clone() {
                let mut tasks = tokio::task::JoinSet::new();
                for node in shared.spec.nodes.clone() {
                    let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                    if shared.stop_new.load(Ordering::SeqCst) || shared.cancel.is_cancelled() {
                        break;
                    }
                    tasks.spawn(one_pair(shared.clone(), step, cmd.clone(), node, permit));
                }
                let mut step_failed = false;
                while let Some(r) = tasks.join_next().await {
                    let r = r.expect("node task does not panic");
                    step_failed |= r.outcome != Some(StepOutcome::Succeeded);
                    results.push(r);
                }
                if step_failed && !shared.spec.step_keepgoing {
                    break;
                }
                // A node failure stops new nodes within the step, not the
                // next step when keepgoing allows it.
                shared.stop_new.store(false, Ordering::SeqCst);
            }
        }
        Strategy::Parallel => {
            let mut tasks = tokio::task::JoinSet::new();
            for (step, cmd) in shared.spec.steps.clone() {
                for node in shared.spec.nodes.clone() {
                    let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                    if shared.stop_new.load(Ordering::SeqCst) || shared.cancel.is_cancelled() {
                        break;
                    }
                    tasks.spawn(one_pair(shared.clone(), step, cmd.clone(), node, permit));
                }
            }
            while let Some(r) = tasks.join_next().await {
                results.push(r.expect("node task does not panic"));
            }
        }
    }
    // Every pair gets a result, so that state can say what never ran.
    for (step, _) in &shared.spec.steps {
        for node in &shared.spec.nodes {
            if !results
                .iter()
                .any(|r| r.step == *step && r.node == node.nodename)
            {
                results.push(NodeStepResult {
                    step: *step,
                    node: node.nodename.clone(),
                    outcome: None,
                    exit_code: None,
                    reason: Some(if shared.cancel.is_cancelled() {
                        "aborted".into()
                    } else {
                        "not run: an earlier failure stopped the dispatch".into()
                    }),
                    handler: None,
                    data: BTreeMap::new(),
                });
            }
        }
    }
    let order: BTreeMap<&str, usize> = shared
        .spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.nodename.as_str(), i))
        .collect();
    results.sort_by_key(|r| {
        (
            r.step,
            order.get(r.node.as_str()).copied().unwrap_or(usize::MAX),
        )
    });
    results
}

/// One (step, node) pair holding a slot; a failure stops new nodes unless
/// `node_keepgoing`.
async fn one_pair(
    sh: Arc<Shared>,
    step: StepNo,
    cmd: StepCommand,
    node: Node,
    _slot: tokio::sync::OwnedSemaphorePermit,
) -> NodeStepResult {
    let r = run_pair(&sh, step, &cmd, &node).await;
    if r.outcome != Some(StepOutcome::Succeeded) && !sh.spec.node_keepgoing {
        sh.stop_new.store(true, Ordering::SeqCst);
    }
    r
}

async fn run_pair(sh: &Shared, step: StepNo, cmd: &StepCommand, node: &Node) -> NodeStepResult {
    let _ = sh
        .events
        .send(NodeEvent::Started {
            step,
            node: node.nodename.clone(),
        })
        .await;
    // Output goes through a per-pair channel that stamps the node on it,
    // then through the step's log filters, one set for this node step, as
    // Rundeck runs a filter set around each node step (a block being
    // rendered ends with it).
    let (tx, mut rx) = mpsc::channel::<LogEntry>(256);
    let forward = {
        let lines = sh.lines.clone();
        let name = node.nodename.clone();
        let filters = sh.spec.log_filters.get(&step).map(Vec::as_slice);
        let mut filters =
            crate::log_filters::LogFilters::new(filters.unwrap_or_default(), sh.spec.loglevel);
        tokio::spawn(async move {
            'lines: while let Some(mut e) = rx.recv().await {
                e.node = Some(name.clone());
                for e in filters.observe(e) {
                    if lines.send((step, e)).await.is_err() {
                        break 'lines;
                    }
                }
            }
            let (data, rest) = filters.finish();
            for mut e in rest {
                e.node = Some(name.clone());
                let _ = lines.send((step, e)).await;
            }
            data
        })
    };
    let data = sh.data_context(step, &node.nodename);
    let (outcome, exit_code, reason) =
        outcome_of(run_on(sh, step, cmd, node, &data, &tx, None).await);
    let say = |level: &str, log: String| LogEntry::now(LogStream::System, level, log);
    if let Some(why) = reason
        .as_ref()
        .filter(|_| outcome != StepOutcome::Succeeded)
    {
        let _ = tx
            .send(say("ERROR", format!("node {}: {why}", node.nodename)))
            .await;
    }
    // The step's error handler runs on this node, with Rundeck's
    // `${result.*}`, and decides the node's result as Rundeck decides it.
    let mut handler = None;
    let (mut outcome, mut reason) = (outcome, reason);
    if let (StepOutcome::Failed, Some((h, kgos)), false) = (
        outcome,
        sh.spec.handlers.get(&step),
        sh.cancel.is_cancelled(),
    ) {
        let failure = StepFailure {
            reason: if exit_code.is_some() {
                "NonZeroResultCode".into()
            } else {
                "NodeStepFailure".into()
            },
            message: reason.clone().unwrap_or_default(),
            result_code: exit_code,
        };
        let _ = tx
            .send(say(
                "NORMAL",
                format!(
                    "node {}: step failed ({}); running its error handler",
                    node.nodename, failure.message
                ),
            ))
            .await;
        let (h_outcome, h_code, h_reason) =
            outcome_of(run_on(sh, step, h, node, &data, &tx, Some(&failure)).await);
        let done = HandlerOutcome {
            outcome: h_outcome,
            exit_code: h_code,
            reason: h_reason.clone(),
        };
        outcome = handled_outcome(&done, sh.spec.step_keepgoing, *kgos);
        let own = failure.message;
        reason = Some(match (outcome, h_outcome) {
            (StepOutcome::Succeeded, _) => format!("{own}; recovered by its error handler"),
            (_, StepOutcome::Succeeded) => format!(
                "{own}; its error handler succeeded, but neither keepgoing nor keepgoingOnSuccess lets the workflow go on"
            ),
            _ => format!(
                "{own}; its error handler failed too ({})",
                h_reason.as_deref().unwrap_or("failed")
            ),
        });
        handler = Some(done);
    }
    drop(tx);
    let mut data = forward.await.unwrap_or_default();
    let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > 0 && sh.captured_bytes.fetch_add(size, Ordering::SeqCst) + size > MAX_CAPTURED_BYTES {
        // A node run's captures go back in one message: past the cap, the
        // run says so rather than lose the step's end.
        let warn = LogEntry {
            node: Some(node.nodename.clone()),
            ..LogEntry::now(
                LogStream::System,
                "WARN",
                format!(
                    "key-value-data: the node run's captures passed {} KiB; what step {step} captured on {} is dropped",
                    MAX_CAPTURED_BYTES / 1024,
                    node.nodename
                ),
            )
        };
        let _ = sh.lines.send((step, warn)).await;
        data.clear();
    }
    if !data.is_empty() {
        sh.captured.lock().expect("not poisoned").push(NodeData {
            step,
            node: node.nodename.clone(),
            data: data.clone(),
        });
    }
    let result = NodeStepResult {
        step,
        node: node.nodename.clone(),
        outcome: Some(outcome),
        exit_code,
        reason,
        handler,
        data,
    };
    let _ = sh.events.send(NodeEvent::Finished(result.clone())).await;
    result
}

const COPYFILE: &str = COPYFILE_TYPES[0].0;

/// The `node-executor` names that mean SSH: Outpost's default and
/// Rundeck's two SSH providers.
const SSH_EXECUTORS: &[&str] = &["ssh", "jsch-ssh", "sshj-ssh"];

const WINRM: &str = outpost_schemas::job::winrm::NODE_EXECUTOR;

const KUBE: &str = outpost_schemas::job::kubernetes::NODE_EXECUTOR;

/// A process's end as a node's result: outcome, exit code, reason.
fn outcome_of(r: Result<Exit, String>) -> (StepOutcome, Option<i32>, Option<String>) {
    match r {
        Ok(Exit::Code(0)) => (StepOutcome::Succeeded, Some(0), None),
        Ok(Exit::Code(c)) => (StepOutcome::Failed, Some(c), Some(format!("exit code {c}"))),
        Ok(Exit::Signal(s)) => (
            StepOutcome::Failed,
            None,
            Some(format!("killed by signal {s}")),
        ),
        Ok(Exit::Killed) => (StepOutcome::Aborted, None, Some("aborted".into())),
        Ok(Exit::Failed(why)) => (StepOutcome::Failed, None, Some(why)),
        Err(why) => (StepOutcome::Failed, None, Some(why)),
    }
}

/// Runs one step (or, with the failure it handles, its error handler) on
/// one node; an `Err` is a one-line reason naming the cause.
async fn run_on(
    sh: &Shared,
    step: StepNo,
    cmd: &StepCommand,
    node: &Node,
    data: &BTreeMap<String, String>,
    lines: &mpsc::Sender<LogEntry>,
    handling: Option<&StepFailure>,
) -> Result<Exit, String> {
    let mut env = sh.spec.env.clone();
    // The node's data, as Rundeck gives it: `${node.x}` in commands and
    // args, `@node.x@` in scripts, `RD_NODE_X` in the environment.
    let (mut node_vars, node_env) = crate::script::node_context(node);
    env.extend(node_env);
    if let Some(failure) = handling {
        for (k, v) in failure.vars() {
            env.insert(
                format!("RD_{}", k.replace('.', "_").to_uppercase()),
                v.clone(),
            );
            node_vars.insert(k, v);
        }
    }
    // `${data.*}` seen from this node (its own view first), in the one
    // pass that also gives the node's context, so no value is expanded
    // twice. A script's body takes data as `@data.KEY@` tokens only, as
    // Rundeck's does, so a captured value is never read again as a token.
    let mut refs = data.clone();
    refs.extend(node_vars.clone());
    let name = Some(node.nodename.as_str());
    let cmd = cmd.map_parts(
        |body| outpost_schemas::job::substitute(body, &node_vars),
        |t| outpost_schemas::job::data_refs::expand(t, &refs, name),
    );
    let mut tokens = sh.spec.vars.clone();
    tokens.extend(data.clone());
    tokens.extend(node_vars);
    let cmd = &crate::script::with_tokens(&cmd, &tokens, name);
    // `localexec` runs here on the runner, with the node's context.
    // A plugin step runs here too, with the node's context in its
    // configuration, as Rundeck runs a node-step plugin on its server.
    // Copy File goes to the node itself, through its executor's session.
    let copy = match cmd {
        StepCommand::Plugin { plugin, config, .. } if plugin == COPYFILE => Some(
            CopyFileConfig::from_map(config)
                .and_then(|c| c.copy(false))
                .map_err(|e| sh.spec.secrets.mask_str(&e))?,
        ),
        _ => None,
    };
    if node.executor() == "local"
        || (copy.is_none()
            && matches!(
                cmd,
                StepCommand::LocalExec { .. } | StepCommand::Plugin { .. }
            ))
    {
        // Unique per pair: executions and nodes run side by side here.
        let name = format!(
            "{}-{step}-{}.script",
            sanitize(&node.nodename),
            uuid::Uuid::now_v7().simple()
        );
        let proc = match cmd {
            StepCommand::Plugin {
                plugin,
                config,
                stored,
            } => crate::plugins::start(
                plugin,
                config,
                stored,
                &crate::plugins::Place {
                    key_store: &sh.ctx.key_store,
                    work_dir: &sh.ctx.work_dir,
                    env: &env,
                    node: Some(crate::plugins::NodeScope {
                        node,
                        nodes: &sh.spec.nodes,
                    }),
                },
                lines.clone(),
                &sh.spec.secrets,
            ),
            _ => executor::spawn(
                cmd,
                &env,
                &sh.ctx.work_dir,
                &sh.ctx.key_store,
                &name,
                lines.clone(),
                &sh.spec.secrets,
            ),
        }
        .map_err(|e| e.to_string())?;
        return Ok(proc.wait(sh.cancel.clone()).await);
    }
    match node.executor() {
        outpost_schemas::job::ansible::NODE_EXECUTOR if copy.is_some() => {
            return Err(format!(
                "{}: copyfile to node {}, whose node-executor is {} (Rundeck copies through its Ansible file copier)",
                outpost_schemas::job::NOT_SUPPORTED_YET,
                node.nodename,
                outpost_schemas::job::ansible::NODE_EXECUTOR
            ))
        }
        outpost_schemas::job::ansible::NODE_EXECUTOR
            if !sh.ctx.plugins.runs(outpost_schemas::job::ansible::NODE_EXECUTOR) =>
        {
            return Err(format!(
                "node {}: node-executor {} is not among the plugins this runner runs (not installed, or not allowed by its --allowed-plugins)",
                node.nodename,
                outpost_schemas::job::ansible::NODE_EXECUTOR
            ))
        }
        outpost_schemas::job::ansible::NODE_EXECUTOR => {
            let place = crate::plugins::Place {
                key_store: &sh.ctx.key_store,
                work_dir: &sh.ctx.work_dir,
                env: &env,
                node: None,
            };
            let scope = crate::plugins::NodeScope {
                node,
                nodes: &sh.spec.nodes,
            };
            let proc = crate::plugins::ansible::start_executor(
                cmd,
                scope,
                &place,
                lines.clone(),
                &sh.spec.secrets,
            )
            .map_err(|e| e.to_string())?;
            return Ok(proc.wait(sh.cancel.clone()).await);
        }
        WINRM if copy.is_some() => {
            return Err(format!(
                "{}: copyfile to node {}, whose node-executor is {WINRM} (Rundeck copies through its {} file copier)",
                outpost_schemas::job::NOT_SUPPORTED_YET,
                node.nodename,
                outpost_schemas::job::winrm::FILE_COPIER
            ))
        }
        WINRM if !sh.ctx.plugins.runs(WINRM) => {
            return Err(format!(
                "node {}: node-executor {WINRM} is not among the plugins this runner runs (not allowed by its --allowed-plugins)",
                node.nodename,
            ))
        }
        KUBE if copy.is_some() => {
            return Err(format!(
                "{}: copyfile to node {}, whose node-executor is {KUBE} (Rundeck copies through its {} file copier)",
                outpost_schemas::job::NOT_SUPPORTED_YET,
                node.nodename,
                outpost_schemas::job::kubernetes::FILE_COPIER
            ))
        }
        KUBE if !sh.ctx.plugins.runs(KUBE) => {
            return Err(format!(
                "node {}: node-executor {KUBE} is not among the plugins this runner runs (not allowed by its --allowed-plugins)",
                node.nodename,
            ))
        }
        KUBE => {
            let proc = crate::plugins::kubernetes::start_executor(
                cmd,
                node,
                &env,
                lines.clone(),
                &sh.spec.secrets,
            )
            .map_err(|e| e.to_string())?;
            return Ok(proc.wait(sh.cancel.clone()).await);
        }
        WINRM => {
            let proc = crate::plugins::winrm::start_executor(
                cmd,
                node,
                &env,
                &sh.spec.auth,
                |path| read_stored(&sh.ctx.key_store, path),
                lines.clone(),
                &sh.spec.secrets,
            )
            .map_err(|e| e.to_string())?;
            return Ok(proc.wait(sh.cancel.clone()).await);
        }
        e if SSH_EXECUTORS.contains(&e) => {}
        other => {
            return Err(format!(
            "{}: node-executor `{other}` on node {}; the node executors are {}, `local`, `{}`, `{WINRM}` and `{KUBE}`",
            outpost_schemas::job::NOT_SUPPORTED_YET,
            node.nodename,
            SSH_EXECUTORS.join(", "),
            outpost_schemas::job::ansible::NODE_EXECUTOR
        ))
        }
    }
    let target = SshTarget {
        host: node.hostname.clone(),
        port: node.port.unwrap_or(22),
        username: node
            .username
            .clone()
            .unwrap_or_else(|| sh.ctx.default_user.clone()),
    };
    let auth = credentials(node, &sh.ctx.key_store, &sh.spec.auth)?;
    // An abort during connect or login must not let the command start.
    let session = tokio::select! {
        s = ssh::connect(&target, &auth, &sh.ctx.ssh) => s.map_err(|e| e.to_string())?.with_secrets(sh.spec.secrets.clone()),
        _ = sh.cancel.cancelled() => return Ok(Exit::Killed),
    };
    if let Some(copy) = copy {
        let sftp = tokio::select! {
            s = session.sftp() => s.map_err(|e| e.to_string())?,
            _ = sh.cancel.cancelled() => return Ok(Exit::Killed),
        };
        let name = node.nodename.clone();
        let proc = executor::spawn_task(lines.clone(), &sh.spec.secrets, move |out, stop| {
            crate::plugins::copyfile::run(copy, Target::Sftp(sftp), name, out, stop)
        });
        let exit = proc.wait(sh.cancel.clone()).await;
        session.close().await;
        return Ok(exit);
    }
    let exports: String = env
        .iter()
        .map(|(k, v)| format!("export {k}={}; ", shell_quote(v)))
        .collect();
    let (remote, stdin) = match cmd {
        StepCommand::Exec { command } => (format!("{exports}{command}"), None),
        StepCommand::LocalExec { .. } | StepCommand::Plugin { .. } => {
            unreachable!("run on the runner above")
        }
        StepCommand::Script {
            script,
            args,
            interpreter,
            interpreter_args_quoted,
            file_extension,
            ..
        } => {
            // Copy the script, run it with its args, remove it, keep its status.
            let args = args.as_deref().filter(|a| !a.trim().is_empty());
            let runner = match (interpreter, interpreter_args_quoted) {
                // One argument, `"$f"` expanded by the remote shell and the
                // args kept as they are: `bash -c "$f"' a b'`.
                (Some(i), true) => format!(
                    "{i} \"$f\"{}",
                    args.map(|a| shell_quote(&format!(" {a}")))
                        .unwrap_or_default()
                ),
                _ => executor::script_line(
                    interpreter.as_deref(),
                    false,
                    script.starts_with("#!"),
                    "\"$f\"",
                    "$f",
                    args,
                ),
            };
            let make = match file_extension.as_deref().map(|e| e.trim_start_matches('.')) {
                Some(ext) if !ext.is_empty() => format!(
                    "t=$(mktemp) && f=\"$t\".{} && mv \"$t\" \"$f\"",
                    shell_quote(ext)
                ),
                _ => "f=$(mktemp)".to_string(),
            };
            (
                format!(
                    "{exports}{make} && trap 'rm -f \"$f\"' EXIT && trap 'exit 143' TERM && cat > \"$f\" && chmod 700 \"$f\" || exit 127; {runner}"
                ),
                Some(bytes::Bytes::from(script.clone())),
            )
        }
    };
    let exit = session
        .run(
            &remote,
            stdin,
            lines,
            &sh.cancel,
            sh.ctx.ssh.command_timeout,
        )
        .await
        .map_err(|e| e.to_string());
    session.close().await;
    exit
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

mod credentials;
#[cfg(test)]
mod tests;

use credentials::credentials;
pub(crate) use credentials::read_stored;
