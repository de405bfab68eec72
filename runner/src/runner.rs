//! The runner component: binds to the dispatch consumers it may serve, claims
//! and runs steps, publishes their events and logs, and heartbeats.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use outpost_schemas::job::TagSet;
use outpost_schemas::{
    subjects, Event, Header, LogEntry, LogStream, RunnerHeartbeat, RunnerState, StepClaimed,
    StepDispatched, StepFinished, StepOutcome, StepStarted,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{self, BusError, NatsOptions};
use crate::executor::{self, Exit};
use crate::outbox::{Outbox, OutboxOptions, Receipt};

pub const DEFAULT_CAPACITY: usize = 50;

#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Runner identity; replicas share it. `_local` for the embedded runner.
    pub runner_id: String,
    pub tags: TagSet,
    /// Serve the control plane's local dispatch subject instead of tag sets.
    pub local: bool,
    pub nats: NatsOptions,
    /// Most steps this process runs at once; at the limit it stops fetching.
    pub capacity: usize,
    pub work_dir: PathBuf,
    /// How long running steps may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    pub heartbeat_every: Duration,
    /// Long-poll expiry of each fetch.
    pub fetch_expiry: Duration,
    /// In-progress ack cadence; must be well under the consumers' `ack_wait`.
    pub progress_every: Duration,
    /// Nodes this runner serves, from a `resources.yaml` on its host.
    pub nodes_file: Option<PathBuf>,
    /// Where `ssh-*-storage-path` attributes resolve (`keys/web/id` →
    /// `<key_store>/web/id`).
    pub key_store: PathBuf,
    pub known_hosts: PathBuf,
    pub host_key_policy: crate::ssh::HostKeyPolicy,
    pub ssh_connect_timeout: Duration,
    /// How long to keep trying the first connection to NATS.
    pub connect_give_up: Duration,
    /// Where events and logs wait for JetStream's ack; `<work_dir>/outbox`
    /// if unset. It must outlive the process: a restart flushes it.
    pub outbox_dir: Option<PathBuf>,
    pub outbox_max_bytes: u64,
    /// fsync each outbox entry (survives a host crash, costs a disk flush
    /// per message).
    pub outbox_sync: bool,
}

impl RunnerOptions {
    pub fn new(runner_id: impl Into<String>, tags: TagSet, nats: NatsOptions) -> Self {
        let runner_id = runner_id.into();
        RunnerOptions {
            work_dir: std::env::temp_dir().join(format!("outpost-runner-{runner_id}")),
            runner_id,
            tags,
            local: false,
            nats,
            capacity: DEFAULT_CAPACITY,
            shutdown_grace: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(5),
            fetch_expiry: Duration::from_secs(5),
            progress_every: Duration::from_secs(10),
            nodes_file: None,
            key_store: PathBuf::from("/etc/outpost/keys"),
            known_hosts: PathBuf::from("/etc/outpost/known_hosts"),
            host_key_policy: crate::ssh::HostKeyPolicy::Strict,
            ssh_connect_timeout: Duration::from_secs(10),
            connect_give_up: Duration::from_secs(60),
            outbox_dir: None,
            outbox_max_bytes: crate::outbox::DEFAULT_MAX_BYTES,
            outbox_sync: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(
        "runner id `{0}` is not valid: use letters, digits, `_` or `-`, not starting with `_`"
    )]
    BadId(String),
    #[error("cannot create work dir {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nodes file {path}: {message}")]
    Nodes { path: PathBuf, message: String },
    #[error("the control plane has not created `{what}` yet (is it running?): {message}")]
    Topology { what: String, message: String },
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// Why a running step's token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelReason {
    Abort,
    ShutdownDeadline,
}

/// A step this replica holds, from its claim until its finished event is
/// acknowledged (or the process leaves it in the outbox). Until then it is
/// listed in heartbeats, and a redelivery of its dispatch is ignored: the
/// step is ours, and its report may still be on its way.
struct Running {
    execution_id: Uuid,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
    /// Its process is over; only the report is pending.
    ended: bool,
}

struct Shared {
    opts: RunnerOptions,
    js: jetstream::Context,
    client: async_nats::Client,
    replica_id: Uuid,
    hostname: String,
    running: Mutex<HashMap<(Uuid, u32), Running>>,
    slots: Arc<Semaphore>,
    /// This runner's own node source, credentials included.
    local_nodes: Vec<outpost_schemas::node::Node>,
    /// Stopping because of a drain notice: running steps get all the time
    /// they need.
    draining: std::sync::atomic::AtomicBool,
    /// Every step event and log chunk goes through it.
    outbox: Outbox,
    /// Steps that have ended and wait for JetStream to acknowledge their
    /// finished event before acking their dispatch. They hold no slot.
    reporting: TaskTracker,
    /// Stop waiting for acks: the process is leaving, its outbox keeps
    /// what is not acknowledged for the next start.
    leaving: CancellationToken,
}

impl Shared {
    fn node_context(&self) -> crate::node_run::NodeContext {
        crate::node_run::NodeContext {
            key_store: self.opts.key_store.clone(),
            ssh: crate::ssh::SshOptions {
                known_hosts: self.opts.known_hosts.clone(),
                host_key_policy: self.opts.host_key_policy,
                connect_timeout: self.opts.ssh_connect_timeout,
                command_timeout: None,
            },
            work_dir: self.opts.work_dir.clone(),
            default_user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
        }
    }
}

pub struct Runner {
    opts: RunnerOptions,
}

impl Runner {
    pub fn new(opts: RunnerOptions) -> Self {
        Runner { opts }
    }

