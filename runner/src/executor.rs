//! Runs one step as a child process in its own process group and turns its
//! output into ordered log entries.
//!
//! Output travels through a bounded channel: when the publisher falls behind,
//! the readers stop reading, the pipe fills and the child blocks on write.
//! Memory stays bounded and no line is dropped.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use outpost_schemas::{LogEntry, LogStream, StepCommand};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mask::{Masker, Secrets};

/// Longest line kept whole; longer lines are split into pieces of this size.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// How long a step's process group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long to keep reading after the step's process exits, for output that
/// its children still hold open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Cancelled (abort or shutdown deadline) and killed.
    Killed,
    /// A plugin step failed, for this reason.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot write script to {path}: {source}")]
    Script {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A plugin step whose configuration does not hold once expanded, or
    /// that this runner lacks.
    #[error("{0}")]
    Plugin(String),
}

/// A started step: a process, or a plugin's task.
pub struct RunningStep {
    work: Work,
    readers: Vec<tokio::task::JoinHandle<()>>,
    stop_reading: CancellationToken,
}

/// Run once the process has ended: what it leaves behind goes.
pub type AfterExit = Box<dyn FnOnce() + Send>;

enum Work {
    Process {
        child: Box<Child>,
        pid: u32,
        after: Option<AfterExit>,
    },
    Task {
        task: tokio::task::JoinHandle<Exit>,
        /// Tells the plugin to end what it started.
        stop: CancellationToken,
    },
}

/// Where a plugin writes its output: read as a process's pipes are, so
/// its lines are split, masked and ordered the same way.
pub struct PluginOutput {
    pub stdout: tokio::io::DuplexStream,
    pub stderr: tokio::io::DuplexStream,
}

/// Starts a plugin step: `body` runs as a task, writes to its output, ends
/// what it started when its token is cancelled, and returns how it ended.
pub fn spawn_task<F>(
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
    body: impl FnOnce(PluginOutput, CancellationToken) -> F,
) -> RunningStep
where
    F: std::future::Future<Output = Exit> + Send + 'static,
{
    let (stdout, out_read) = tokio::io::duplex(64 * 1024);
    let (stderr, err_read) = tokio::io::duplex(64 * 1024);
    let stop = CancellationToken::new();
    let task = tokio::spawn(body(PluginOutput { stdout, stderr }, stop.clone()));
    let stop_reading = CancellationToken::new();
    let readers = readers(out_read, err_read, lines, &stop_reading, secrets);
    RunningStep {
        work: Work::Task { task, stop },
        readers,
        stop_reading,
    }
}

fn readers(
    stdout: impl AsyncRead + Unpin + Send + 'static,
    stderr: impl AsyncRead + Unpin + Send + 'static,
    lines: mpsc::Sender<LogEntry>,
    stop_reading: &CancellationToken,
    secrets: &Secrets,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(read_lines(
            stdout,
            LogStream::Stdout,
            lines.clone(),
            stop_reading.clone(),
            Masker::new(secrets.clone()),
        )),
        tokio::spawn(read_lines(
            stderr,
            LogStream::Stderr,
            lines,
            stop_reading.clone(),
            Masker::new(secrets.clone()),
        )),
    ]
}

/// Starts `command` under `work_dir`; its output goes to `lines`. A
/// plugin step reads credentials from `key_store`.
pub fn spawn(
    command: &StepCommand,
    env: &BTreeMap<String, String>,
    work_dir: &Path,
    key_store: &Path,
    script_name: &str,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let (shell_line, script) = match command {
        StepCommand::Plugin {
            plugin,
            config,
            stored,
        } => {
            return crate::plugins::start(
                plugin,
                config,
                stored,
                &crate::plugins::Place {
                    key_store,
                    work_dir,
                    env,
                    node: None,
                },
                lines,
                secrets,
            )
        }
        // With secure values substituted in, the command goes through a
        // private file rather than `sh -c` arguments, which every local
        // user can read in /proc.
        StepCommand::Exec { command } | StepCommand::LocalExec { command }
            if !secrets.is_empty() =>
        {
            let path = work_dir.join(script_name);
            write_script(&path, command).map_err(|source| ExecError::Script {
                path: path.clone(),
                source,
            })?;
            (
                format!("/bin/sh {}", shell_quote(&path.to_string_lossy())),
                Some(path),
            )
        }
        StepCommand::Exec { command } | StepCommand::LocalExec { command } => {
            (command.clone(), None)
        }
        StepCommand::Script {
            script,
            args,
            interpreter,
            interpreter_args_quoted,
            file_extension,
            ..
        } => {
            let name = match file_extension.as_deref().map(|e| e.trim_start_matches('.')) {
                Some(ext) if !ext.is_empty() => format!("{script_name}.{ext}"),
                _ => script_name.to_string(),
            };
            let path = work_dir.join(name);
            write_script(&path, script).map_err(|source| ExecError::Script {
                path: path.clone(),
                source,
            })?;
            let file = path.to_string_lossy();
            let args = args.as_deref().filter(|a| !a.trim().is_empty());
            let line = script_line(
                interpreter.as_deref(),
                *interpreter_args_quoted,
                script.starts_with("#!"),
                &shell_quote(&file),
                &file,
                args,
            );
            (line, Some(path))
        }
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&shell_line)
        .current_dir(work_dir)
        .envs(env);
    let after = script.map(|p| -> AfterExit {
        Box::new(move || {
            let _ = std::fs::remove_file(p);
        })
    });
    start_process(cmd, "/bin/sh", after, lines, secrets)
}

