//! The runner's durable outbox. Every event and log chunk of a step is
//! written here before it is published, and removed only once JetStream has
//! acknowledged it, so a link cut or a restart loses nothing: entries wait
//! on disk and go out, in order, when NATS answers again.
//!
//! Entries belong to lanes, one per claimed step (its claim key). A lane
//! publishes one entry at a time, each acknowledged before the next, so a
//! step's messages are stored in the order they were written; lanes run
//! side by side. A retried publish keeps its `Nats-Msg-Id`: a copy that had
//! in fact been stored (its ack was lost with the link) is dropped by the
//! stream's duplicate window.
//!
//! On disk: one file per entry in one directory, named by a sequence number
//! that follows write order. A file is written under a temporary name and
//! renamed, so a crash leaves a whole entry or none. Payloads stay on disk
//! (memory holds only what is needed to order and account for them). The
//! directory is locked; one process owns an outbox at a time, and a process
//! that inherits entries also inherits the replica id that wrote them.
//!
//! The outbox is bounded (`max_bytes`). When it is full, writers wait until
//! acknowledged entries make room: a step that prints blocks on its output
//! pipe, and nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// 256 MiB: about half an hour of a step printing 1 000 lines a second,
/// or a one-minute outage of 50 such steps.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// First line of every entry file: format and version.
const MAGIC: &str = "outpost-outbox 1";
const SUFFIX: &str = "msg";
/// Holds the replica id of the process whose entries are here.
const REPLICA_FILE: &str = "replica";

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "outbox {path} is in use by another runner process; give each runner process on a host its own work dir"
    )]
    Locked { path: PathBuf },
    #[error("the runner is stopping; the message for `{subject}` was not written")]
    Closed { subject: String },
}

#[derive(Debug, Clone)]
pub struct OutboxOptions {
    pub dir: PathBuf,
    /// Most bytes (payloads and headers) held at once.
    pub max_bytes: u64,
    /// fsync every entry (and the directory) before publishing it, so that
    /// entries survive a host crash, not only a process crash.
    pub sync: bool,
}

/// What precedes an entry's payload on disk.
#[derive(Serialize, Deserialize)]
struct OnDisk {
    lane: String,
    subject: String,
    msg_id: String,
    len: usize,
}

struct Entry {
    seq: u64,
    size: u64,
    /// False while its file is being written: the lane waits for it.
    written: bool,
    recovered: bool,
    /// `Some(true)` once acknowledged, `Some(false)` if NATS can never take
    /// it (set aside in `rejected/`).
    done: watch::Sender<Option<bool>>,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Entry>,
    draining: bool,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    bytes: u64,
    entries: usize,
    recovered_left: usize,
    lanes: HashMap<String, Lane>,
}

impl State {
    /// Forgets the entry at the head of `lane` (published or set aside).
    fn pop(&mut self, lane: &str) -> Entry {
        let l = self.lanes.get_mut(lane).expect("a draining lane exists");
        let e = l.queue.pop_front().expect("the head was published");
        self.bytes -= e.size;
        self.entries -= 1;
        if e.recovered {
            self.recovered_left -= 1;
        }
        e
    }
}

struct Inner {
    opts: OutboxOptions,
    js: OnceLock<jetstream::Context>,
    state: Mutex<State>,
    /// Bumped whenever an entry is written or leaves.
    changed: watch::Sender<u64>,
    /// Whether the client is connected: lanes do not publish into a dead
    /// link (each try would queue one more copy in the client), and start
    /// again as soon as it is back rather than at their next backoff.
    online: watch::Sender<bool>,
    /// A full outbox is reported once per episode, not once per writer.
    full_reported: AtomicBool,
    stop: CancellationToken,
    /// Held for the life of the outbox: the `flock` is the process's claim.
    _lock: DirLock,
}

/// The outbox directory's `flock`, released when the outbox goes. Closing
/// the file is not enough: a child forked meanwhile (any step's process)
/// holds a copy of the descriptor until it execs, and with it the lock,
/// so a reopen right after would find the directory locked.
struct DirLock(std::fs::File);