    /// Runs until `shutdown` fires, then stops fetching, lets running steps
    /// finish within `shutdown_grace`, kills what remains and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let mut opts = self.opts;
        // Replies come only to this prefix: the registry answers nowhere
        // else, so a runner cannot have it write to another subject.
        opts.nats
            .inbox_prefix
            .get_or_insert_with(|| format!("_INBOX_{}", opts.runner_id));
        let id_ok = opts.local
            || outpost_schemas::job::check_name("runner id", &opts.runner_id, |c| {
                c == '_' || c == '-'
            })
            .is_ok();
        if !id_ok {
            return Err(RunnerError::BadId(opts.runner_id));
        }
        private_dir(&opts.work_dir).map_err(|source| RunnerError::WorkDir {
            path: opts.work_dir.clone(),
            source,
        })?;
        // Read the node source first: a bad file should stop the runner
        // before it takes any work.
        let nodes = match &opts.nodes_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| RunnerError::Nodes {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Some(
                    crate::inventory::parse_resources(&text).map_err(|e| RunnerError::Nodes {
                        path: path.clone(),
                        message: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        // Before connecting: a second process on the same outbox should
        // fail at once, not after it has taken work.
        let outbox = Outbox::open(OutboxOptions {
            dir: opts
                .outbox_dir
                .clone()
                .unwrap_or_else(|| opts.work_dir.join("outbox")),
            max_bytes: opts.outbox_max_bytes,
            sync: opts.outbox_sync,
        })?;
        // A process that inherits entries inherits the replica that wrote
        // them: its claims are still held, and its heartbeats list them.
        let replica_id = outbox.replica_id(&opts.runner_id)?;
        // Told to stop before NATS answered (its supervisor died with it,
        // say): there is nothing to drain, so stop now rather than keep
        // trying to connect.
        let (client, js) = tokio::select! {
            c = bus::connect(&opts.nats, opts.connect_give_up) => c?,
            _ = shutdown.cancelled() => {
                tracing::info!(runner_id = %opts.runner_id, "stopped before connecting to NATS");
                return Ok(());
            }
        };
        let left = outbox.backlog();
        if left.entries > 0 {
            tracing::info!(
                entries = left.entries,
                bytes = left.bytes,
                dir = %outbox.dir().display(),
                "publishing what the previous process left in the outbox before taking work"
            );
        }
        outbox.start(client.clone(), js.clone());
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(opts.capacity)),
            hostname: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            replica_id,
            running: Mutex::new(HashMap::new()),
            draining: std::sync::atomic::AtomicBool::new(false),
            local_nodes: nodes.clone().unwrap_or_default(),
            outbox,
            reporting: TaskTracker::new(),
            leaving: CancellationToken::new(),
            opts,
            js,
            client: client.clone(),
        });
        if let Some(nodes) = nodes {
            let report = outpost_schemas::NodeReport {
                header: Header::now(),
                runner_id: shared.opts.runner_id.clone(),
                replica_id: shared.replica_id,
                // Where credentials live stays here.
                nodes: nodes.iter().map(|n| n.redacted()).collect(),
            };
            let subject = subjects::node_report(&shared.opts.runner_id);
            let id = report.header.message_id.to_string();
            if let Err(err) = bus::publish_json(&shared.js, &subject, &id, &report).await {
                // Its lanes would otherwise hold the outbox (and its lock).
                shared.outbox.close();
                return Err(err.into());
            }
            tracing::info!(runner_id = %shared.opts.runner_id, nodes = report.nodes.len(), "reported nodes");
        }
        tracing::info!(
            runner_id = %shared.opts.runner_id,
            replica_id = %shared.replica_id,
            tags = ?shared.opts.tags.tags(),
            "runner started"
        );

        // A drain notice stops this runner as SIGTERM does; the caller's
        // token stays untouched.
        let outer = shutdown;
        let shutdown = outer.child_token();
        let fetchers = TaskTracker::new();
        let steps = TaskTracker::new();
        let stop_fetching = shutdown.child_token();

        // Heartbeats and abort notices outlive fetching: a draining runner
        // still reports itself (as draining) and still honours aborts.
        let stop_background = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(
            shared.clone(),
            stop_fetching.clone(),
            stop_background.clone(),
        ));
        let aborts = tokio::spawn(abort_listener(
            shared.clone(),
            client.clone(),
            stop_background.clone(),
        ));
        let creds_watch = tokio::spawn(watch_creds(shared.clone(), stop_background.clone()));
        let control = tokio::spawn(control_listener(
            shared.clone(),
            shutdown.clone(),
            stop_background.clone(),
        ));
        // A restarted runner reports what its previous process did before
        // it takes new work. Bounded, so that an entry NATS keeps refusing
        // cannot keep the runner idle; it goes on retrying meanwhile.
        if shared.outbox.recovered_left() > 0 {
            let flushed = tokio::select! {
                f = shared.outbox.flush_recovered(FLUSH_FIRST_LIMIT) => f,
                _ = shutdown.cancelled() => false,
            };
            if flushed {
                tracing::info!(runner_id = %shared.opts.runner_id, "outbox from the previous process published");
            } else if !shutdown.is_cancelled() {
                tracing::warn!(
                    runner_id = %shared.opts.runner_id,
                    left = shared.outbox.recovered_left(),
                    "the previous process's outbox is not all acknowledged after {FLUSH_FIRST_LIMIT:?}; taking work anyway and still retrying"
                );
            }
        }
        if shared.opts.local {
            fetchers.spawn(fetch_loop(
                shared.clone(),
                subjects::dispatch_consumer(subjects::LOCAL_TOKEN),
                steps.clone(),
                stop_fetching.clone(),
            ));
        } else {
            fetchers.spawn(bind_tag_sets(
                shared.clone(),
                fetchers.clone(),
                steps.clone(),
                stop_fetching.clone(),
            ));
        }

