//! One step's life on a Windows node: its shell opened (and only that
//! retried), a script copied in as the plugin's file copier copies it,
//! the command run with its output read as it comes, then the shell
//! closed. An abort, or a failure mid-way, cleans up on a new connection.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::transport::{Connection, TransportError};
use super::{clean_stderr, command_line, wsman, Shell, Target, PID_MARKER};
use crate::executor::{Exit, PluginOutput};
use crate::mask::Secrets;

/// Within the runner's grace (`executor::KILL_GRACE`), as the Kubernetes
/// deletes are, so the cleanup can still say what it did.
const CLEANUP_LIMIT: Duration = Duration::from_secs(4);

/// The longest command line cmd.exe runs (WinRS runs every command
/// through it, `WINRS_SKIP_CMD_SHELL=FALSE`): a copy command's piece is
/// sized to fit, after base64, UTF-16 and base64 again
/// (`-encodedcommand`). With the default directory that is about 1.9 KiB,
/// the plugin's 2 KiB; unlike the plugin, every piece goes through the one
/// shell, not a new shell (and NTLM handshake) each.
const MAX_COMMAND_LINE: usize = 8191;

/// How long an abort's extra commands (taskkill, the script's removal)
/// may take, so that the shell's Delete still has time.
const STEPS_LIMIT: Duration = Duration::from_secs(2);

/// What a step runs on the node.
pub(super) enum Work {
    Command(String),
    /// A script: copied to `path`, run by `line`, then removed.
    Script {
        path: String,
        body: Vec<u8>,
        line: String,
    },
}

pub(super) struct Run {
    pub target: Target,
    pub out: PluginOutput,
    pub secrets: Secrets,
    pub url: String,
    /// The remote PowerShell's pid, from the terminate-on-abort marker
    /// (0: the first line was not the marker).
    pub pid: Option<u32>,
}

/// Why a shell's work stopped before its end.
enum Stop {
    Aborted {
        command: Option<String>,
    },
    Failed {
        command: Option<String>,
        why: String,
    },
}

/// A command's end: its exit code and its stderr, whole.
struct Ran {
    code: i32,
    stderr: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// To the step's log as it comes.
    Stream,
    /// Kept for the caller (the copy's commands, the script's removal).
    Keep,
}

fn header<'a>(target: &Target, url: &'a str, shell: Option<&'a str>) -> wsman::Header<'a> {
    wsman::Header {
        url,
        operation_timeout_secs: target.operation_timeout,
        shell_id: shell,
        options: &[],
    }
}

impl Run {
    fn header<'a>(&'a self, shell: Option<&'a str>) -> wsman::Header<'a> {
        header(&self.target, &self.url, shell)
    }

    async fn say(&mut self, text: &str) {
        let _ = self
            .out
            .stderr
            .write_all(format!("{}\n", self.secrets.mask_str(text)).as_bytes())
            .await;
    }

    fn failed(&self, why: impl std::fmt::Display) -> Exit {
        Exit::Failed(self.secrets.mask_str(&format!("WinRM {}: {why}", self.url)))
    }

    pub(super) async fn run(
        &mut self,
        work: &Work,
        env: &BTreeMap<String, String>,
        stop: &CancellationToken,
    ) -> Exit {
        let (mut conn, shell) = match self.open(env, stop).await {
            Ok(pair) => pair,
            Err(exit) => return exit,
        };
        match self.body(&mut conn, &shell, work, stop).await {
            Ok(exit) => {
                let delete = wsman::delete(&self.header(Some(&shell)));
                let closed = tokio::time::timeout(CLEANUP_LIMIT, call_ok(&mut conn, &delete)).await;
                let problem = match closed {
                    Ok(Ok(())) => None,
                    Ok(Err(why)) => Some(why.to_string()),
                    Err(_) => Some(format!("no answer in {CLEANUP_LIMIT:?}")),
                };
                if let Some(why) = problem {
                    self.say(&format!("cannot close the WinRM shell {shell}: {why}"))
                        .await;
                }
                exit
            }
            Err(Stop::Aborted { command }) => {
                let said = self.end(&shell, command.as_deref(), work).await;
                self.say(&format!("aborted: {said}")).await;
                Exit::Killed
            }
            Err(Stop::Failed { command, why }) => {
                let said = self.end(&shell, command.as_deref(), work).await;
                self.say(&said).await;
                self.failed(why)
            }
        }
    }