/// Starts `program` with `args`, no shell between, as a step's process;
/// `after` runs once it has ended (or could not start).
pub fn spawn_program(
    program: &Path,
    args: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    after: AfterExit,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).envs(env);
    start_process(cmd, &program.to_string_lossy(), Some(after), lines, secrets)
}

fn start_process(
    mut cmd: Command,
    program: &str,
    after: Option<AfterExit>,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so that a kill reaches everything the step started.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => {
            if let Some(after) = after {
                after();
            }
            return Err(ExecError::Spawn {
                program: program.into(),
                source,
            });
        }
    };
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stop_reading = CancellationToken::new();
    let readers = readers(stdout, stderr, lines, &stop_reading, secrets);
    Ok(RunningStep {
        work: Work::Process {
            child: Box::new(child),
            pid,
            after,
        },
        readers,
        stop_reading,
    })
}

impl RunningStep {
    /// The process's id; none for a plugin's task.
    pub fn pid(&self) -> Option<u32> {
        match &self.work {
            Work::Process { pid, .. } => Some(*pid),
            Work::Task { .. } => None,
        }
    }

    /// Waits for the step to end, killing its process group (or telling
    /// its plugin to end its work) when `cancel` fires. Returns once its
    /// output is fully read (or abandoned).
    pub async fn wait(mut self, cancel: CancellationToken) -> Exit {
        let exit = match &mut self.work {
            Work::Process { child, pid, after } => {
                let exit = wait_process(child, *pid, &cancel).await;
                // Before the drain: what it leaves behind may hold its
                // pipes open.
                if let Some(after) = after.take() {
                    let _ = tokio::task::spawn_blocking(after).await;
                }
                exit
            }
            Work::Task { task, stop } => wait_task(task, stop, &cancel).await,
        };
        // Read what the pipes still hold. If the step's children keep them
        // open past the deadline, stop *reading*; what was read is still
        // delivered, however slow the publisher.
        let readers = futures::future::join_all(self.readers.drain(..));
        tokio::pin!(readers);
        tokio::select! {
            _ = &mut readers => {}
            _ = tokio::time::sleep(DRAIN_AFTER_EXIT) => {
                self.stop_reading.cancel();
                readers.await;
            }
        }
        exit
    }
}

async fn wait_process(child: &mut Child, pid: u32, cancel: &CancellationToken) -> Exit {
    tokio::select! {
        status = child.wait() => status_to_exit(status),
        _ = cancel.cancelled() => {
            kill_group(pid, libc::SIGTERM);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    kill_group(pid, libc::SIGKILL);
                    let _ = child.wait().await;
                }
            }
            // Whatever the shell left behind in its group goes too.
            kill_group(pid, libc::SIGKILL);
            Exit::Killed
        }
    }
}

/// A plugin gets the grace a process gets to end its remote work; then its
/// task is dropped, which drops what it holds (connections, requests).
async fn wait_task(
    task: &mut tokio::task::JoinHandle<Exit>,
    stop: &CancellationToken,
    cancel: &CancellationToken,
) -> Exit {
    let ended = |r: Result<Exit, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| Exit::Failed(format!("the plugin stopped: {e}")))
    };
    tokio::select! {
        r = &mut *task => ended(r),
        _ = cancel.cancelled() => {
            stop.cancel();
            if tokio::time::timeout(KILL_GRACE, &mut *task).await.is_err() {
                task.abort();
            }
            Exit::Killed
        }
    }
}