        shutdown.cancelled().await;
        tracing::info!(runner_id = %shared.opts.runner_id, "stopping: no new steps; waiting for running ones");
        fetchers.close();
        fetchers.wait().await;
        steps.close();
        let draining = shared.draining.load(std::sync::atomic::Ordering::SeqCst);
        // A drain waits for running steps, and then for NATS to take their
        // reports, as long as it takes (the runner may never start again);
        // a SIGTERM meanwhile turns it into a plain stop.
        let grace = shared.opts.shutdown_grace;
        let ended = async {
            if draining {
                tokio::select! {
                    _ = steps.wait() => return true,
                    _ = outer.cancelled() => {}
                }
            }
            tokio::time::timeout(grace, steps.wait()).await.is_ok()
        };
        if !ended.await {
            tracing::warn!(runner_id = %shared.opts.runner_id, "shutdown deadline passed; killing running steps");
            for r in shared.running.lock().unwrap().values() {
                *r.reason.lock().unwrap() = Some(CancelReason::ShutdownDeadline);
                r.cancel.cancel();
            }
        }
        // Then one window for killed steps to end and report, and for NATS
        // to acknowledge the outbox; a stop leaves what remains on disk for
        // the next start.
        let reported = async {
            steps.wait().await;
            shared.reporting.close();
            shared.reporting.wait().await;
            shared.outbox.flush(Duration::MAX).await
        };
        tokio::pin!(reported);
        let flushed = if draining && !outer.is_cancelled() {
            tokio::select! {
                f = &mut reported => f,
                _ = outer.cancelled() => tokio::time::timeout(FLUSH_WINDOW, &mut reported)
                    .await
                    .unwrap_or(false),
            }
        } else {
            tokio::time::timeout(FLUSH_WINDOW, &mut reported)
                .await
                .unwrap_or(false)
        };
        // Writers waiting for room in a full outbox, and steps waiting for
        // acks, give up now.
        shared.outbox.close();
        shared.leaving.cancel();
        steps.wait().await;
        shared.reporting.close();
        shared.reporting.wait().await;
        let left = shared.outbox.backlog();
        if !flushed && left.entries > 0 {
            tracing::warn!(
                runner_id = %shared.opts.runner_id,
                entries = left.entries,
                bytes = left.bytes,
                dir = %shared.outbox.dir().display(),
                "NATS has not acknowledged everything; the rest stays in the outbox and goes out at the next start"
            );
        }
        stop_background.cancel();
        let _ = heartbeat.await;
        let _ = aborts.await;
        let _ = creds_watch.await;
        let _ = control.await;
        if left.entries == 0 {
            // Best effort: with NATS gone, liveness expiry says the same
            // thing later.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                publish_heartbeat(&shared, RunnerState::Stopped),
            )
            .await;
        } else {
            // "Stopped" would have the control plane end the steps whose
            // reports wait here as lost at once. Silence gives the next
            // process (same replica id) until the lost-runner deadline.
            tracing::info!(runner_id = %shared.opts.runner_id, "not announcing the stop: the next start will report what is in the outbox");
        }
        // Flush waits for a connection; with NATS gone it would wait forever.
        let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
        Ok(())
    }
}

