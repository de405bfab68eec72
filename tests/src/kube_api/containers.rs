//! A "container" is its `command` + `args` run as a local process, in a
//! process group of its own so that deleting the pod can kill everything it
//! started, as a container runtime kills a container's whole cgroup.

use std::convert::Infallible;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::objects::{now, timestamp};

/// What to run for one container.
#[derive(Debug, Clone, Default)]
pub(super) struct ProcessSpec {
    /// `command` then `args`; empty: run nothing and stay Running until
    /// deleted (the fake's `sleep infinity`, for pods that are only
    /// exec'd into).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) enum RunState {
    Waiting,
    Running {
        started: DateTime<Utc>,
    },
    Terminated {
        code: i32,
        reason: &'static str,
        message: Option<String>,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    },
}

impl RunState {
    pub fn is_terminated(&self) -> bool {
        matches!(self, RunState::Terminated { .. })
    }
}

/// One container's life: its state, its pid and its log. Shared by the pod
/// (for rendering), the task that reaps the process, and log followers.
pub(super) struct Run {
    inner: Mutex<RunInner>,
    /// Bumped on every new line and state change, for followers to wake on.
    changed: watch::Sender<()>,
}

struct RunInner {
    state: RunState,
    pid: Option<u32>,
    lines: Vec<(DateTime<Utc>, String)>,
    changes: u64,
}

impl Run {
    pub fn new() -> Arc<Run> {
        Arc::new(Run {
            inner: Mutex::new(RunInner {
                state: RunState::Waiting,
                pid: None,
                lines: Vec::new(),
                changes: 0,
            }),
            changed: watch::channel(()).0,
        })
    }

    pub fn state(&self) -> RunState {
        self.inner.lock().unwrap().state.clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.inner.lock().unwrap().pid
    }

    /// How many times it changed, for the pod's `resourceVersion`.
    pub fn changes(&self) -> u64 {
        self.inner.lock().unwrap().changes
    }

    fn update(&self, f: impl FnOnce(&mut RunInner)) {
        {
            let mut inner = self.inner.lock().unwrap();
            f(&mut inner);
            inner.changes += 1;
        }
        self.changed.send_replace(());
    }

    /// Starts the process (or, with no argv, just goes Running). Does
    /// nothing if the pod was deleted before it got here.
    pub fn start(self: &Arc<Self>, spec: &ProcessSpec) {
        let started = now();
        let spawned = {
            // Held across the spawn so that a concurrent `kill` either comes
            // first (and nothing starts) or sees the pid.
            let mut inner = self.inner.lock().unwrap();
            if !matches!(inner.state, RunState::Waiting) {
                return;
            }
            inner.changes += 1;
            if spec.argv.is_empty() {
                inner.state = RunState::Running { started };
                None
            } else {
                match spawn(spec) {
                    Ok((child, output)) => {
                        inner.pid = child.id();
                        inner.state = RunState::Running { started };
                        Some((child, output))
                    }
                    Err(e) => {
                        // What containerd reports when the entrypoint
                        // cannot be executed.
                        inner.state = RunState::Terminated {
                            code: 128,
                            reason: "StartError",
                            message: Some(format!(
                                "failed to create containerd task: exec: {:?}: {e}",
                                spec.argv[0]
                            )),
                            started,
                            finished: started,
                        };
                        None
                    }
                }
            }
        };
        self.changed.send_replace(());
        if let Some((child, output)) = spawned {
            tokio::spawn(reap(self.clone(), child, output, started));
        }
    }

    /// SIGKILLs the container's process group; a container with nothing
    /// running just ends. The reaper records how the process ended.
    pub fn kill(&self) {
        let ended = {
            let mut inner = self.inner.lock().unwrap();
            let t = now();
            let started = match (inner.state.clone(), inner.pid) {
                (RunState::Terminated { .. }, _) => None,
                (RunState::Running { .. }, Some(pid)) => {
                    kill_group(pid);
                    None
                }
                (RunState::Running { started }, None) => Some(started),
                (RunState::Waiting, _) => Some(t),
            };
            if let Some(started) = started {
                inner.state = RunState::Terminated {
                    code: 137,
                    reason: "Error",
                    message: None,
                    started,
                    finished: t,
                };
                inner.changes += 1;
            }
            started.is_some()
        };
        if ended {
            self.changed.send_replace(());
        }
    }