impl Drop for DirLock {
    fn drop(&mut self) {
        // SAFETY: flock(2) on a descriptor we own; LOCK_UN releases the
        // lock of its open file description, whoever else holds a copy.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

impl Inner {
    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Records the end of an entry's write: queued for publishing, or
    /// forgotten if the write failed.
    fn written(
        &self,
        lane: &str,
        seq: u64,
        result: std::io::Result<()>,
    ) -> Result<(), OutboxError> {
        let mut st = self.state.lock().unwrap();
        let l = st
            .lanes
            .get_mut(lane)
            .expect("a lane lives while it has entries");
        let at = l
            .queue
            .iter()
            .position(|e| e.seq == seq)
            .expect("an entry leaves its lane only once written and published");
        let outcome = match result {
            Ok(()) => {
                l.queue[at].written = true;
                Ok(())
            }
            Err(source) => {
                let e = l.queue.remove(at).expect("found");
                st.bytes -= e.size;
                st.entries -= 1;
                Err(OutboxError::Io {
                    path: entry_path(&self.opts.dir, seq),
                    source,
                })
            }
        };
        drop(st);
        self.bump();
        outcome
    }
}

/// A cheap handle; clones share one outbox.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

/// Resolves once JetStream has acknowledged an entry.
#[derive(Clone)]
pub struct Receipt {
    done: watch::Receiver<Option<bool>>,
    closed: CancellationToken,
}

impl Receipt {
    /// Whether it is settled: acknowledged, or set aside as one NATS can
    /// never take.
    pub fn is_settled(&self) -> bool {
        self.done.borrow().is_some()
    }

    /// True once acknowledged; false if NATS can never take it, or if the
    /// outbox closes first (then it stays on disk for the next start).
    pub async fn acked(&mut self) -> bool {
        tokio::select! {
            d = self.done.wait_for(|d| d.is_some()) => matches!(d.as_deref(), Ok(Some(true))),
            _ = self.closed.cancelled() => false,
        }
    }
}

/// How much is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub entries: usize,
    pub bytes: u64,
}

impl Outbox {
    /// Opens (creating it 0700 if needed) and locks the outbox directory,
    /// and loads what a previous process left. Nothing is published until
    /// [`Outbox::start`].
    pub fn open(opts: OutboxOptions) -> Result<Self, OutboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutboxError::Io { path, source }
        };
        let dir = &opts.dir;
        crate::runner::private_dir(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // SAFETY: flock(2) on a descriptor we own; it only reads the fd.
        let locked = unsafe {
            use std::os::fd::AsRawFd;
            libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)
        };
        if locked != 0 {
            return Err(OutboxError::Locked { path: dir.clone() });
        }
        let mut state = State::default();
        for (seq, head) in recover(dir).map_err(io(dir))? {
            let size = entry_size(&head.subject, &head.msg_id, head.len);
            state.next_seq = state.next_seq.max(seq + 1);
            state.bytes += size;
            state.entries += 1;
            state.recovered_left += 1;
            state
                .lanes
                .entry(head.lane)
                .or_default()
                .queue
                .push_back(Entry {
                    seq,
                    size,
                    written: true,
                    recovered: true,
                    done: watch::channel(None).0,
                });
        }
        Ok(Outbox {
            inner: Arc::new(Inner {
                opts,
                js: OnceLock::new(),
                state: Mutex::new(state),
                changed: watch::channel(0).0,
                online: watch::channel(true).0,
                full_reported: AtomicBool::new(false),
                stop: CancellationToken::new(),
                _lock: DirLock(lock),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.opts.dir
    }

    /// The replica id for this process of `runner_id`: the previous
    /// process's, if it was the same runner and left entries here (its
    /// claims are still ours to report on), else a new one. Recorded for
    /// the next process either way.
    pub fn replica_id(&self, runner_id: &str) -> Result<Uuid, OutboxError> {
        let path = self.inner.opts.dir.join(REPLICA_FILE);
        let inherited = (self.recovered_left() > 0)
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|s| {
                let (runner, replica) = s.trim().split_once(' ')?;
                (runner == runner_id).then(|| Uuid::parse_str(replica).ok())?
            });
        let id = inherited.unwrap_or_else(Uuid::now_v7);
        if inherited.is_none() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{runner_id} {id}\n"))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| OutboxError::Io { path, source })?;
        }
        Ok(id)
    }

    /// Whether the client is connected, as last seen (every 100 ms once
    /// started): the runner's fetch loops watch it to fetch again after a
    /// reconnect.
    pub fn online(&self) -> watch::Receiver<bool> {
        self.inner.online.subscribe()
    }

    /// Whether `lane` still holds entries.
    pub fn lane_pending(&self, lane: &str) -> bool {
        self.inner.state.lock().unwrap().lanes.contains_key(lane)
    }

    /// Starts publishing through `client`, beginning with what a previous
    /// process left.
    pub fn start(&self, client: async_nats::Client, js: jetstream::Context) {
        if self.inner.js.set(js).is_err() {
            return;
        }
        // async-nats exposes its connection state only to be read: look
        // often, it is a cheap read.
        let inner = self.inner.clone();
        tokio::spawn(async move {
            use async_nats::connection::State;
            loop {
                let up = client.connection_state() == State::Connected;
                inner
                    .online
                    .send_if_modified(|o| std::mem::replace(o, up) != up);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = inner.stop.cancelled() => return,
                }
            }
        });
        let mut st = self.inner.state.lock().unwrap();
        let idle: Vec<String> = st
            .lanes
            .iter()
            .filter(|(_, l)| !l.draining)
            .map(|(k, _)| k.clone())
            .collect();
        for lane in idle {
            st.lanes.get_mut(&lane).expect("listed").draining = true;
            self.spawn_lane(lane);
        }
    }