/// How long a restarted runner waits for its old outbox to go out before it
/// takes work anyway.
const FLUSH_FIRST_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping runner gives killed steps to end and NATS to
/// acknowledge its outbox, after the shutdown grace.
const FLUSH_WINDOW: Duration = Duration::from_secs(10);

/// The outbox lane of a dispatched step: its events and log chunks are
/// published in the order they were written.
fn lane(execution_id: Uuid, step: u32) -> String {
    // The claim key, so that the outbox's lanes name the steps they report.
    subjects::claim_key(execution_id, step)
}

/// Writes a step's event to the outbox on the step's lane; it is published
/// from there.
async fn report(outbox: &Outbox, lane: &str, event: &Event) -> Result<Receipt, BusError> {
    let subject = event.subject();
    let payload = bus::encode(&subject, event)?;
    Ok(outbox
        .push(lane, subject, event.dedup_id(), payload)
        .await?)
}

/// Creates `dir` (mode 0700) or checks that it is ours and private: steps'
/// scripts, which may hold secure values, are written there, and the
/// default is under the shared /tmp, where another user could have made it
/// first.
pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by this runner (uid {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// How long a runner waits for the control plane to answer a request.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claim is asked for before the step is handed back: the
/// control plane may be busy or restarting meanwhile.
const CLAIM_PATIENCE: Duration = Duration::from_secs(60);

/// Asks the control plane which registered tag sets this runner serves, and
/// starts a fetch loop for each new one: at start, whenever a tag set is
/// registered (`outpost.tagsets.changed`), and at every heartbeat period in
/// case an announcement was missed.
async fn bind_tag_sets(
    shared: Arc<Shared>,
    fetchers: TaskTracker,
    steps: TaskTracker,
    stop: CancellationToken,
) {
    let mut changed = match shared.client.subscribe(subjects::TAGSETS_CHANGED).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "cannot follow tag-set announcements; polling instead");
            None
        }
    };
    let mut bound: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(shared.opts.heartbeat_every);
    let subject = subjects::rpc(&shared.opts.runner_id, subjects::rpc::TAGSETS);
    let request = outpost_schemas::rpc::TagSetsRequest {
        tags: shared.opts.tags.tags().to_vec(),
    };
    loop {
        match bus::request_json::<_, outpost_schemas::rpc::TagSetsReply>(
            &shared.client,
            &subject,
            &request,
            RPC_TIMEOUT,
        )
        .await
        {
            Ok(reply) => {
                for token in reply.tokens {
                    if bound.insert(token.clone()) {
                        tracing::info!(runner_id = %shared.opts.runner_id, tag_set = %token, "serving tag set");
                        fetchers.spawn(fetch_loop(
                            shared.clone(),
                            subjects::dispatch_consumer(&token),
                            steps.clone(),
                            stop.clone(),
                        ));
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, runner_id = %shared.opts.runner_id, "cannot learn which tag sets to serve; retrying");
            }
        }
        let announced = async {
            match changed.as_mut() {
                Some(sub) => {
                    sub.next().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = announced => {}
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Long-polls one consumer, one message per free slot.
async fn fetch_loop(
    shared: Arc<Shared>,
    consumer_name: String,
    steps: TaskTracker,
    stop: CancellationToken,
) {
    let consumer = loop {
        match shared
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(
                &consumer_name,
                subjects::DISPATCH_STREAM,
            )
            .await
        {
            Ok(c) => break c,
            Err(err) => {
                tracing::warn!(error = %err, consumer = consumer_name, "consumer not available yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let mut online = shared.outbox.online();
    loop {
        let permit = tokio::select! {
            p = shared.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            return;
        }
        // A fetch is a long poll: it returns as soon as a message exists, or
        // empty after `fetch_expiry`. Not interrupted by `stop`, so that a
        // message that arrives meanwhile is handed back rather than stranded.
        let batch = consumer
            .fetch()
            .max_messages(1)
            .expires(shared.opts.fetch_expiry)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, consumer = consumer_name, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        // One message at most (max_messages(1)); the batch ends after it, or
        // empty at expiry. A reconnect meanwhile may be to a restarted
        // server that forgot this pull, and would answer it never: fetch
        // again at once. (Should the old server have sent a message in that
        // instant, it is redelivered after `ack_wait`.)
        let next = tokio::select! {
            m = batch.next() => m,
            _ = reconnected(&mut online) => {
                tracing::debug!(consumer = consumer_name, "reconnected; fetching again");
                continue;
            }
        };
        let msg = match next {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(err)) => {
                // e.g. the consumer was deleted: back off, do not spin.
                tracing::warn!(error = %err, consumer = consumer_name, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if stop.is_cancelled() {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return;
        }
        steps.spawn(handle_dispatch(shared.clone(), msg, permit));
    }
}

async fn handle_dispatch(
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
async fn run_claimed(
    shared: &Shared,
    d: &StepDispatched,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
) -> Result<Receipt, BusError> {
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
    if !d.secure_options.is_empty() {
        match fetch_secrets(shared, &d).await {
            Ok(mut values) => {
                // An optional secure option left empty is empty, as a plain
                // one is.
                for name in &d.secure_options {
                    values.entry(name.clone()).or_default();
                }
                secrets = crate::mask::Secrets::new(values.values());
                let vars: BTreeMap<String, String> = values
                    .iter()
                    .map(|(k, v)| (format!("option.{k}"), v.clone()))
                    .collect();
                let d = d.to_mut();
                for (name, value) in &values {
                    d.env
                        .insert(outpost_schemas::job::option_env_name(name), value.clone());
                }
                d.command = d.command.substituted(&vars);
                if let Some(nr) = d.node_run.as_mut() {
                    for s in &mut nr.steps {
                        s.command = s.command.substituted(&vars);
                    }
                }
            }
            Err(why) => {
                tracing::error!(execution_id = %execution_id, step, runner_id, reason = %why, "cannot fetch secure option values");
                return report(
                    &shared.outbox,
                    &lane,
                    &Event::StepFinished(StepFinished {
                        header: Header::now(),
                        execution_id,
                        step,
                        runner_id,
                        outcome: StepOutcome::Failed,
                        exit_code: None,
                        reason: Some(format!("cannot fetch secure option values: {why}")),
                        log_chunks: 0,
                    }),
                )
                .await;
            }
        }
    }
    let d = d.as_ref();

    if let Some(nr) = &d.node_run {
        return run_nodes(shared, &lane, d, nr, cancel, reason, secrets).await;
    }

    let (tx, mut rx) = mpsc::channel::<LogEntry>(1024);
    let (ptx, prx) = mpsc::channel(1024);
    // Output goes on the step's lane after its started event, not before
    // it: a started event queued behind a log chunk would wait for that
    // chunk's ack, and pickup latency with it.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let mut started_gate = Some(started_tx);
    let forward = tokio::spawn(async move {
        let _ = started_rx.await;
        while let Some(e) = rx.recv().await {
            if ptx.send((step, e)).await.is_err() {
                break;
            }
        }
    });
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
    let script_name = format!("{}-{step}.script", execution_id.simple());
    let (outcome, exit_code, why) = match executor::spawn(
        &d.command,
        &env,
        &shared.opts.work_dir,
        &script_name,
        tx.clone(),
        &secrets,
    ) {
        Err(err) => {
            system_line(&tx, format!("could not start the step: {err}")).await;
            (StepOutcome::Failed, None, Some(err.to_string()))
        }
        Ok(proc) => {
            let started = report(
                &shared.outbox,
                &lane,
                &Event::StepStarted(StepStarted {
                    header: Header::now(),
                    execution_id,
                    step,
                    runner_id: runner_id.clone(),
                    pid: Some(proc.pid()),
                }),
            )
            .await;
            if let Err(err) = started {
                // Work that cannot be reported must not go on: kill it all,
                // and its output with it. The output tasks go first: the
                // readers may be blocked handing lines to them.
                forward.abort();
                pump.abort();
                cancel.cancel();
                proc.wait(cancel).await;
                return Err(err);
            }
            started_gate.take().map(|g| g.send(()));
            tracing::debug!(execution_id = %execution_id, step, runner_id, "step started");
            match proc.wait(cancel).await {
                Exit::Code(0) => (StepOutcome::Succeeded, Some(0), None),
                Exit::Code(c) => {
                    system_line(&tx, format!("exit code {c}")).await;
                    (StepOutcome::Failed, Some(c), Some(format!("exit code {c}")))
                }
                Exit::Signal(s) => {
                    system_line(&tx, format!("killed by signal {s}")).await;
                    (
                        StepOutcome::Failed,
                        None,
                        Some(format!("killed by signal {s}")),
                    )
                }
                Exit::Killed => match *reason.lock().unwrap() {
                    Some(CancelReason::ShutdownDeadline) => (
                        StepOutcome::Failed,
                        None,
                        Some("runner shutdown deadline passed; step killed".into()),
                    ),
                    _ => (StepOutcome::Aborted, None, Some("aborted".into())),
                },
            }
        }
    };
    drop(tx);
    drop(started_gate);
    let _ = forward.await;
    let log_chunks = pump.await.expect("log pump does not panic")?.values().sum();
    report(
        &shared.outbox,
        &lane,
        &Event::StepFinished(StepFinished {
            header: Header::now(),
            execution_id,
            step,
            runner_id,
            outcome,
            exit_code,
            reason: why,
            log_chunks,
        }),
    )
    .await
}

/// Runs a node job's steps on its nodes, reporting each node step, then one
/// `StepFinished` for the whole dispatch.
async fn run_nodes(
    shared: &Shared,
    lane: &str,
    d: &StepDispatched,
    nr: &outpost_schemas::NodeRunDispatch,
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<CancelReason>>>,
    secrets: crate::mask::Secrets,
) -> Result<Receipt, BusError> {
    use crate::node_run::{self, NodeEvent, NodeRunSpec};
    let runner_id = shared.opts.runner_id.clone();
    let execution_id = d.execution_id;
    report(
        &shared.outbox,
        lane,
        &Event::StepStarted(StepStarted {
            header: Header::now(),
            execution_id,
            step: d.step,
            runner_id: runner_id.clone(),
            pid: None,
        }),
    )
    .await?;
    // Nodes this runner reported come back without credential attributes:
    // use its own, complete, entries for them.
    let nodes = nr
        .nodes
        .iter()
        .map(|n| {
            shared
                .local_nodes
                .iter()
                .find(|l| l.nodename == n.nodename)
                .cloned()
                .unwrap_or_else(|| n.clone())
        })
        .collect();
    let spec = NodeRunSpec {
        nodes,
        steps: nr
            .steps
            .iter()
            .map(|s| (s.step, s.command.clone()))
            .collect(),
        strategy: nr.strategy,
        threadcount: nr.threadcount as usize,
        node_keepgoing: nr.node_keepgoing,
        step_keepgoing: nr.step_keepgoing,
        env: d.env.clone(),
        secrets,
    };
    let (etx, mut erx) = mpsc::channel::<NodeEvent>(256);
    let (ltx, lrx) = mpsc::channel(1024);
    let pump = tokio::spawn(crate::logs::pump(
        shared.outbox.clone(),
        lane.to_string(),
        execution_id,
        runner_id.clone(),
        shared.replica_id,
        lrx,
    ));
    let outbox = shared.outbox.clone();
    let rid = runner_id.clone();
    let node_lane = lane.to_string();
    // Node events go out in the order they happen, on the step's lane.
    let reporter = tokio::spawn(async move {
        while let Some(ev) = erx.recv().await {
            let event = match ev {
                NodeEvent::Started { step, node } => {
                    Event::NodeStepStarted(outpost_schemas::NodeStepStarted {
                        header: Header::now(),
                        execution_id,
                        step,
                        node,
                        runner_id: rid.clone(),
                    })
                }
                NodeEvent::Finished(r) => {
                    Event::NodeStepFinished(outpost_schemas::NodeStepFinished {
                        header: Header::now(),
                        execution_id,
                        step: r.step,
                        node: r.node,
                        runner_id: rid.clone(),
                        outcome: r.outcome,
                        exit_code: r.exit_code,
                        reason: r.reason,
                    })
                }
            };
            report(&outbox, &node_lane, &event).await?;
        }
        Ok::<(), BusError>(())
    });
    let results = node_run::run(
        spec,
        shared.node_context(),
        etx.clone(),
        ltx,
        cancel.clone(),
    )
    .await;
    // Pairs that never ran are reported too, so state says so.
    for r in results.iter().filter(|r| r.outcome.is_none()) {
        let _ = etx.send(NodeEvent::Finished(r.clone())).await;
    }
    drop(etx);
    if let Err(err) = reporter.await.expect("reporter does not panic") {
        pump.abort();
        return Err(err);
    }
    let log_chunks: u64 = pump.await.expect("log pump does not panic")?.values().sum();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.outcome == Some(StepOutcome::Failed))
        .map(|r| {
            format!(
                "{} (step {}: {})",
                r.node,
                r.step,
                r.reason.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    let all_ok = results
        .iter()
        .all(|r| r.outcome == Some(StepOutcome::Succeeded));
    // A cancel that came after every node step succeeded changes nothing.
    let cancelled = !all_ok && cancel.is_cancelled();
    let deadline = *reason.lock().unwrap() == Some(CancelReason::ShutdownDeadline);
    let (outcome, reason) = if cancelled && deadline {
        (
            StepOutcome::Failed,
            Some("runner shutdown deadline passed; node steps killed".to_string()),
        )
    } else if cancelled {
        (StepOutcome::Aborted, Some("aborted".to_string()))
    } else if all_ok {
        (StepOutcome::Succeeded, None)
    } else if failed.is_empty() {
        (
            StepOutcome::Failed,
            Some("not every node step ran".to_string()),
        )
    } else {
        (
            StepOutcome::Failed,
            Some(format!("failed on {}", failed.join("; "))),
        )
    };
    report(
        &shared.outbox,
        lane,
        &Event::StepFinished(StepFinished {
            header: Header::now(),
            execution_id,
            step: d.step,
            runner_id,
            outcome,
            exit_code: None,
            reason,
            log_chunks,
        }),
    )
    .await
}

/// Asks for the step's secure option values, sealed to a one-use key.
async fn fetch_secrets(
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

async fn system_line(tx: &mpsc::Sender<LogEntry>, text: String) {
    let _ = tx
        .send(LogEntry {
            time: chrono::Utc::now(),
            stream: LogStream::System,
            level: "ERROR".into(),
            log: text,
            node: None,
        })
        .await;
}

/// The messages on `subject` until `stop`; `None` (logged) if the
/// subscription fails.
async fn notices(
    client: &async_nats::Client,
    subject: String,
    what: &str,
    stop: &CancellationToken,
) -> Option<std::pin::Pin<Box<impl futures::Stream<Item = async_nats::Message>>>> {
    match client.subscribe(subject).await {
        Ok(sub) => Some(Box::pin(sub.take_until(stop.clone().cancelled_owned()))),
        Err(err) => {
            tracing::error!(error = %err, what, "cannot subscribe");
            None
        }
    }
}

async fn abort_listener(shared: Arc<Shared>, client: async_nats::Client, stop: CancellationToken) {
    let prefix = subjects::runner_abort_prefix(&shared.opts.runner_id);
    let Some(mut notices) = notices(&client, format!("{prefix}.*"), "abort notices", &stop).await
    else {
        return;
    };
    while let Some(msg) = notices.next().await {
        // Only the orchestrator's notice: other publishers' replies (a
        // JetStream ack sent to a forged reply subject) are not aborts.
        if msg.payload.as_ref() != b"abort" {
            continue;
        }
        let Some(id) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            continue;
        };
        for r in shared.running.lock().unwrap().values() {
            if r.execution_id == id {
                *r.reason.lock().unwrap() = Some(CancelReason::Abort);
                r.cancel.cancel();
                tracing::info!(execution_id = %id, runner_id = %shared.opts.runner_id, "aborting step");
            }
        }
    }
}

/// Picks up rotated credentials. When the credentials file changes, the
/// client reconnects (reading the file again) and the runner tells the
/// control plane which key it now runs on, which then revokes the keys that
/// one replaced. Told once at start too: the file may have been replaced
/// while the runner was down.
async fn watch_creds(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(path) = shared.opts.nats.creds_file.clone() else {
        return;
    };
    if shared.opts.local {
        // The embedded runner uses the control plane's own credentials.
        return;
    }
    let key_of = |p: &std::path::Path| bus::load_creds(p).ok().map(|(_, kp)| kp.public_key());
    let mut current = key_of(&path);
    let mut told = false;
    let subject = subjects::rpc(&shared.opts.runner_id, subjects::rpc::ROTATED);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = key_of(&path);
        if now.is_some() && now != current {
            tracing::info!(runner_id = %shared.opts.runner_id, "credentials file changed; reconnecting with the new credentials");
            current = now;
            told = false;
            if let Err(err) = shared.client.force_reconnect().await {
                tracing::warn!(error = %err, "cannot reconnect");
            }
            continue;
        }
        if told {
            continue;
        }
        let Some(key) = current.clone() else { continue };
        let request = outpost_schemas::rpc::RotatedRequest { public_key: key };
        match bus::request_json::<_, outpost_schemas::rpc::RpcResult>(
            &shared.client,
            &subject,
            &request,
            RPC_TIMEOUT,
        )
        .await
        {
            Ok(_) => told = true,
            Err(err) => tracing::debug!(error = %err, "cannot report the credential in use yet"),
        }
    }
}

/// Answers pings, and drains on a drain notice: no new steps, running ones
/// finish, then the runner stops (and shows `down`).
async fn control_listener(shared: Arc<Shared>, drain: CancellationToken, stop: CancellationToken) {
    let id = &shared.opts.runner_id;
    let Some(mut notices) = notices(
        &shared.client,
        subjects::runner_control(id, "*"),
        "control notices",
        &stop,
    )
    .await
    else {
        return;
    };
    while let Some(msg) = notices.next().await {
        match msg.subject.rsplit('.').next() {
            Some("ping") => {
                let Ok(ping) = serde_json::from_slice::<outpost_schemas::rpc::Ping>(&msg.payload)
                else {
                    continue;
                };
                let pong = outpost_schemas::rpc::Pong {
                    nonce: ping.nonce,
                    replica_id: shared.replica_id,
                };
                let _ = shared
                    .client
                    .publish(
                        subjects::rpc(id, "pong"),
                        serde_json::to_vec(&pong).expect("pong").into(),
                    )
                    .await;
            }
            Some("drain") if msg.payload.as_ref() == b"drain" && !shared.opts.local => {
                tracing::info!(runner_id = %id, "drain requested: taking no new steps");
                // Unlike SIGTERM, a drain waits for running steps however
                // long they take.
                shared
                    .draining
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                drain.cancel();
            }
            _ => {}
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, draining: CancellationToken, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.opts.heartbeat_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let state = if draining.is_cancelled() {
            RunnerState::Draining
        } else {
            RunnerState::Running
        };
        if let Err(err) = publish_heartbeat(&shared, state).await {
            tracing::warn!(error = %err, runner_id = %shared.opts.runner_id, "heartbeat failed");
        }
    }
}

async fn publish_heartbeat(shared: &Shared, state: RunnerState) -> Result<bool, BusError> {
    let (running, steps) = {
        let map = shared.running.lock().unwrap();
        let mut steps: Vec<String> = map
            .keys()
            .map(|(exec, step)| subjects::claim_key(*exec, *step))
            .collect();
        // Steps a previous process of this replica left reports of: still
        // ours until they are out.
        for lane in shared.outbox.recovered_lanes() {
            if !steps.contains(&lane) {
                steps.push(lane);
            }
        }
        (map.values().filter(|r| !r.ended).count() as u32, steps)
    };
    let backlog = shared.outbox.backlog();
    let hb = RunnerHeartbeat {
        header: Header::now(),
        runner_id: shared.opts.runner_id.clone(),
        replica_id: shared.replica_id,
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: shared.hostname.clone(),
        tags: shared.opts.tags.tags().to_vec(),
        local: shared.opts.local,
        running_steps: running,
        capacity: shared.opts.capacity as u32,
        state,
        steps,
        outbox_entries: backlog.entries as u64,
        outbox_bytes: backlog.bytes,
    };
    let subject = subjects::heartbeat(&shared.opts.runner_id, shared.replica_id);
    bus::publish_json(&shared.js, &subject, &hb.header.message_id.to_string(), &hb).await
}

/// Resolves when the connection comes back after being lost; never, if the
/// watch ends.
async fn reconnected(online: &mut tokio::sync::watch::Receiver<bool>) {
    online.borrow_and_update();
    loop {
        if online.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *online.borrow_and_update() {
            return;
        }
    }
}
