//! Rundeck's Kubernetes steps, through the API server with kube-rs, from
//! the runner (which may reach a cluster the control plane cannot).
//! `Kubernetes-Execute-Step` runs `[shell, "-c", command]` in a container
//! over the pod's exec subresource (WebSocket, `v4`/`v5.channel.k8s.io`),
//! as the plugin's `pods-node-executor.py` does, streaming stdout and
//! stderr as they come; the exit code is the container command's, where
//! the plugin's is always 1 on failure. A kubelet does not end a command
//! whose client went away, so an abort ends it with a second exec, by the
//! pid the command reported first.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use outpost_schemas::job::kubernetes::{KubeConnection, KubeExec};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::executor::{Exit, PluginOutput};
use crate::mask::Secrets;

/// Where a step runs: pod, namespace and container (`None`: the pod's
/// only one), and how to reach the API server, with the token read.
pub struct Target {
    pub pod: String,
    pub namespace: String,
    pub container: Option<String>,
    pub connection: KubeConnection,
    pub token: Option<String>,
}

pub async fn run(
    exec: KubeExec,
    target: Target,
    secrets: Secrets,
    mut out: PluginOutput,
    stop: CancellationToken,
) -> Exit {
    // It watches `stop` itself: once the command runs, an abort has it to
    // end in the pod.
    let exit = exec_in_pod(&exec, &target, &mut out, &stop).await;
    match exit {
        Exit::Failed(why) => Exit::Failed(secrets.mask_str(&why)),
        other => other,
    }
}

async fn exec_in_pod(
    exec: &KubeExec,
    target: &Target,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let connect = async {
        let client = client(&target.connection, target.token.as_deref()).await?;
        let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
        // Read first, as the plugin does: the exec's own refusal comes as
        // a bare HTTP status, where this names the pod.
        let pod = pods.get(&target.pod).await.map_err(|e| api_error(&e))?;
        Ok::<_, String>((pods, pod))
    };
    // Before the exec starts there is nothing to end.
    let (pods, pod) = tokio::select! {
        r = connect => match r {
            Ok(v) => v,
            Err(why) => return Exit::Failed(format!("{}: {why}", target_name(target))),
        },
        _ = stop.cancelled() => return Exit::Killed,
    };
    let at = target_name(target);
    if exec.debug {
        let _ = out
            .stderr
            .write_all(format!("kubernetes: exec {:?} in {at}\n", exec.argv).as_bytes())
            .await;
    }
    // With no container named, the pod's first is the plugin's choice,
    // where the API server refuses a pod of several.
    let container = target.container.clone().or_else(|| {
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
        a = pods.exec(&target.pod, with_pid(&exec.argv), &params) => match a {
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
                kill_in_pod(&pods, &target.pod, container.as_deref(), *pid).await;
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

fn target_name(target: &Target) -> String {
    format!(
        "pod {}/{}{}",
        target.namespace,
        target.pod,
        target
            .container
            .as_deref()
            .map(|c| format!(" container {c}"))
            .unwrap_or_default()
    )
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

/// An API error as one line: the server's message where it sent one.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

/// A client for the connection, in the plugin's order: a kubeconfig, the
/// URL and token, else the environment (in cluster, or `$KUBECONFIG`).
async fn client(connection: &KubeConnection, token: Option<&str>) -> Result<kube::Client, String> {
    let config = match connection {
        KubeConnection::ConfigFile(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(path, &e))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {path}: {e}"))?
        }
        KubeConnection::Url {
            url,
            verify,
            ca_file,
            ..
        } => {
            // As a kubeconfig, so that kube reads the CA and the token as
            // it reads any; it stays in memory.
            let yaml = url_kubeconfig(url, token, *verify, ca_file.as_deref());
            let kc = Kubeconfig::from_yaml(&yaml).map_err(|e| format!("url {url}: {e}"))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("url {url}: {e}"))?
        }
        KubeConnection::Infer => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes connection: the step gives no config_file or url, and {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("cannot make a Kubernetes client: {e}"))
}

/// A kubeconfig that does not read, said without quoting it: the YAML
/// parser's message shows the file's lines, and the path may name a file
/// that is no kubeconfig at all (a key).
fn kubeconfig_error(path: &str, e: &kube::config::KubeconfigError) -> String {
    match e {
        kube::config::KubeconfigError::Parse(_) => {
            format!("kubeconfig {path}: not a kubeconfig (it does not read as one)")
        }
        other => format!("kubeconfig {path}: {other}"),
    }
}

fn url_kubeconfig(url: &str, token: Option<&str>, verify: bool, ca: Option<&str>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("text serialises");
    let mut cluster = format!("server: {}", q(url));
    if !verify {
        cluster.push_str(", insecure-skip-tls-verify: true");
    }
    if let Some(ca) = ca {
        cluster.push_str(&format!(", certificate-authority: {}", q(ca)));
    }
    let user = token
        .map(|t| format!("token: {}", q(t.trim())))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{{cluster}}}}}]\nusers: [{{name: u, user: {{{user}}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_and_token_read_as_a_kubeconfig() {
        let yaml = url_kubeconfig(
            "https://10.0.0.1:6443",
            Some("tok\"en\n"),
            false,
            Some("/etc/ca.crt"),
        );
        let kc = Kubeconfig::from_yaml(&yaml).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(cluster.insecure_skip_tls_verify, Some(true));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/etc/ca.crt")
        );
        assert_eq!(kc.current_context.as_deref(), Some("x"));
    }
}