fn status_to_exit(status: std::io::Result<std::process::ExitStatus>) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        },
        Err(_) => Exit::Code(-1),
    }
}

fn kill_group(pgid: u32, signal: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; a stale pgid only
    // yields ESRCH.
    unsafe {
        libc::killpg(pgid as libc::pid_t, signal);
    }
}

/// Written with mode 0700 from the start: a script may hold secure option
/// values, and must never be readable by other users, not even briefly.
fn write_script(path: &Path, body: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // A leftover of a crashed run, or anything planted there, goes first.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?;
    f.write_all(body.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Single-quotes `s` for `/bin/sh`.
/// The shell line that runs a script file, as Rundeck builds it: the
/// interpreter, then the file and its args, or with `interpreterArgsQuoted`
/// the file and its args as one quoted argument (`bash -c 'file args'`).
/// `quoted_file` is the file as the shell should see it; `file` its plain
/// text, for the quoted form.
pub fn script_line(
    interpreter: Option<&str>,
    args_quoted: bool,
    has_shebang: bool,
    quoted_file: &str,
    file: &str,
    args: Option<&str>,
) -> String {
    let with_args = |head: String| match args {
        Some(a) => format!("{head} {a}"),
        None => head,
    };
    match interpreter {
        Some(i) if args_quoted => {
            let inner = match args {
                Some(a) => format!("{file} {a}"),
                None => file.to_string(),
            };
            format!("{i} {}", shell_quote(&inner))
        }
        Some(i) => with_args(format!("{i} {quoted_file}")),
        None if has_shebang => with_args(quoted_file.to_string()),
        None => with_args(format!("/bin/sh {quoted_file}")),
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn read_lines(
    mut pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    out: mpsc::Sender<LogEntry>,
    stop_reading: CancellationToken,
    mut masker: Masker,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let read = tokio::select! {
            r = pipe.read(&mut buf) => r,
            _ = stop_reading.cancelled() => break,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend(masker.push(&buf[..n]));
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            if !emit(&out, stream, &pending[start..end]).await {
                return;
            }
            start = end + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE_BYTES {
            let piece: Vec<u8> = pending.drain(..MAX_LINE_BYTES).collect();
            if !emit(&out, stream, &piece).await {
                return;
            }
        }
    }
    pending.extend(masker.finish());
    let mut pieces: Vec<&[u8]> = pending.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    for piece in pieces {
        if !emit(&out, stream, piece).await {
            return;
        }
    }
}

async fn emit(out: &mpsc::Sender<LogEntry>, stream: LogStream, bytes: &[u8]) -> bool {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let entry = LogEntry {
        meta: Default::default(),
        time: Utc::now(),
        stream,
        level: match stream {
            LogStream::Stdout => "NORMAL",
            LogStream::Stderr => "ERROR",
            LogStream::System => "VERBOSE",
        }
        .to_string(),
        log: String::from_utf8_lossy(bytes).into_owned(),
        node: None,
    };
    out.send(entry).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(cmd: StepCommand, cancel: CancellationToken) -> (Exit, Vec<LogEntry>) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let step = spawn(
            &cmd,
            &BTreeMap::new(),
            dir.path(),
            dir.path(),
            "s.sh",
            tx,
            &Secrets::default(),
        )
        .unwrap();
        let collect = tokio::spawn(async move {
            let mut v = Vec::new();
            while let Some(e) = rx.recv().await {
                v.push(e);
            }
            v
        });
        let exit = step.wait(cancel).await;
        (exit, collect.await.unwrap())
    }

    #[tokio::test]
    async fn exec_captures_both_streams_in_order_and_the_exit_code() {
        let (exit, lines) = run(
            StepCommand::Exec {
                command: "echo one; echo two >&2; printf 'three'; exit 3".into(),
            },
            CancellationToken::new(),
        )
        .await;
        assert_eq!(exit, Exit::Code(3));
        let texts: Vec<_> = lines.iter().map(|l| (l.stream, l.log.as_str())).collect();
        assert!(texts.contains(&(LogStream::Stdout, "one")));
        assert!(texts.contains(&(LogStream::Stderr, "two")));
        assert!(texts.contains(&(LogStream::Stdout, "three")));
    }

    #[tokio::test]
    async fn script_gets_args_and_is_removed_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let cmd = StepCommand::Script {
            script: "#!/bin/sh\necho \"$2-$1\"\n".into(),
            args: Some("a 'b c'".into()),
            interpreter: None,
            source: None,
            interpreter_args_quoted: false,
            file_extension: None,
            expand_tokens: false,
        };
        let step = spawn(
            &cmd,
            &BTreeMap::new(),
            dir.path(),
            dir.path(),
            "s.sh",
            tx,
            &Secrets::default(),
        )
        .unwrap();
        assert!(dir.path().join("s.sh").exists());
        assert_eq!(step.wait(CancellationToken::new()).await, Exit::Code(0));
        assert_eq!(rx.recv().await.unwrap().log, "b c-a");
        assert!(!dir.path().join("s.sh").exists());
    }

    /// Rundeck's `interpreterArgsQuoted` and `fileExtension`: `sh -c` gets
    /// the file and its args as one argument, and the file its extension.
    #[tokio::test]
    async fn a_quoted_interpreter_gets_file_and_args_as_one_argument() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let cmd = StepCommand::Script {
            script: "#!/bin/sh\necho \"${0##*.} $2-$1\"\n".into(),
            args: Some("a 'b c'".into()),
            interpreter: Some("sh -c".into()),
            source: None,
            interpreter_args_quoted: true,
            file_extension: Some(".ps1".into()),
            expand_tokens: false,
        };
        let step = spawn(
            &cmd,
            &BTreeMap::new(),
            dir.path(),
            dir.path(),
            "s",
            tx,
            &Secrets::default(),
        )
        .unwrap();
        assert!(dir.path().join("s.ps1").exists());
        assert_eq!(step.wait(CancellationToken::new()).await, Exit::Code(0));
        assert_eq!(rx.recv().await.unwrap().log, "ps1 b c-a");
    }

    #[test]
    fn script_lines_are_built_as_rundeck_builds_them() {
        let line = |i, q, shebang, args| script_line(i, q, shebang, "'/t/s'", "/t/s", args);
        assert_eq!(line(None, false, false, None), "/bin/sh '/t/s'");
        assert_eq!(line(None, false, true, Some("x")), "'/t/s' x");
        assert_eq!(
            line(Some("python3"), false, false, Some("-v")),
            "python3 '/t/s' -v"
        );
        assert_eq!(
            line(Some("sudo -u app bash -c"), true, false, Some("it's")),
            "sudo -u app bash -c '/t/s it'\\''s'"
        );
    }

    #[tokio::test]
    async fn long_lines_are_split_not_lost() {
        let (exit, lines) = run(
            StepCommand::Exec {
                command: format!("head -c {} /dev/zero | tr '\\0' x", MAX_LINE_BYTES * 2 + 10),
            },
            CancellationToken::new(),
        )
        .await;
        assert_eq!(exit, Exit::Code(0));
        let lens: Vec<usize> = lines.iter().map(|l| l.log.len()).collect();
        assert_eq!(lens, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 10]);
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let cancel = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(16);
        let cmd = StepCommand::Exec {
            command: format!(
                "sleep 1000 & echo $! > {}; echo started; wait",
                pidfile.display()
            ),
        };
        let step = spawn(
            &cmd,
            &BTreeMap::new(),
            dir.path(),
            dir.path(),
            "s.sh",
            tx,
            &Secrets::default(),
        )
        .unwrap();
        assert_eq!(rx.recv().await.unwrap().log, "started");
        cancel.cancel();
        assert_eq!(step.wait(cancel).await, Exit::Killed);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            process_gone(pid).await,
            "grandchild {pid} survived the kill"
        );
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipe_does_not_hold_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let cmd = StepCommand::Exec {
            command: format!(
                "echo before; sleep 30 & echo $! > {}; echo after",
                pidfile.display()
            ),
        };
        let started = std::time::Instant::now();
        let (exit, lines) = run(cmd, CancellationToken::new()).await;
        assert_eq!(exit, Exit::Code(0));
        let texts: Vec<&str> = lines.iter().map(|l| l.log.as_str()).collect();
        assert_eq!(texts, ["before", "after"]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited for the background child"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) on the sleep this test started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    /// Whether `pid` is gone (or a zombie awaiting its reaper) within 2 s:
    /// SIGKILL is asynchronous, so poll its state rather than guess a delay.
    async fn process_gone(pid: i32) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => true,
                Ok(stat) => stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z')),
            };
            if gone {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
