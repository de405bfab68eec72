//! `Kubernetes-Execute-Step`: `[shell, "-c", command]` in a container over
//! the pod's exec subresource (WebSocket, `v4`/`v5.channel.k8s.io`), as the
//! plugin's `pods-node-executor.py` does, streaming stdout and stderr as
//! they come; the exit code is the container command's, where the plugin's
//! is always 1 on failure. A kubelet does not end a command whose client
//! went away, so an abort ends it with a second exec, by the pid the
//! command reported first.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use outpost_schemas::job::kubernetes::KubeExec;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

pub(super) async fn exec_in_pod(
    exec: &KubeExec,
    debug: bool,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    // Read first, as the plugin does: the exec's own refusal comes as a
    // bare HTTP status, where this names the pod. Before the exec starts
    // there is nothing to end.
    let pod = tokio::select! {
        r = pods.get(&target.name) => match r {
            Ok(p) => p,
            Err(e) => return Exit::Failed(format!("pod {}: {}", target.at(), api_error(&e))),
        },
        _ = stop.cancelled() => return Exit::Killed,
    };
    let container = exec
        .container
        .clone()
        .or_else(|| target.node_container.clone());
    let at = format!(
        "pod {}{}",
        target.at(),
        container
            .as_deref()
            .map(|c| format!(" container {c}"))
            .unwrap_or_default()
    );
    if debug {
        let _ = out
            .stderr
            .write_all(format!("kubernetes: exec {:?} in {at}\n", exec.argv).as_bytes())
            .await;
    }
    // With no container named, the pod's first is the plugin's choice,
    // where the API server refuses a pod of several.
    let container = container.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
    });
    let mut params = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = &container {
        params = params.container(c.clone());
    }
    let mut attached = tokio::select! {
        a = pods.exec(&target.name, with_pid(&exec.argv), &params) => match a {
            Ok(a) => a,
            Err(e) => return Exit::Failed(format!("cannot exec in {at}: {}", api_error(&e))),
        },
        _ = stop.cancelled() => return Exit::Killed,
    };
    let (Some(mut stdout), Some(stderr), Some(status)) =
        (attached.stdout(), attached.stderr(), attached.take_status())
    else {
        attached.abort();
        return Exit::Failed(format!("exec in {at}: no output streams"));
    };
    let pid = std::sync::OnceLock::new();
    let (to_out, to_err) = (&mut out.stdout, &mut out.stderr);
    let work = async {
        // Both at once: the client's buffers are small, and a full one
        // would stall the other stream.
        let _ = tokio::join!(
            tokio::io::copy(&mut stdout, to_out),
            copy_stderr(stderr, to_err, &pid),
        );
        status.await
    };
    let status = tokio::select! {
        s = work => s,
        _ = stop.cancelled() => {
            attached.abort();
            // A kubelet does not end a command whose client went away:
            // the runner ends it, by the pid it reported.
            if let Some(pid) = pid.get() {
                kill_in_pod(&pods, &target.name, container.as_deref(), *pid).await;
            }
            return Exit::Killed;
        }
    };
    let joined = attached.join().await;
    match (status, joined) {
        (None, Err(e)) => Exit::Failed(format!("exec in {at} ended without a status: {e}")),
        (status, _) => exit_of(status, &at),
    }
}

/// The first line the command writes to stderr: its pid, for an abort.
const PID_LINE: &str = "outpost-exec-pid=";

/// `argv` preceded by a line on stderr with the pid it will run as: the
/// shell prints its own, then becomes `argv`.
fn with_pid(argv: &[String]) -> Vec<String> {
    let mut v = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        format!("echo {PID_LINE}$$ >&2; exec \"$@\""),
        "sh".into(),
    ];
    v.extend(argv.iter().cloned());
    v
}

/// Copies the command's stderr, taking the pid line off its front.
async fn copy_stderr(
    stderr: impl tokio::io::AsyncRead + Unpin,
    to: &mut tokio::io::DuplexStream,
    pid: &std::sync::OnceLock<u32>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut stderr = tokio::io::BufReader::new(stderr);
    let mut first = String::new();
    if stderr.read_line(&mut first).await.is_err() {
        return;
    }
    match first
        .trim_end()
        .strip_prefix(PID_LINE)
        .and_then(|p| p.parse().ok())
    {
        Some(p) => {
            let _ = pid.set(p);
        }
        None => {
            if to.write_all(first.as_bytes()).await.is_err() {
                return;
            }
        }
    }
    let _ = tokio::io::copy(&mut stderr, to).await;
}

/// Ends the command `pid` (its process group where it leads one) with a
/// second exec in the container: TERM, then KILL if it is still there.
async fn kill_in_pod(pods: &Api<Pod>, pod: &str, container: Option<&str>, pid: u32) {
    let script = format!(
        "kill -TERM -{pid} 2>/dev/null || kill -TERM {pid} 2>/dev/null || exit 0; \
         for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.5; done; \
         kill -KILL -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; exit 0"
    );
    let mut params = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(false);
    if let Some(c) = container {
        params = params.container(c);
    }
    let kill = async {
        let attached = pods
            .exec(pod, ["/bin/sh", "-c", &script], &params)
            .await
            .map_err(|e| api_error(&e))?;
        attached.join().await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(15), kill).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, pod, pid, "cannot end the aborted command in its pod")
        }
        Err(_) => tracing::warn!(pod, pid, "ending the aborted command in its pod timed out"),
    }
}

/// The exec's end, from the `Status` the API server sends on channel 3.
fn exit_of(
    status: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    at: &str,
) -> Exit {
    let Some(status) = status else {
        return Exit::Failed(format!("exec in {at} ended without a status"));
    };
    if status.status.as_deref() == Some("Success") {
        return Exit::Code(0);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref()?.parse::<i32>().ok());
    match (status.reason.as_deref(), code) {
        (Some("NonZeroExitCode"), Some(code)) => Exit::Code(code),
        _ => Exit::Failed(format!(
            "exec in {at} failed: {}",
            status.message.unwrap_or_else(|| "no message".into())
        )),
    }
}
