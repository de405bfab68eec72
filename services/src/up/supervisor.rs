//! Keeps the processes `outpost up` starts alive: restarts one that dies,
//! with backoff and one log line each time, and stops it when asked. Each
//! child is bound to `outpost up`'s life by `PR_SET_PDEATHSIG`, so that
//! even a SIGKILLed `outpost up` leaves no orphan behind.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use super::UpError;

/// How a child is (re)started: a fresh command each time, and what must
/// hold before it counts as started (nats-server's port answering).
pub struct ChildSpec {
    pub name: &'static str,
    pub command: Box<dyn Fn() -> Command + Send + Sync>,
    #[allow(clippy::type_complexity)]
    pub ready: Box<
        dyn for<'a> Fn(
                &'a mut Child,
            )
                -> Pin<Box<dyn Future<Output = Result<(), UpError>> + Send + 'a>>
            + Send
            + Sync,
    >,
    /// SIGTERM, then this long before SIGKILL, when stopping.
    pub grace: Duration,
}

/// A child that ran this long before dying is restarted at once.
const STABLE_AFTER: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts a child with the supervisor's settings: its own process group
/// (a Ctrl-C in the terminal reaches only `outpost up`, which stops the
/// children in order) and SIGTERM when `outpost up` dies.
pub fn spawn(name: &str, mut cmd: Command) -> Result<Child, UpError> {
    // The signal follows the thread that forked, not the process: children
    // are spawned from the runtime's worker threads (or the main thread),
    // which live as long as `outpost up` does.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then no signal comes.
            if libc::getppid() != parent {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            Ok(())
        });
    }
    cmd.process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| UpError::Io {
            what: format!("cannot start {name}"),
            source,
        })
}

/// Runs `first` (already started and ready) and restarts it from `spec`
/// whenever it exits, until `stop`; then stops it (SIGTERM, then SIGKILL
/// after the grace period).
pub async fn supervise(spec: ChildSpec, first: Child, stop: CancellationToken) {
    let mut child = Some(first);
    let mut backoff = Duration::from_millis(500);
    let mut started = tokio::time::Instant::now();
    loop {
        let Some(running) = child.as_mut() else {
            // Not running: wait out the backoff, then start it again.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match spawn(spec.name, (spec.command)()) {
                Ok(mut c) => match tokio::select! {
                    r = (spec.ready)(&mut c) => r,
                    _ = stop.cancelled() => {
                        super::terminate(&mut c, spec.grace).await;
                        return;
                    }
                } {
                    Ok(()) => {
                        tracing::info!(child = spec.name, pid = c.id(), "restarted");
                        started = tokio::time::Instant::now();
                        child = Some(c);
                    }
                    Err(err) => {
                        tracing::error!(child = spec.name, error = %err, ?backoff, "restart failed; trying again");
                        super::terminate(&mut c, spec.grace).await;
                    }
                },
                Err(err) => {
                    tracing::error!(child = spec.name, error = %err, ?backoff, "restart failed; trying again")
                }
            }
            continue;
        };
        tokio::select! {
            status = running.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() >= STABLE_AFTER {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(child = spec.name, %status, restart_in = ?backoff, "exited; restarting");
                child = None;
            }
            _ = stop.cancelled() => {
                super::terminate(running, spec.grace).await;
                return;
            }
        }
    }
}
