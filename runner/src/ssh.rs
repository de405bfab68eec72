//! The SSH node executor: runs a node step on a remote host with russh.
//!
//! Host keys are checked against a known_hosts file (strict by default).
//! The remote command runs in its own session and process group, created by
//! `setsid -w` on the node, whose id the wrapper reports first; an abort
//! then kills that whole group over a second channel before closing the
//! first, so nothing the step started survives it (Rundeck #1045, #3597).
//! A failure is one [`SshError`], whose text names the cause in one line.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use outpost_schemas::{LogEntry, LogStream};
use russh::client::{self, Handle};
pub use russh::keys::PrivateKey;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Sig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::executor::{shell_quote, Exit, MAX_LINE_BYTES};

/// Marks the wrapper's report of the remote process group on stderr.
const PGID_MARKER: &str = "\u{1e}OUTPOST_PGID ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Only hosts already in known_hosts, with the same key.
    Strict,
    /// Learn unknown hosts; still refuse a changed key.
    AcceptNew,
}

#[derive(Clone)]
pub enum SshAuth {
    Key(Arc<PrivateKey>),
    Password(String),
}

impl std::fmt::Debug for SshAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            SshAuth::Key(_) => f.write_str("SshAuth::Key(..)"),
            SshAuth::Password(_) => f.write_str("SshAuth::Password(..)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub username: String,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    /// Whole-command limit; `None` for none.
    pub command_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("connect timeout after {0:?}")]
    ConnectTimeout(Duration),
    #[error(
        "host key mismatch: {host}:{port} presents a different key than known_hosts line {line}"
    )]
    HostKeyMismatch {
        host: String,
        port: u16,
        line: usize,
    },
    #[error("unknown host key: {host}:{port} is not in known_hosts (policy strict)")]
    HostKeyUnknown { host: String, port: u16 },
    #[error("auth refused for user {user} ({method})")]
    AuthRefused { user: String, method: &'static str },
    #[error("command timeout after {0:?}")]
    CommandTimeout(Duration),
    #[error("ssh protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostKeyProblem {
    Mismatch(usize),
    Unknown,
    Io(String),
}

struct Checker {
    host: String,
    port: u16,
    opts: SshOptions,
    problem: Arc<Mutex<Option<HostKeyProblem>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                *self.problem.lock().unwrap() = Some(HostKeyProblem::Unknown);
                return Ok(false);
            }
        };
        // A host recorded with any key must present one of its recorded keys:
        // a key of another type is a change, not a new host (else
        // accept-new would learn a man in the middle's RSA key).
        if let Ok(recorded) = russh::keys::known_hosts::known_host_keys_path(
            &self.host,
            self.port,
            &self.opts.known_hosts,
        ) {
            if recorded.iter().any(|(_, k)| k == key) {
                return Ok(true);
            }
            if let Some((line, _)) = recorded.first() {
                *self.problem.lock().unwrap() = Some(HostKeyProblem::Mismatch(*line));
                return Ok(false);
            }
        }
        let known =
            russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.opts.known_hosts);
        let verdict = match known {
            Ok(true) => return Ok(true),
            Ok(false) => HostKeyProblem::Unknown,
            Err(russh::keys::Error::KeyChanged { line }) => HostKeyProblem::Mismatch(line),
            // A missing file is an empty one.
            Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                HostKeyProblem::Unknown
            }
            Err(e) => HostKeyProblem::Io(e.to_string()),
        };
        if verdict == HostKeyProblem::Unknown
            && self.opts.host_key_policy == HostKeyPolicy::AcceptNew
        {
            return match russh::keys::known_hosts::learn_known_hosts_path(
                &self.host,
                self.port,
                key,
                &self.opts.known_hosts,
            ) {
                Ok(()) => Ok(true),
                Err(e) => {
                    *self.problem.lock().unwrap() = Some(HostKeyProblem::Io(e.to_string()));
                    Ok(false)
                }
            };
        }
        *self.problem.lock().unwrap() = Some(verdict);
        Ok(false)
    }
}

/// Loads an OpenSSH private key (ed25519, RSA, ECDSA) without a passphrase.
pub fn load_key(path: &std::path::Path, passphrase: Option<&str>) -> Result<PrivateKey, String> {
    russh::keys::load_secret_key(path, passphrase)
        .map_err(|e| format!("cannot load key {}: {e}", path.display()))
}

/// An authenticated connection to one node.
pub struct Session {
    handle: Handle<Checker>,
    secrets: crate::mask::Secrets,
}