    /// Stops publishing; unacknowledged entries stay on disk.
    pub fn close(&self) {
        self.inner.stop.cancel();
    }

    pub fn backlog(&self) -> Backlog {
        let st = self.inner.state.lock().unwrap();
        Backlog {
            entries: st.entries,
            bytes: st.bytes,
        }
    }

    /// Entries left by a previous process and not yet acknowledged.
    pub fn recovered_left(&self) -> usize {
        self.inner.state.lock().unwrap().recovered_left
    }

    /// Lanes (claim keys) that still hold entries a previous process left:
    /// steps this replica must still report on.
    pub fn recovered_lanes(&self) -> Vec<String> {
        let st = self.inner.state.lock().unwrap();
        st.lanes
            .iter()
            .filter(|(_, l)| l.queue.iter().any(|e| e.recovered))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Waits until `done` holds of the state; false if `timeout` passes or
    /// the outbox closes first.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let mut changed = self.inner.changed.subscribe();
        let wait = async {
            loop {
                if done(&self.inner.state.lock().unwrap()) {
                    return true;
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return false },
                    _ = self.inner.stop.cancelled() => return false,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// Waits until everything is acknowledged; false after `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.entries == 0).await
    }

    /// Waits until what a previous process left is acknowledged.
    pub async fn flush_recovered(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.recovered_left == 0).await
    }

    /// Writes one message to disk and queues it on `lane`; returns once it
    /// is on disk (waiting for room if the outbox is full). The receipt
    /// tells when JetStream has acknowledged it.
    pub async fn push(
        &self,
        lane: &str,
        subject: String,
        msg_id: String,
        payload: Bytes,
    ) -> Result<Receipt, OutboxError> {
        let inner = &self.inner;
        let size = entry_size(&subject, &msg_id, payload.len());
        let (tx, rx) = watch::channel(None);
        let mut changed = inner.changed.subscribe();
        // Reserve room and a place in the lane first: entries of one lane
        // go out in the order they were pushed, even if their files are
        // written in another.
        let seq = loop {
            {
                let mut st = inner.state.lock().unwrap();
                // An empty outbox takes any entry, so that one larger than
                // the bound cannot wait forever.
                if st.bytes == 0 || st.bytes + size <= inner.opts.max_bytes {
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    st.bytes += size;
                    st.entries += 1;
                    let l = st.lanes.entry(lane.to_string()).or_default();
                    l.queue.push_back(Entry {
                        seq,
                        size,
                        written: false,
                        recovered: false,
                        done: tx,
                    });
                    if !l.draining && inner.js.get().is_some() {
                        l.draining = true;
                        self.spawn_lane(lane.to_string());
                    }
                    break seq;
                }
            }
            if !inner.full_reported.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    dir = %inner.opts.dir.display(),
                    max_bytes = inner.opts.max_bytes,
                    "outbox full: holding step output until NATS acknowledges what is queued"
                );
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    return Err(OutboxError::Closed { subject });
                },
                _ = inner.stop.cancelled() => return Err(OutboxError::Closed { subject }),
            }
        };
        let head = OnDisk {
            lane: lane.to_string(),
            subject,
            msg_id,
            len: payload.len(),
        };
        if inner.opts.sync {
            // fsync takes milliseconds: keep it off the async workers. The
            // write and its bookkeeping happen together in the blocking
            // task, so that a caller who stops waiting leaves no entry
            // half-registered at the head of its lane.
            let task_inner = inner.clone();
            let lane = lane.to_string();
            tokio::task::spawn_blocking(move || {
                let written = write_entry(&task_inner.opts.dir, seq, &head, &payload, true);
                task_inner.written(&lane, seq, written)
            })
            .await
            .unwrap_or_else(|e| {
                Err(OutboxError::Io {
                    path: entry_path(&inner.opts.dir, seq),
                    source: std::io::Error::other(e),
                })
            })?;
        } else {
            // A create, a write and a rename into the page cache: tens of
            // microseconds, less than handing it to a blocking thread costs
            // on a busy host (and no await between reserving and recording).
            let written = write_entry(&inner.opts.dir, seq, &head, &payload, false);
            inner.written(lane, seq, written)?;
        }
        Ok(Receipt {
            done: rx,
            closed: inner.stop.clone(),
        })
    }

    fn spawn_lane(&self, lane: String) {
        let inner = self.inner.clone();
        tokio::spawn(drain_lane(inner, lane));
    }
}

