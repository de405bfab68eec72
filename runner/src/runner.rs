//! The runner component: binds to the dispatch consumers it may serve, claims
//! and runs steps, publishes their events and logs, and heartbeats.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use outpost_schemas::job::TagSet;
use outpost_schemas::{subjects, Event, Header, RunnerState};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{self, BusError, NatsOptions};
use crate::outbox::{Outbox, OutboxOptions, Receipt};

mod fetch;
mod heartbeat;
mod nodes;
mod notices;
mod step;

use fetch::bind_tag_sets;
use heartbeat::{heartbeat_loop, publish_heartbeat};
use notices::{abort_listener, control_listener, watch_creds};

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
    /// More, from an Ansible inventory on its host (`ansible-inventory`).
    pub ansible_inventory: Option<PathBuf>,
    /// More: pods, one node per container, as Rundeck's Kubernetes resource
    /// model lists them, configured by this YAML file of its keys.
    pub kubernetes_pods: Option<PathBuf>,
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
    /// The plugins it may run (`--allowed-plugins`); all it has if unset.
    pub allowed_plugins: Option<crate::plugins::AllowList>,
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
            ansible_inventory: None,
            kubernetes_pods: None,
            key_store: PathBuf::from("/etc/outpost/keys"),
            known_hosts: PathBuf::from("/etc/outpost/known_hosts"),
            host_key_policy: crate::ssh::HostKeyPolicy::Strict,
            ssh_connect_timeout: Duration::from_secs(10),
            connect_give_up: Duration::from_secs(60),
            outbox_dir: None,
            outbox_max_bytes: crate::outbox::DEFAULT_MAX_BYTES,
            outbox_sync: false,
            allowed_plugins: None,
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
    #[error("node source {0}")]
    Nodes(#[from] crate::node_source::NodeSourceError),
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
    /// The job's log limit passed, with `loglimitAction: halt`.
    LogLimit,
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
    /// The plugins it runs, and those its allow-list leaves out.
    plugins: crate::plugins::Usable,
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
            plugins: self.plugins.clone(),
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
        let mut nodes = crate::node_source::load(
            opts.nodes_file.as_deref(),
            opts.ansible_inventory.as_deref(),
        )?;
        if let Some(path) = &opts.kubernetes_pods {
            let listing = crate::plugins::kubernetes::pods_source::load(path, &opts.key_store);
            let pods = tokio::select! {
                r = listing => r.map_err(|message| crate::node_source::NodeSourceError {
                    path: path.clone(),
                    message,
                })?,
                // Told to stop before it took any work.
                _ = shutdown.cancelled() => return Ok(()),
            };
            let listed = nodes.get_or_insert_with(Vec::new);
            if let Some(twice) = pods
                .iter()
                .find(|p| listed.iter().any(|n| n.nodename == p.nodename))
            {
                return Err(crate::node_source::NodeSourceError {
                    path: path.clone(),
                    message: format!(
                        "node `{}` is also in another node source; a node comes from one source",
                        twice.nodename
                    ),
                }
                .into());
            }
            listed.extend(pods);
        }
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
            plugins: usable_plugins(&opts),
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
        fetchers.spawn(bind_tag_sets(
            shared.clone(),
            fetchers.clone(),
            steps.clone(),
            stop_fetching.clone(),
        ));

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

/// The plugins this runner offers: what it has and its list allows, or
/// none when its credential cannot fetch from the lanes they run on.
fn usable_plugins(opts: &RunnerOptions) -> crate::plugins::Usable {
    let usable = crate::plugins::Usable::new(opts.allowed_plugins.as_ref());
    let Some(path) = &opts.nats.creds_file else {
        return usable;
    };
    match bus::load_creds(path) {
        Ok((jwt, _)) if !crate::plugins::credential_reaches_lanes(&jwt) => {
            tracing::warn!(
                runner_id = %opts.runner_id,
                "this runner's credential was issued before plugin lanes and cannot fetch plugin steps, so it offers none; rotate it (`outpost runner rotate {}`), then restart the runner, to run them",
                opts.runner_id
            );
            crate::plugins::Usable::none()
        }
        _ => usable,
    }
}

/// The outbox lane of a dispatched step: its events and log chunks are
/// published in the order they were written.
fn lane(execution_id: Uuid, step: u32) -> String {
    // The claim key, so that the outbox's lanes name the steps they report.
    subjects::claim_key(execution_id, step)
}

/// Writes a step's event to the outbox on the step's lane; it is published
/// from there.
async fn report(outbox: &Outbox, lane: &str, event: &Event) -> Result<Receipt, RunnerError> {
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