/// Connects and authenticates, or says in one line why not.
pub async fn connect(
    target: &SshTarget,
    auth: &SshAuth,
    opts: &SshOptions,
) -> Result<Session, SshError> {
    let problem = Arc::new(Mutex::new(None));
    let checker = Checker {
        host: target.host.clone(),
        port: target.port,
        opts: opts.clone(),
        problem: problem.clone(),
    };
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        nodelay: true,
        ..Default::default()
    });
    let connecting = client::connect(config, (target.host.as_str(), target.port), checker);
    let mut handle = match tokio::time::timeout(opts.connect_timeout, connecting).await {
        Err(_) => return Err(SshError::ConnectTimeout(opts.connect_timeout)),
        Ok(Ok(h)) => h,
        Ok(Err(err)) => {
            let found = problem.lock().unwrap().take();
            return Err(match found {
                Some(HostKeyProblem::Mismatch(line)) => SshError::HostKeyMismatch {
                    host: target.host.clone(),
                    port: target.port,
                    line,
                },
                Some(HostKeyProblem::Unknown) => SshError::HostKeyUnknown {
                    host: target.host.clone(),
                    port: target.port,
                },
                Some(HostKeyProblem::Io(e)) => SshError::Protocol(format!("known_hosts: {e}")),
                None => match err {
                    russh::Error::IO(e) => SshError::Unreachable(e.to_string()),
                    other => SshError::Protocol(other.to_string()),
                },
            });
        }
    };
    let authenticating = authenticate(&mut handle, target, auth);
    let (ok, method) = match tokio::time::timeout(opts.connect_timeout, authenticating).await {
        Ok(r) => r?,
        Err(_) => return Err(SshError::ConnectTimeout(opts.connect_timeout)),
    };
    if !ok {
        return Err(SshError::AuthRefused {
            user: target.username.clone(),
            method,
        });
    }
    Ok(Session {
        handle,
        secrets: Default::default(),
    })
}

async fn authenticate(
    handle: &mut Handle<Checker>,
    target: &SshTarget,
    auth: &SshAuth,
) -> Result<(bool, &'static str), SshError> {
    Ok(match auth {
        SshAuth::Password(pw) => (
            handle
                .authenticate_password(&target.username, pw.clone())
                .await
                .map_err(|e| SshError::Protocol(e.to_string()))?
                .success(),
            "password",
        ),
        SshAuth::Key(key) => {
            let hash: Option<HashAlg> = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| SshError::Protocol(e.to_string()))?
                .flatten();
            (
                handle
                    .authenticate_publickey(
                        &target.username,
                        PrivateKeyWithHashAlg::new(key.clone(), hash),
                    )
                    .await
                    .map_err(|e| SshError::Protocol(e.to_string()))?
                    .success(),
                "publickey",
            )
        }
    })
}

impl Session {
    /// Masks these values in the output of the commands it runs.
    pub fn with_secrets(mut self, secrets: crate::mask::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Runs `command` through the node's shell, streaming its output to
    /// `lines`. With `stdin`, that data is sent and the input closed.
    pub async fn run(
        &self,
        command: &str,
        stdin: Option<bytes::Bytes>,
        lines: &mpsc::Sender<LogEntry>,
        cancel: &CancellationToken,
        command_timeout: Option<Duration>,
    ) -> Result<Exit, SshError> {
        let proto = |e: russh::Error| SshError::Protocol(e.to_string());
        let mut channel = self.handle.channel_open_session().await.map_err(proto)?;
        // The wrapper reports its process group, then becomes the command.
        let wrapped = format!(
            "exec setsid -w /bin/sh -c {}",
            shell_quote(&format!(
                "printf '{PGID_MARKER}%s\\n' \"$$\" >&2; exec /bin/sh -c {}",
                shell_quote(command)
            ))
        );
        if cancel.is_cancelled() {
            return Ok(Exit::Killed);
        }
        channel.exec(true, wrapped).await.map_err(proto)?;
        if let Some(data) = stdin {
            channel.data_bytes(data).await.map_err(proto)?;
        }
        channel.eof().await.map_err(proto)?;

        let mut out = LineSplitter::new(LogStream::Stdout, &self.secrets);
        let mut err = LineSplitter::new(LogStream::Stderr, &self.secrets);
        let mut pgid: Option<u32> = None;
        let mut exit: Option<Exit> = None;
        let deadline = command_timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let msg = tokio::select! {
                m = channel.wait() => m,
                _ = cancel.cancelled() => {
                    if pgid.is_none() {
                        pgid = wait_for_pgid(&mut channel, &mut err).await;
                    }
                    self.kill_remote(pgid).await;
                    let _ = channel.signal(Sig::KILL).await;
                    let _ = channel.close().await;
                    return Ok(Exit::Killed);
                }
                _ = sleep_until(deadline) => {
                    self.kill_remote(pgid).await;
                    let _ = channel.close().await;
                    return Err(SshError::CommandTimeout(command_timeout.unwrap_or_default()));
                }
            };
            match msg {
                None => break,
                Some(ChannelMsg::Data { data }) => out.push(&data, lines).await,
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    for mut entry in err.split(&data) {
                        // Anywhere in the line: a login script may have left
                        // text without a newline before it.
                        if pgid.is_none() {
                            if let Some(at) = entry.log.find(PGID_MARKER) {
                                pgid = entry.log[at + PGID_MARKER.len()..].trim().parse().ok();
                                entry.log.truncate(at);
                                if entry.log.is_empty() {
                                    continue;
                                }
                            }
                        }
                        let _ = lines.send(entry).await;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit = Some(Exit::Code(exit_status as i32))
                }
                // A killed command sends no exit status, only this.
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit = Some(Exit::Signal(signal_number(&signal_name)))
                }
                Some(_) => {}
            }
        }
        out.flush(lines).await;
        for entry in err.finish() {
            let _ = lines.send(entry).await;
        }
        exit.ok_or_else(|| SshError::Protocol("the channel closed without an exit status".into()))
    }

    /// Kills the step's process group on the node over a fresh channel.
    async fn kill_remote(&self, pgid: Option<u32>) {
        let Some(pgid) = pgid else { return };
        let Ok(mut ch) = self.handle.channel_open_session().await else {
            return;
        };
        let cmd = format!(
            "kill -TERM -- -{pgid} 2>/dev/null; sleep 0.5; kill -KILL -- -{pgid} 2>/dev/null; true"
        );
        if ch.exec(true, cmd).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while ch.wait().await.is_some() {}
            })
            .await;
        }
    }

    /// Opens the node's SFTP subsystem on this session (Copy File).
    pub async fn sftp(&self) -> Result<russh_sftp::client::SftpSession, SshError> {
        let proto = |e: russh::Error| SshError::Protocol(e.to_string());
        let channel = self.handle.channel_open_session().await.map_err(proto)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(proto)?;
        russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| SshError::Protocol(format!("sftp: {e}")))
    }

    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Reads stderr for up to 2 s until the wrapper reports its process group.