fn entry_size(subject: &str, msg_id: &str, payload: usize) -> u64 {
    // The header line's JSON framing, roughly.
    (payload + subject.len() * 2 + msg_id.len() + 96) as u64
}

fn entry_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SUFFIX}"))
}

fn write_entry(
    dir: &Path,
    seq: u64,
    head: &OnDisk,
    payload: &[u8],
    sync: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = entry_path(dir, seq);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    let mut head_line = serde_json::to_vec(head).map_err(std::io::Error::other)?;
    head_line.push(b'\n');
    f.write_all(MAGIC.as_bytes())?;
    f.write_all(b"\n")?;
    f.write_all(&head_line)?;
    f.write_all(payload)?;
    if sync {
        f.sync_all()?;
    }
    drop(f);
    std::fs::rename(&tmp, &path)?;
    if sync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Moves an entry file into `dir/<sub>/`, under a name no later entry of
/// the same sequence number can take.
fn set_aside(dir: &Path, sub: &str, path: &Path) -> std::io::Result<PathBuf> {
    let into = dir.join(sub);
    std::fs::create_dir_all(&into)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = into.join(format!("{}-{name}", Uuid::now_v7().simple()));
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// The headers of the entries a previous process left, in write order. A
/// leftover temporary file (a crash mid-write) is removed; an entry that
/// cannot be read (a host crash without `sync`) is moved to `damaged/`,
/// with a warning.
fn recover(dir: &Path) -> std::io::Result<Vec<(u64, OnDisk)>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let Some(seq) = name
            .strip_suffix(&format!(".{SUFFIX}"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        match read_head(&path) {
            Ok(head) => found.push((seq, head)),
            Err(why) => {
                let to = set_aside(dir, "damaged", &path)?;
                tracing::warn!(file = %path.display(), moved_to = %to.display(), error = %why, "unreadable outbox entry set aside");
            }
        }
    }
    found.sort_by_key(|(seq, _)| *seq);
    Ok(found)
}

/// An entry's header, checked against the file's length, without reading
/// its payload: start-up reads a full outbox only once, when publishing.
fn read_head(path: &Path) -> Result<OnDisk, String> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut lines = std::io::BufReader::new(file);
    let (mut magic, mut head_line) = (String::new(), String::new());
    lines.read_line(&mut magic).map_err(|e| e.to_string())?;
    lines.read_line(&mut head_line).map_err(|e| e.to_string())?;
    if magic.trim_end_matches('\n') != MAGIC {
        return Err(format!("does not start with `{MAGIC}`"));
    }
    let head: OnDisk = serde_json::from_str(head_line.trim_end_matches('\n'))
        .map_err(|e| format!("bad header: {e}"))?;
    let payload = size.saturating_sub((magic.len() + head_line.len()) as u64);
    if payload != head.len as u64 {
        return Err(format!(
            "payload is {payload} bytes, header says {}",
            head.len
        ));
    }
    Ok(head)
}

fn read_entry(path: &Path) -> Result<(OnDisk, Bytes), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut lines = bytes.splitn(3, |b| *b == b'\n');
    if lines.next() != Some(MAGIC.as_bytes()) {
        return Err(format!("does not start with `{MAGIC}`"));
    }
    let head: OnDisk = serde_json::from_slice(lines.next().unwrap_or_default())
        .map_err(|e| format!("bad header: {e}"))?;
    let payload = lines.next().unwrap_or_default();
    if payload.len() != head.len {
        return Err(format!(
            "payload is {} bytes, header says {}",
            payload.len(),
            head.len
        ));
    }
    Ok((head, Bytes::copy_from_slice(payload)))
}