    /// Returns once the container has ended and its process was reaped.
    pub async fn terminated(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            let ended = self.inner.lock().unwrap().state.is_terminated();
            if ended {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// The log from line `from` on, each line ending in `\n`; and whether the
    /// container has ended (so no more lines will come).
    fn lines_from(&self, from: usize, timestamps: bool) -> (String, usize, bool) {
        let inner = self.inner.lock().unwrap();
        let mut out = String::new();
        for (t, line) in inner.lines.iter().skip(from) {
            if timestamps {
                out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
                out.push(' ');
            }
            out.push_str(line);
            out.push('\n');
        }
        (out, inner.lines.len(), inner.state.is_terminated())
    }

    /// Index of the first line of the last `tail` lines.
    fn tail_start(&self, tail: Option<usize>) -> usize {
        let len = self.inner.lock().unwrap().lines.len();
        tail.map_or(0, |n| len.saturating_sub(n))
    }

    /// The log as it is now.
    pub fn log(&self, tail: Option<usize>, timestamps: bool) -> String {
        self.lines_from(self.tail_start(tail), timestamps).0
    }

    /// The log, then each line as it is written, ending when the container
    /// ends: the body of `log?follow=true`.
    pub fn follow(
        self: &Arc<Self>,
        tail: Option<usize>,
        timestamps: bool,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        // Subscribed before the first read, so no line can slip in between.
        let rx = self.changed.subscribe();
        let from = self.tail_start(tail);
        futures::stream::unfold(
            (self.clone(), from, rx, false),
            move |(run, mut next, mut rx, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let (chunk, len, ended) = run.lines_from(next, timestamps);
                    next = len;
                    if !chunk.is_empty() {
                        let chunk = Ok::<_, Infallible>(Bytes::from(chunk));
                        return Some((chunk, (run, next, rx, ended)));
                    }
                    if ended || rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }

    fn push_line(&self, line: String) {
        self.update(|inner| inner.lines.push((now(), line)));
    }
}

/// Starts the process with stdout and stderr on one pipe, so that the log
/// keeps the order in which lines were written (kubectl and the kubelet's
/// log interleave both streams too).
fn spawn(spec: &ProcessSpec) -> std::io::Result<(tokio::process::Child, pipe::Receiver)> {
    let (output, writer) = output_pipe()?;
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer.try_clone()?))
        .stderr(Stdio::from(writer))
        .process_group(0);
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn()?;
    // `cmd` goes now, closing our copies of the write end: the log ends
    // when the container's processes are gone.
    Ok((child, output))
}

fn output_pipe() -> std::io::Result<(pipe::Receiver, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`, owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are open and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Only our end becomes non-blocking; the container writes as usual.
    Ok((pipe::Receiver::from_owned_fd(read)?, write))
}

/// Collects the output and records how the process ended.
async fn reap(
    run: Arc<Run>,
    mut child: tokio::process::Child,
    output: pipe::Receiver,
    started: DateTime<Utc>,
) {
    let pid = child.id();
    let (_, status) = tokio::join!(collect(&run, output), async {
        let status = child.wait().await;
        // When a container's first process ends, the runtime kills the
        // rest of it; so do we, or a background child holding the pipe
        // open would keep the container "running".
        if let Some(pid) = pid {
            kill_group(pid);
        }
        status
    });
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 255,
    };
    let finished = now();
    run.update(|inner| {
        inner.state = RunState::Terminated {
            code,
            reason: if code == 0 { "Completed" } else { "Error" },
            message: None,
            started,
            finished,
        };
    });
}

async fn collect(run: &Run, output: impl AsyncRead + Unpin) {
    let mut reader = BufReader::new(output);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                run.push_line(String::from_utf8_lossy(&buf).into_owned());
            }
        }
    }
}

/// SIGKILLs the process group led by `pid`.
pub(super) fn kill_group(pid: u32) {
    // SAFETY: killpg has no memory-safety preconditions; a group that is
    // already gone just gives ESRCH.
    unsafe {
        libc::killpg(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// The `state` of a container status, and whether it is ready.
pub(super) fn state_json(state: &RunState, container_id: &str) -> (serde_json::Value, bool) {
    use serde_json::json;
    match state {
        RunState::Waiting => (json!({"waiting": {"reason": "ContainerCreating"}}), false),
        RunState::Running { started } => {
            (json!({"running": {"startedAt": timestamp(*started)}}), true)
        }
        RunState::Terminated {
            code,
            reason,
            message,
            started,
            finished,
        } => {
            let mut t = json!({
                "exitCode": code,
                "reason": reason,
                "startedAt": timestamp(*started),
                "finishedAt": timestamp(*finished),
                "containerID": container_id,
            });
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            (json!({ "terminated": t }), false)
        }
    }
}
