//! `pods/{name}/exec` over WebSocket with the `v4.channel.k8s.io`
//! subprotocol, as the apiserver proxies the kubelet's: binary frames whose
//! first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 the final
//! `Status`), then a Close frame. The command runs as a local process in a
//! process group of its own, killed if the client goes away first.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State as AxumState};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::containers::RunState;
use super::objects::{KubeError, Params, Reply};
use super::{ExecRecord, Shared};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// v5's "close this stream" channel; v4 clients never send it, but a v5
/// client that was answered v4 might.
const CLOSE: u8 = 255;

struct Session {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    /// Its entry in `State::execs`.
    index: usize,
}

pub(super) async fn exec(
    AxumState(shared): AxumState<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Reply {
    let params = Params::parse(query.as_deref());
    let argv = params.all("command");
    if argv.is_empty() {
        return Err(KubeError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    let (stdin, stdout, stderr, tty) = (
        params.flag("stdin"),
        params.flag("stdout"),
        params.flag("stderr"),
        params.flag("tty"),
    );
    if !(stdin || stdout || stderr) {
        return Err(KubeError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let (container, env, working_dir) = {
        let st = shared.state.lock().unwrap();
        let pod = st
            .pods
            .get(&(ns.clone(), name.clone()))
            .ok_or_else(|| KubeError::not_found("pods", &name))?;
        let c = pod.container(params.get("container"))?;
        match c.run.state() {
            RunState::Running { .. } => {}
            RunState::Waiting => {
                return Err(KubeError::bad_request(format!(
                    "unable to upgrade connection: container not found (\"{}\")",
                    c.name
                )))
            }
            RunState::Terminated { .. } => {
                return Err(KubeError::bad_request(format!(
                    "cannot exec into a container in a completed pod; current phase is {}",
                    pod.phase()
                )))
            }
        }
        (
            c.name.clone(),
            c.spec.env.clone(),
            c.spec.working_dir.clone(),
        )
    };
    // kubectl 1.20 asks for SPDY with a POST, which this fake does not speak.
    let upgrade = upgrade.map_err(|_| KubeError::bad_request("Upgrade request required"))?;
    let index = {
        let mut st = shared.state.lock().unwrap();
        st.execs.push(ExecRecord {
            namespace: ns,
            pod: name,
            container,
            command: argv.clone(),
            pid: None,
            exit_code: None,
            client_closed: false,
        });
        st.execs.len() - 1
    };
    let session = Session {
        argv,
        env,
        working_dir,
        stdin,
        stdout,
        stderr,
        tty,
        index,
    };
    Ok(upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| session.run(socket, shared)))
}

impl Session {
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if self.stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if self.stderr || self.tty {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .process_group(0);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        cmd.spawn()
    }

    fn record(&self, shared: &Shared, f: impl FnOnce(&mut ExecRecord)) {
        let mut st = shared.state.lock().unwrap();
        f(&mut st.execs[self.index]);
    }

    async fn run(self, socket: WebSocket, shared: Arc<Shared>) {
        let (mut tx, mut rx) = socket.split();
        // Under the lock, so that the fake's drop either comes first (and
        // nothing starts) or sees the pid and kills it.
        let spawned = {
            let mut st = shared.state.lock().unwrap();
            if st.closed {
                return;
            }
            let spawned = self.spawn();
            if let Ok(child) = &spawned {
                st.execs[self.index].pid = child.id();
            }
            spawned
        };
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                // What the kubelet reports when the runtime cannot exec.
                let message = format!(
                    "OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: {e}: unknown",
                    self.argv[0]
                );
                let status = json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": message,
                    "reason": "InternalError",
                    "details": {"causes": [{"message": message}]},
                    "code": 500,
                });
                let _ = finish(&mut tx, &status).await;
                linger(&mut rx).await;
                return;
            }
        };

        let (out_tx, mut out_rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, STDOUT, out_tx.clone()));
        }
        if let Some(err) = child.stderr.take() {
            // With a tty, the terminal merges both streams into stdout.
            let channel = if self.tty { STDOUT } else { STDERR };
            tokio::spawn(pump(err, channel, out_tx.clone()));
        }
        drop(out_tx);
        let mut stdin_tx = child.stdin.take().map(|mut stdin| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
            tokio::spawn(async move {
                while let Some(data) = rx.recv().await {
                    if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                }
            });
            tx
        });
        let (exit_tx, mut exit_rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = exit_tx.send(child.wait().await);
        });

        let mut outputs_open = true;
        let mut exit: Option<std::io::Result<std::process::ExitStatus>> = None;
        while outputs_open || exit.is_none() {
            tokio::select! {
                out = out_rx.recv(), if outputs_open => match out {
                    Some((channel, data)) => {
                        let mut frame = Vec::with_capacity(data.len() + 1);
                        frame.push(channel);
                        frame.extend_from_slice(&data);
                        if tx.send(Message::Binary(frame.into())).await.is_err() {
                            break;
                        }
                    }
                    None => outputs_open = false,
                },
                status = &mut exit_rx, if exit.is_none() => {
                    exit = Some(status.unwrap_or_else(|_| Err(std::io::Error::other("lost the process"))));
                }
                msg = rx.next() => match msg {
                    Some(Ok(Message::Binary(data))) => stdin_frame(&data, &mut stdin_tx),
                    // The Python client sends `str` stdin as text frames.
                    Some(Ok(Message::Text(text))) => stdin_frame(text.as_bytes(), &mut stdin_tx),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                },
            }
        }
        if outputs_open || exit.is_none() {
            // The client went away first. As a kubelet does, the command
            // goes on (writing to a closed pipe, if it writes), until it
            // ends, or its pod is deleted.
            self.record(&shared, |r| r.client_closed = true);
            drop((tx, rx, stdin_tx, out_rx));
            let status = match exit {
                Some(status) => status,
                None => exit_rx
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("lost the process"))),
            };
            let code = exit_code(status);
            self.record(&shared, |r| r.exit_code = Some(code));
            return;
        }
        let code = exit_code(exit.expect("the loop ends once the process has"));
        self.record(&shared, |r| r.exit_code = Some(code));
        let status = if code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                    self.argv.join(" ")
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        };
        if finish(&mut tx, &status).await.is_ok() {
            linger(&mut rx).await;
        }
    }
}

/// Waits briefly for the client's answering Close, so that the connection
/// ends cleanly rather than with a reset.
async fn linger<S>(rx: &mut S)
where
    S: futures::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
        Err(_) => 255,
    }
}

/// The `Status` on channel 3, then Close: what ends the session for every
/// client (the Python one stops reading at the Close frame).
async fn finish<S>(tx: &mut S, status: &Value) -> Result<(), axum::Error>
where
    S: futures::Sink<Message, Error = axum::Error> + Unpin,
{
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    tx.send(Message::Binary(frame.into())).await?;
    tx.send(Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    })))
    .await
}

fn stdin_frame(data: &[u8], stdin: &mut Option<mpsc::UnboundedSender<Vec<u8>>>) {
    match data.first() {
        Some(&STDIN) if data.len() > 1 => {
            if let Some(tx) = stdin {
                let _ = tx.send(data[1..].to_vec());
            }
        }
        Some(&CLOSE) if data.get(1) == Some(&STDIN) => *stdin = None,
        // Resize (4) and anything else: nothing to do without a terminal.
        _ => {}
    }
}

async fn pump(mut pipe: impl AsyncRead + Unpin, channel: u8, tx: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((channel, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}