/// Publishes a lane's entries one at a time, each retried until JetStream
/// acknowledges it, then removed. Only an entry NATS can never take (larger
/// than the server's `max_payload`, or unreadable on disk) is set aside in
/// `rejected/`, with an error, so that it cannot hold its lane forever.
/// Ends when the lane is empty or the outbox closes.
async fn drain_lane(inner: Arc<Inner>, lane: String) {
    let js = inner
        .js
        .get()
        .expect("lanes start after the outbox")
        .clone();
    let mut changed = inner.changed.subscribe();
    let mut online = inner.online.subscribe();
    loop {
        let head = {
            let mut st = inner.state.lock().unwrap();
            let l = st.lanes.get_mut(&lane).expect("a draining lane exists");
            match l.queue.front() {
                None => {
                    st.lanes.remove(&lane);
                    return;
                }
                Some(e) if e.written => Some(e.seq),
                Some(_) => None,
            }
        };
        let Some(seq) = head else {
            // Its file is being written.
            tokio::select! {
                _ = changed.changed() => continue,
                _ = inner.stop.cancelled() => return,
            }
        };
        let path = entry_path(&inner.opts.dir, seq);
        let acked = match read_entry(&path) {
            Ok((head, payload)) => {
                match publish(&inner, &js, &mut online, &head, payload).await {
                    Some(outcome) => outcome,
                    None => return, // closed
                }
            }
            Err(why) => Err(format!("cannot read it back: {why}")),
        };
        match &acked {
            Ok(()) => {
                if let Err(err) = std::fs::remove_file(&path) {
                    // Left behind, it would be published again (and dropped
                    // as a duplicate) at the next start.
                    tracing::warn!(error = %err, file = %path.display(), "cannot remove an acknowledged outbox entry");
                }
            }
            Err(why) => {
                let to = set_aside(&inner.opts.dir, "rejected", &path);
                tracing::error!(error = %why, file = %path.display(), moved_to = ?to, "NATS can never take this outbox entry; set aside");
            }
        }
        {
            let mut st = inner.state.lock().unwrap();
            let e = st.pop(&lane);
            e.done.send_replace(Some(acked.is_ok()));
            if st.bytes <= inner.opts.max_bytes / 2 {
                inner.full_reported.store(false, Ordering::Relaxed);
            }
        }
        inner.bump();
    }
}