async fn wait_for_pgid(
    channel: &mut russh::Channel<client::Msg>,
    err: &mut LineSplitter,
) -> Option<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let msg = tokio::time::timeout_at(deadline, channel.wait())
            .await
            .ok()??;
        if let ChannelMsg::ExtendedData { data, ext: 1 } = msg {
            for entry in err.split(&data) {
                if let Some(at) = entry.log.find(PGID_MARKER) {
                    return entry.log[at + PGID_MARKER.len()..].trim().parse().ok();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn signal_number(sig: &Sig) -> i32 {
    match sig {
        Sig::HUP => libc::SIGHUP,
        Sig::INT => libc::SIGINT,
        Sig::QUIT => libc::SIGQUIT,
        Sig::ILL => libc::SIGILL,
        Sig::ABRT => libc::SIGABRT,
        Sig::FPE => libc::SIGFPE,
        Sig::KILL => libc::SIGKILL,
        Sig::SEGV => libc::SIGSEGV,
        Sig::PIPE => libc::SIGPIPE,
        Sig::ALRM => libc::SIGALRM,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        Sig::Custom(_) => -1,
    }
}

/// Splits a byte stream into log lines, as the local executor does.
struct LineSplitter {
    stream: LogStream,
    pending: Vec<u8>,
    masker: crate::mask::Masker,
}

impl LineSplitter {
    fn new(stream: LogStream, secrets: &crate::mask::Secrets) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
            masker: crate::mask::Masker::new(secrets.clone()),
        }
    }

    fn entry(&self, bytes: &[u8]) -> LogEntry {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        LogEntry {
            meta: Default::default(),
            time: Utc::now(),
            stream: self.stream,
            level: if self.stream == LogStream::Stderr {
                "ERROR"
            } else {
                "NORMAL"
            }
            .into(),
            log: String::from_utf8_lossy(bytes).into_owned(),
            node: None,
        }
    }

    fn split(&mut self, data: &[u8]) -> Vec<LogEntry> {
        let data = self.masker.push(data);
        self.split_masked(&data)
    }

    fn split_masked(&mut self, data: &[u8]) -> Vec<LogEntry> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            out.push(self.entry(&self.pending[start..start + pos]));
            start += pos + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE_BYTES {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES).collect();
            out.push(self.entry(&piece));
        }
        out
    }

    async fn push(&mut self, data: &[u8], lines: &mpsc::Sender<LogEntry>) {
        for e in self.split(data) {
            let _ = lines.send(e).await;
        }
    }

    fn finish(&mut self) -> Vec<LogEntry> {
        let rest = self.masker.finish();
        let mut out = self.split_masked(&rest);
        if !self.pending.is_empty() {
            out.push(self.entry(&self.pending.clone()));
            self.pending.clear();
        }
        out
    }

    async fn flush(&mut self, lines: &mpsc::Sender<LogEntry>) {
        for e in self.finish() {
            let _ = lines.send(e).await;
        }
    }
}
