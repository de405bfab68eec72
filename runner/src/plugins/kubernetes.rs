//! Rundeck's Kubernetes steps, through the API server with kube-rs, from
//! the runner (which may reach a cluster the control plane cannot).
//! `Kubernetes-Execute-Step` runs `[shell, "-c", command]` in a container
//! over the pod's exec subresource (WebSocket, `v4`/`v5.channel.k8s.io`),
//! as the plugin's `pods-node-executor.py` does, streaming stdout and
//! stderr as they come; the exit code is the container command's, where
//! the plugin's is always 1 on failure. An abort closes the exec's
//! connection, on which the API server ends the command.

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
    let exit = tokio::select! {
        exit = exec_in_pod(&exec, &target, &mut out, &stop) => exit,
        // Before the exec started: nothing to end.
        _ = stop.cancelled() => Exit::Killed,
    };
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
    let client = match client(&target.connection, target.token.as_deref()).await {
        Ok(c) => c,
        Err(why) => return Exit::Failed(why),
    };
    let at = format!(
        "pod {}/{}{}",
        target.namespace,
        target.pod,
        target
            .container
            .as_deref()
            .map(|c| format!(" container {c}"))
            .unwrap_or_default()
    );
    if exec.debug {
        let _ = out
            .stderr
            .write_all(format!("kubernetes: exec {:?} in {at}\n", exec.argv).as_bytes())
            .await;
    }
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let mut params = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = &target.container {
        params = params.container(c.clone());
    }
    let mut attached = match pods.exec(&target.pod, exec.argv.clone(), &params).await {
        Ok(a) => a,
        Err(e) => return Exit::Failed(format!("cannot exec in {at}: {}", api_error(&e))),
    };
    let (Some(mut stdout), Some(mut stderr), Some(status)) =
        (attached.stdout(), attached.stderr(), attached.take_status())
    else {
        attached.abort();
        return Exit::Failed(format!("exec in {at}: no output streams"));
    };
    let (to_out, to_err) = (&mut out.stdout, &mut out.stderr);
    let work = async {
        // Both at once: the client's buffers are small, and a full one
        // would stall the other stream.
        let _ = tokio::join!(
            tokio::io::copy(&mut stdout, to_out),
            tokio::io::copy(&mut stderr, to_err),
        );
        status.await
    };
    let status = tokio::select! {
        s = work => s,
        _ = stop.cancelled() => {
            // Ends the WebSocket: the API server ends the command with it.
            attached.abort();
            return Exit::Killed;
        }
    };
    let _ = attached.join().await;
    exit_of(status, &at)
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
            let kc = Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig {path}: {e}"))?;
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