/// Publishes one entry until JetStream acknowledges it (`Ok`) or it can
/// never succeed (`Err`); `None` if the outbox closed meanwhile.
async fn publish(
    inner: &Inner,
    js: &jetstream::Context,
    online: &mut watch::Receiver<bool>,
    head: &OnDisk,
    payload: Bytes,
) -> Option<Result<(), String>> {
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    let mut attempts = 0u32;
    loop {
        tokio::select! {
            _ = online.wait_for(|up| *up) => {}
            _ = inner.stop.cancelled() => return None,
        }
        let sent = tokio::select! {
            r = crate::bus::publish_once(js, &head.subject, &head.msg_id, payload.clone()) => r,
            _ = inner.stop.cancelled() => return None,
        };
        match sent {
            Ok(_) => return Some(Ok(())),
            Err(failure) if failure.permanent => return Some(Err(failure.message)),
            Err(failure) => {
                attempts += 1;
                // Every try during a long outage would flood the log.
                if attempts == 1 || attempts.is_multiple_of(20) {
                    tracing::warn!(error = %failure.message, subject = head.subject, attempts, "publish from the outbox failed; retrying");
                }
                let wait = backoff.next().unwrap_or(Duration::from_secs(5));
                online.borrow_and_update();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Reconnected (or dropped again): try now.
                    _ = online.changed() => {}
                    _ = inner.stop.cancelled() => return None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, max_bytes: u64) -> OutboxOptions {
        OutboxOptions {
            dir: dir.join("outbox"),
            max_bytes,
            sync: false,
        }
    }

    fn queued_ids(ob: &Outbox, lane: &str) -> Vec<String> {
        let st = ob.inner.state.lock().unwrap();
        st.lanes[lane]
            .queue
            .iter()
            .map(|e| read_entry(&entry_path(ob.dir(), e.seq)).unwrap().0.msg_id)
            .collect()
    }

    #[tokio::test]
    async fn entries_and_the_replica_id_survive_a_reopen_in_write_order_per_lane() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES)).unwrap();
        let replica = ob.replica_id("r").unwrap();
        for (lane, n) in [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)] {
            ob.push(
                lane,
                format!("s.{lane}"),
                format!("{lane}{n}"),
                Bytes::from(format!("{{\"n\":{n}}}")),
            )
            .await
            .unwrap();
        }
        assert_eq!(ob.backlog().entries, 5);
        // A second process is refused while the first holds the outbox.
        assert!(matches!(
            Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES)),
            Err(OutboxError::Locked { .. })
        ));
        let bytes = ob.backlog().bytes;
        drop(ob);
        // A crash mid-write leaves a temporary file; a truncated entry is
        // set aside.
        let dir = tmp.path().join("outbox");
        std::fs::write(dir.join("00000000000000000099.tmp"), b"half").unwrap();
        std::fs::write(
            dir.join("00000000000000000098.msg"),
            format!(
                "{MAGIC}\n{{\"lane\":\"a\",\"subject\":\"s\",\"msg_id\":\"x\",\"len\":99}}\nshort"
            ),
        )
        .unwrap();
        let ob = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES)).unwrap();
        assert_eq!(ob.backlog(), Backlog { entries: 5, bytes });
        assert_eq!(ob.recovered_left(), 5);
        let mut lanes = ob.recovered_lanes();
        lanes.sort();
        assert_eq!(lanes, ["a", "b"]);
        // Its claims are still to be reported on: same replica.
        assert_eq!(ob.replica_id("r").unwrap(), replica);
        assert!(ob.lane_pending("a") && !ob.lane_pending("c"));
        assert_eq!(queued_ids(&ob, "a"), ["a1", "a2", "a3"]);
        assert_eq!(queued_ids(&ob, "b"), ["b1", "b2"]);
        assert_eq!(ob.inner.state.lock().unwrap().next_seq, 5);
        let damaged: Vec<String> = std::fs::read_dir(dir.join("damaged"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            damaged.len() == 1 && damaged[0].ends_with("-00000000000000000098.msg"),
            "{damaged:?}"
        );
        assert!(!dir.join("00000000000000000099.tmp").exists());
    }

    #[tokio::test]
    async fn an_empty_outbox_gives_a_new_replica_id() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES))
            .unwrap()
            .replica_id("r")
            .unwrap();
        let second = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES))
            .unwrap()
            .replica_id("r")
            .unwrap();
        assert_ne!(first, second);
        // Entries of another runner (a work dir re-used after re-enrolment)
        // do not hand over its replica.
        let ob = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES)).unwrap();
        let third = ob.replica_id("r").unwrap();
        ob.push("a", "s".into(), "1".into(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        drop(ob);
        let ob = Outbox::open(opts(tmp.path(), DEFAULT_MAX_BYTES)).unwrap();
        assert_ne!(ob.replica_id("other").unwrap(), third);
    }

    #[tokio::test]
    async fn a_full_outbox_holds_writers_until_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let ob = Outbox::open(opts(tmp.path(), 1000)).unwrap();
        let big = Bytes::from(vec![b'x'; 700]);
        // The first entry always fits; the second must wait for room,
        // which nothing makes here (no NATS to acknowledge the first).
        ob.push("a", "s".into(), "1".into(), big.clone())
            .await
            .unwrap();
        let waited = tokio::time::timeout(
            Duration::from_millis(300),
            ob.push("a", "s".into(), "2".into(), big.clone()),
        )
        .await;
        assert!(waited.is_err(), "a push into a full outbox must wait");
        let third = tokio::spawn({
            let ob = ob.clone();
            async move { ob.push("a", "s".into(), "3".into(), big).await }
        });
        ob.close();
        assert!(matches!(
            third.await.unwrap(),
            Err(OutboxError::Closed { .. })
        ));
        assert_eq!(ob.backlog().entries, 1);
        // A closed outbox answers waits at once.
        assert!(!ob.flush(Duration::MAX).await);
    }
}