    /// The shell, opened on an authenticated connection; only this is
    /// tried again, and only when the host could not be reached, as the
    /// plugin retries (a refused password is not tried again: that would
    /// lock accounts). A stop meanwhile lets a Create that may have gone
    /// through finish, and deletes its shell.
    async fn open(
        &mut self,
        env: &BTreeMap<String, String>,
        stop: &CancellationToken,
    ) -> Result<(Connection, String), Exit> {
        let mut tries = 0;
        loop {
            tries += 1;
            // `Err` when stopped: what the stop's cleanup has to say.
            let opened: Result<_, Option<String>> = {
                let opening = open_shell(&self.target, &self.url, env);
                tokio::pin!(opening);
                tokio::select! {
                    r = &mut opening => Ok(r),
                    _ = stop.cancelled() => {
                        // A Create that may have gone through: let it end
                        // and delete its shell, all within the limit.
                        let (target, url) = (&self.target, self.url.as_str());
                        let close = async {
                            let (mut conn, shell) = opening.await.ok()?;
                            let delete = wsman::delete(&header(target, url, Some(&shell)));
                            let done = call_ok(&mut conn, &delete).await;
                            Some((shell, done))
                        };
                        Err(match tokio::time::timeout(CLEANUP_LIMIT, close).await {
                            Ok(None) => None,
                            Ok(Some((shell, Ok(())))) => {
                                Some(format!("aborted: the WinRM shell {shell} was closed"))
                            }
                            Ok(Some((shell, Err(why)))) => Some(format!(
                                "aborted: cannot close the WinRM shell {shell}: {why}"
                            )),
                            Err(_) => Some(format!(
                                "aborted: a WinRM shell may still be open: no answer in {CLEANUP_LIMIT:?}"
                            )),
                        })
                    }
                }
            };
            let opened = match opened {
                Ok(r) => r,
                Err(said) => {
                    if let Some(said) = said {
                        self.say(&said).await;
                    }
                    return Err(Exit::Killed);
                }
            };
            let why = match opened {
                Ok(pair) => return Ok(pair),
                Err(why) => why,
            };
            let unreachable = matches!(
                why,
                CallError::Transport(
                    TransportError::Connect(..) | TransportError::ConnectTimeout(_)
                )
            );
            if !unreachable || tries >= self.target.tries {
                return Err(self.failed(format!("{why} (connection failed after {tries} tries)")));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.target.retry_delay) => {}
                _ = stop.cancelled() => return Err(Exit::Killed),
            }
        }
    }

    async fn body(
        &mut self,
        conn: &mut Connection,
        shell: &str,
        work: &Work,
        stop: &CancellationToken,
    ) -> Result<Exit, Stop> {
        let line = match work {
            Work::Command(line) => line,
            Work::Script { path, body, line } => {
                // An empty script is an empty file, still made.
                let size = chunk_size(path);
                let pieces: Vec<&[u8]> = if body.is_empty() {
                    vec![&[]]
                } else {
                    body.chunks(size).collect()
                };
                for (i, chunk) in pieces.into_iter().enumerate() {
                    let copy =
                        command_line(Shell::Powershell, &copy_chunk(path, chunk, i == 0), false);
                    let ran = self.exec(conn, shell, &copy, Output::Keep, stop).await?;
                    if ran.code != 0 {
                        return Err(Stop::Failed {
                            command: None,
                            why: format!(
                                "cannot copy the script to {path}: {}",
                                clean_stderr(&String::from_utf8_lossy(&ran.stderr)).trim()
                            ),
                        });
                    }
                }
                line
            }
        };
        let ran = self.exec(conn, shell, line, Output::Stream, stop).await?;
        // Its pid may be another process's by now.
        self.pid = None;
        if let Work::Script { path, .. } = work {
            // As Rundeck, a script that stays is said, not a failure.
            let del = command_line(self.target.shell, &remove(self.target.shell, path), false);
            match self.exec(conn, shell, &del, Output::Keep, stop).await {
                Ok(r) if r.code == 0 => {}
                Ok(r) => {
                    self.say(&format!(
                        "cannot remove the script {path} (exit {})",
                        r.code
                    ))
                    .await
                }
                Err(Stop::Failed { why, .. }) => {
                    self.say(&format!("cannot remove the script {path}: {why}"))
                        .await
                }
                Err(aborted) => return Err(aborted),
            }
        }
        Ok(self.exit_of(ran).await)
    }

    /// The plugin's `console` rule: a non-empty stderr (CLIXML cleaned)
    /// fails the node with exit 1; else the command's code is the node's.
    async fn exit_of(&mut self, ran: Ran) -> Exit {
        let stderr = String::from_utf8_lossy(&ran.stderr).into_owned();
        let cleaned = match self.target.shell {
            Shell::Powershell => clean_stderr(&stderr),
            Shell::Cmd => stderr,
        };
        if cleaned.trim().is_empty() {
            return Exit::Code(ran.code);
        }
        self.say("Execution finished with the following error")
            .await;
        // Under cmd stderr was streamed as it came.
        if self.target.shell == Shell::Powershell {
            self.say(cleaned.trim_end()).await;
        }
        Exit::Code(1)
    }

    /// One command in `shell`: Command, Receives until it is done (a
    /// Receive that times out on the host is sent again), then Signal
    /// `terminate`, as pywinrm ends every command.
    async fn exec(
        &mut self,
        conn: &mut Connection,
        shell: &str,
        line: &str,
        output: Output,
        stop: &CancellationToken,
    ) -> Result<Ran, Stop> {
        let req = wsman::command(
            &wsman::Header {
                options: &[
                    ("WINRS_CONSOLEMODE_STDIN", "TRUE"),
                    ("WINRS_SKIP_CMD_SHELL", "FALSE"),
                ],
                ..self.header(Some(shell))
            },
            line,
        );
        let command = tokio::select! {
            r = call(conn, &req, wsman::command_id) => r.map_err(|e| Stop::Failed { command: None, why: e.to_string() })?,
            _ = stop.cancelled() => return Err(Stop::Aborted { command: None }),
        };
        let mut stderr = Vec::new();
        let mut pending = Vec::new();
        let code = loop {
            let req = wsman::receive(&self.header(Some(shell)), &command);
            let got = tokio::select! {
                r = call(conn, &req, wsman::received) => r,
                _ = stop.cancelled() => return Err(Stop::Aborted { command: Some(command) }),
            };
            let got = match got {
                Ok(g) => g,
                Err(CallError::Wsman(wsman::WsmanError::Fault { code, .. }))
                    if code == wsman::FAULT_TIMED_OUT =>
                {
                    continue
                }
                Err(why) => {
                    return Err(Stop::Failed {
                        command: Some(command),
                        why: why.to_string(),
                    })
                }
            };
            if output == Output::Stream {
                self.stdout(&got.stdout, &mut pending).await;
                if self.target.shell == Shell::Cmd {
                    let _ = self.out.stderr.write_all(&got.stderr).await;
                }
            }
            stderr.extend(got.stderr);
            if let Some(code) = got.done {
                break code;
            }
        };
        let _ = self.out.stdout.write_all(&pending).await;
        let signal = wsman::signal(&self.header(Some(shell)), &command, wsman::SIGNAL_TERMINATE);
        let _ = tokio::time::timeout(CLEANUP_LIMIT, call_ok(conn, &signal)).await;
        Ok(Ran { code, stderr })
    }

    /// Writes stdout as it comes, holding back the first line only while
    /// it could still be the PID marker, which is not shown.
    async fn stdout(&mut self, bytes: &[u8], pending: &mut Vec<u8>) {
        let marked = self.target.terminate_on_abort && self.target.shell == Shell::Powershell;
        if !marked || self.pid.is_some() {
            let _ = self.out.stdout.write_all(bytes).await;
            return;
        }
        pending.extend(bytes);
        let Some(end) = pending.iter().position(|b| *b == b'\n') else {
            return;
        };
        let first = String::from_utf8_lossy(&pending[..end]).trim().to_string();
        let rest = match first.strip_prefix(PID_MARKER).map(|p| p.trim().parse()) {
            Some(Ok(pid)) => {
                self.pid = Some(pid);
                pending.split_off(end + 1)
            }
            _ => {
                self.pid = Some(0);
                std::mem::take(pending)
            }
        };
        pending.clear();
        let _ = self.out.stdout.write_all(&rest).await;
    }

    /// Cleans up after an abort or a failure, on a new connection (the
    /// first may be waiting in a Receive): Signal `terminate`; in a fresh
    /// shell, the plugin's `taskkill` when the pid is known, and the
    /// script's removal; then Delete. Each is tried whatever the others
    /// did, all within [`CLEANUP_LIMIT`]. Returns what it did.
    async fn end(&mut self, shell: &str, command: Option<&str>, work: &Work) -> String {
        let mut steps = Vec::new();
        if let Some(pid) = self.pid.filter(|p| *p > 0) {
            steps.push(format!("taskkill /F /T /PID {pid}"));
        }
        if let Work::Script { path, .. } = work {
            steps.push(remove(Shell::Cmd, path));
        }
        let target = self.target.clone();
        let cleanup = async {
            let mut problems = Vec::new();
            let mut conn = Connection::open(&target.endpoint).await?;
            if let Some(command) = command {
                let req =
                    wsman::signal(&self.header(Some(shell)), command, wsman::SIGNAL_TERMINATE);
                if let Err(why) = call_ok(&mut conn, &req).await {
                    problems.push(format!("signal: {why}"));
                }
            }
            if !steps.is_empty() {
                match tokio::time::timeout(STEPS_LIMIT, self.run_each(&mut conn, &steps)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => problems.push(why),
                    Err(_) => {
                        problems.push(format!(
                            "{}: no answer in {STEPS_LIMIT:?}",
                            steps.join(", ")
                        ));
                        // A request was left half-way: the Delete goes on
                        // a connection of its own.
                        conn = Connection::open(&target.endpoint).await?;
                    }
                }
            }
            let delete = wsman::delete(&self.header(Some(shell)));
            if let Err(why) = call_ok(&mut conn, &delete).await {
                problems.push(format!("delete: {why}"));
            }
            Ok::<_, CallError>(problems)
        };
        match tokio::time::timeout(CLEANUP_LIMIT, cleanup).await {
            Ok(Ok(problems)) if problems.is_empty() => {
                format!("the WinRM shell {shell} was ended and closed")
            }
            Ok(Ok(problems)) => format!(
                "the WinRM shell {shell} may still be open: {}",
                problems.join("; ")
            ),
            Ok(Err(why)) => format!("cannot close the WinRM shell {shell}: {why}"),
            Err(_) => {
                format!("cannot close the WinRM shell {shell}: no answer in {CLEANUP_LIMIT:?}")
            }
        }
    }

    /// Runs each cmd line to its end in one fresh shell, then deletes it.
    async fn run_each(&self, conn: &mut Connection, lines: &[String]) -> Result<(), String> {
        let create = wsman::create(&self.header(None), &BTreeMap::new());
        let shell = call(conn, &create, wsman::shell_id)
            .await
            .map_err(|e| format!("cleanup shell: {e}"))?;
        let mut problems = Vec::new();
        for line in lines {
            let req = wsman::command(&self.header(Some(&shell)), line);
            let done = async {
                let id = call(conn, &req, wsman::command_id).await?;
                loop {
                    let req = wsman::receive(&self.header(Some(&shell)), &id);
                    match call(conn, &req, wsman::received).await {
                        Ok(got) if got.done.is_some() => return Ok::<_, CallError>(()),
                        Ok(_) => {}
                        Err(CallError::Wsman(wsman::WsmanError::Fault { code, .. }))
                            if code == wsman::FAULT_TIMED_OUT => {}
                        Err(e) => return Err(e),
                    }
                }
            };
            if let Err(why) = done.await {
                problems.push(format!("`{line}`: {why}"));
            }
        }
        let _ = call_ok(conn, &wsman::delete(&self.header(Some(&shell)))).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

async fn open_shell(
    target: &Target,
    url: &str,
    env: &BTreeMap<String, String>,
) -> Result<(Connection, String), CallError> {
    let mut conn = Connection::open(&target.endpoint).await?;
    let req = wsman::create(
        &wsman::Header {
            url,
            operation_timeout_secs: target.operation_timeout,
            shell_id: None,
            options: &[("WINRS_NOPROFILE", "FALSE"), ("WINRS_CODEPAGE", "65001")],
        },
        env,
    );
    let shell = call(&mut conn, &req, wsman::shell_id).await?;
    Ok((conn, shell))
}

/// The largest piece of a script whose copy command for `path` fits in a
/// command line.
fn chunk_size(path: &str) -> usize {
    let encoded =
        |script: usize| "powershell -encodedcommand ".len() + (2 * script).div_ceil(3) * 4;
    let overhead = copy_chunk(path, &[], true).len();
    // Each 3 bytes are 4 base64 characters in the script.
    let mut size: usize = 3 * 2048;
    while size > 3 && encoded(overhead + size.div_ceil(3) * 4) > MAX_COMMAND_LINE {
        size -= 3;
    }
    size
}

/// A PowerShell string literal.
pub(super) fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The plugin's copier text for one chunk: the directory made if need
/// be, the file replaced by the first chunk, each chunk appended as bytes.
/// (The plugin leaves paths unquoted; these are quoted.)
pub(super) fn copy_chunk(path: &str, chunk: &[u8], first: bool) -> String {
    use base64::Engine as _;
    let dir = match path.rfind('\\') {
        Some(i) => &path[..=i],
        None => path,
    };
    let mut text = format!(
        "if (!(Test-Path {d})) {{ New-Item -ItemType directory -Path {d} }}\n",
        d = ps_quote(dir)
    );
    if first {
        text.push_str(&format!(
            "if ((Test-Path {p} -PathType Leaf)) {{ rm {p} }}\n",
            p = ps_quote(path)
        ));
    }
    text.push_str(&format!(
        "add-content -value $([System.Convert]::FromBase64String(\"{}\")) -encoding byte -path {}",
        base64::engine::general_purpose::STANDARD.encode(chunk),
        ps_quote(path)
    ));
    text
}

/// Rundeck's `del <path>` after a script, in the shell's quoting.
fn remove(shell: Shell, path: &str) -> String {
    match shell {
        Shell::Cmd => format!("del \"{path}\""),
        Shell::Powershell => format!("del {}", ps_quote(path)),
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Wsman(#[from] wsman::WsmanError),
    #[error("HTTP {0} with a body that is not SOAP")]
    Status(u16),
}

/// Posts `req` and reads its response with `read`.
async fn call<T>(
    conn: &mut Connection,
    req: &wsman::Request,
    read: impl FnOnce(roxmltree::Node<'_, '_>) -> Result<T, wsman::WsmanError>,
) -> Result<T, CallError> {
    let (status, text) = conn.post(&req.xml).await?;
    let ok = (200..300).contains(&status);
    if text.trim().is_empty() {
        return Err(if ok {
            CallError::Wsman(wsman::WsmanError::Missing("body"))
        } else {
            CallError::Status(status)
        });
    }
    // A fault comes as HTTP 500 with a SOAP body, read as the fault it
    // is; any other failure is its status.
    let doc = match roxmltree::Document::parse(&text) {
        Ok(doc) => doc,
        Err(_) if !ok => return Err(CallError::Status(status)),
        Err(e) => return Err(CallError::Wsman(e.into())),
    };
    let body = wsman::read(&doc, req)?;
    if !ok {
        return Err(CallError::Status(status));
    }
    Ok(read(body)?)
}

/// Signal and Delete: nothing is read, and an empty 200 is an answer.
async fn call_ok(conn: &mut Connection, req: &wsman::Request) -> Result<(), CallError> {
    match call(conn, req, |_| Ok(())).await {
        Err(CallError::Wsman(wsman::WsmanError::Missing("body"))) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A piece as large as fits: its copy command is within cmd.exe's
    /// limit, and three bytes more are not.
    #[test]
    fn a_copy_command_fits_in_a_command_line() {
        let path = r"C:\WINDOWS\TEMP\0a1b2c3d-01938f2e-7c4b-7d3a-9f00-123456789abc-win-ntlm-dispatch-script.tmp.bat";
        let size = chunk_size(path);
        let line = |n: usize| {
            command_line(
                Shell::Powershell,
                &copy_chunk(path, &vec![b'x'; n], true),
                false,
            )
            .len()
        };
        assert!(line(size) <= MAX_COMMAND_LINE, "{}", line(size));
        assert!(line(size + 3) > MAX_COMMAND_LINE, "{}", line(size + 3));
        assert!(size > 1800, "{size}");
    }
}
