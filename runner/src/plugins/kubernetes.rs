//! Rundeck's Kubernetes steps, through the API server with kube-rs, from
//! the runner (which may reach a cluster the control plane cannot): a
//! command in a pod (`exec`), a pod or Job created from the step's keys
//! (`create`), waited for with its log streamed (`wait`), or deleted, and
//! the generic steps on any of the plugin's kinds (`generic`).
//!
//! Whatever a step creates carries the label `outpost.dev/execution`. A
//! step that is aborted (or killed by the job's timeout) while it creates
//! a pod or Job, waits on it or reads its log deletes it if its own
//! execution created it, and nothing another execution made; of the
//! generic steps' objects, only an aborted Create deletes what it made.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use outpost_schemas::job::kubernetes::{Kind, KubeAction, KubeConnection, KubeStep};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::executor::{Exit, PluginOutput};
use crate::mask::Secrets;

mod create;
mod delete;
mod exec;
mod generic;
pub(crate) mod pods_source;
mod wait;

/// What a step works on, resolved on the runner: the object's name and
/// namespace, how to reach the API server (with the token read), and the
/// execution the step belongs to.
pub struct Target {
    pub name: String,
    pub namespace: String,
    /// A pod node's `default:container_name`, for a step that names none.
    pub node_container: Option<String>,
    pub connection: KubeConnection,
    pub token: Option<String>,
    /// `RD_JOB_EXECID`: what the step creates is labelled with it.
    pub execution: String,
}

impl Target {
    /// `namespace/name`, as kubectl writes it.
    fn at(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Runs a node step's command in a pod node's container, as the plugin's
/// `Kubernetes-node-executor` runs it: `/bin/bash -c <command>` in the
/// pod its `default:*` attributes name, through the node's
/// `kubernetes:config_file` or the runner's environment. A script step
/// goes through the plugin's file copier, not built yet.
pub fn start_executor(
    command: &outpost_schemas::StepCommand,
    node: &outpost_schemas::node::Node,
    env: &std::collections::BTreeMap<String, String>,
    lines: tokio::sync::mpsc::Sender<outpost_schemas::LogEntry>,
    secrets: &Secrets,
) -> Result<crate::executor::RunningStep, crate::executor::ExecError> {
    use outpost_schemas::job::kubernetes::{
        KubeExec, ObjectRef, FILE_COPIER, NODE_CONTAINER, NODE_EXECUTOR, NODE_EXECUTOR_SHELL,
        NODE_SHELL,
    };
    let refuse = |why: String| {
        crate::executor::ExecError::Plugin(secrets.mask_str(&format!(
            "node {} (node-executor {NODE_EXECUTOR}): {why}",
            node.nodename
        )))
    };
    let outpost_schemas::StepCommand::Exec { command } = command else {
        return Err(refuse(format!(
            "{}: a script step on a pod node (Rundeck copies it with {FILE_COPIER})",
            outpost_schemas::job::NOT_SUPPORTED_YET
        )));
    };
    let object = ObjectRef {
        kind: Kind::Pod,
        name: None,
        namespace: None,
        from_node: true,
    };
    let (name, namespace) = object.resolve(&node.attributes).map_err(refuse)?;
    let shell = node
        .attributes
        .get(NODE_SHELL)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or(NODE_EXECUTOR_SHELL)
        .to_string();
    let execution = env
        .get("RD_JOB_EXECID")
        .cloned()
        .ok_or_else(|| refuse("the step has no RD_JOB_EXECID".into()))?;
    let step = KubeStep {
        action: KubeAction::Exec(KubeExec {
            container: None,
            argv: vec![shell, "-c".into(), command.clone()],
        }),
        object,
        connection: KubeConnection::Infer.for_node(&node.attributes),
        debug: false,
    };
    let target = Target {
        name,
        namespace,
        node_container: node
            .attributes
            .get(NODE_CONTAINER)
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty()),
        connection: step.connection.clone(),
        token: None,
        execution,
    };
    let masked = secrets.clone();
    Ok(crate::executor::spawn_task(
        lines,
        secrets,
        move |out, stop| run(step, target, masked, out, stop),
    ))
}

pub async fn run(
    step: KubeStep,
    target: Target,
    secrets: Secrets,
    mut out: PluginOutput,
    stop: CancellationToken,
) -> Exit {
    let exit = run_step(&step, &target, &mut out, &stop).await;
    match exit {
        Exit::Failed(why) => Exit::Failed(secrets.mask_str(&why)),
        other => other,
    }
}

async fn run_step(
    step: &KubeStep,
    target: &Target,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    // Before the client exists there is nothing to end.
    let client = tokio::select! {
        c = client(&target.connection, target.token.as_deref()) => match c {
            Ok(c) => c,
            Err(why) => return Exit::Failed(format!("{} {}: {why}", step.object.kind.as_str(), target.at())),
        },
        _ = stop.cancelled() => return Exit::Killed,
    };
    let kind = step.object.kind;
    if step.debug {
        let line = format!(
            "kubernetes: {} {} {} through {}\n",
            action_name(&step.action),
            kind.as_str(),
            target.at(),
            connection_text(&target.connection)
        );
        let _ = out.stderr.write_all(line.as_bytes()).await;
    }
    let exit = match &step.action {
        KubeAction::Exec(exec) => {
            return exec::exec_in_pod(exec, step.debug, target, client, out, stop).await
        }
        KubeAction::CreatePod(spec) => {
            create::create_pod(spec, target, client.clone(), out, stop).await
        }
        KubeAction::CreateJob(spec) => {
            create::create_job(spec, step.debug, target, client.clone(), out, stop).await
        }
        KubeAction::Apply(manifest) => match kind {
            Kind::Other(r) => generic::apply(r, manifest, target, client.clone(), out, stop).await,
            other => Exit::Failed(format!(
                "Kubernetes-Create does not create a {}",
                other.as_str()
            )),
        },
        KubeAction::Wait(wait) => match kind {
            Kind::Pod => wait::wait_pod(wait, target, client.clone(), out, stop).await,
            Kind::Job => wait::wait_job(wait, target, client.clone(), out, stop).await,
            Kind::Other(r) => {
                generic::wait_rollout(r, wait, target, client.clone(), out, stop).await
            }
        },
        KubeAction::Logs {
            container,
            follow,
            tail_lines,
        } => {
            let container = container.clone().or_else(|| target.node_container.clone());
            let params = kube::api::LogParams {
                container,
                follow: *follow,
                tail_lines: *tail_lines,
                ..Default::default()
            };
            let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
            tokio::select! {
                r = wait::write_log(&pods, &target.name, &params, &mut out.stdout) => match r {
                    Ok(()) => Exit::Code(0),
                    Err(why) => Exit::Failed(format!("pod {}: cannot read its log: {why}", target.at())),
                },
                _ = stop.cancelled() => Exit::Killed,
            }
        }
        KubeAction::Delete => match kind {
            Kind::Pod => delete::delete_pod(target, client.clone(), out).await,
            Kind::Job => delete::delete_job(target, client.clone(), out).await,
            Kind::Other(r) => generic::delete(r, target, client.clone(), out).await,
        },
    };
    // A pod or Job is the step's work, and goes with it; a Deployment or
    // any other object of the generic steps is an application, deleted
    // only when its own create was aborted, never by a wait on it.
    let owns = match (kind, &step.action) {
        (_, KubeAction::Delete) => false,
        (Kind::Other(_), action) => matches!(action, KubeAction::Apply(_)),
        _ => true,
    };
    if matches!(exit, Exit::Killed) && owns {
        // Within the runner's grace for a plugin that was told to stop.
        let cleanup = delete::delete_if_ours(kind, target, client, out);
        if tokio::time::timeout(CLEANUP_LIMIT, cleanup).await.is_err() {
            let line = format!(
                "aborted: cannot delete {} {}: the API server did not answer in {CLEANUP_LIMIT:?}\n",
                kind.as_str(),
                target.at()
            );
            tracing::warn!(object = %target.at(), "deleting the aborted step's object timed out");
            let _ = out.stderr.write_all(line.as_bytes()).await;
        }
    }
    exit
}

/// How long an aborted step may spend deleting what it created: less than
/// the runner's grace (`executor::KILL_GRACE`), so that it can still say
/// what it did.
const CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// What the step reaches the API server through, for `debug` (never the
/// token).
fn connection_text(c: &KubeConnection) -> String {
    match c {
        KubeConnection::ConfigFile(path) => format!("kubeconfig {path}"),
        KubeConnection::Url { url, token, .. } => format!(
            "{url}{}",
            if token.is_some() { " with a token" } else { "" }
        ),
        KubeConnection::Infer => "the runner's environment".into(),
    }
}

fn action_name(a: &KubeAction) -> &'static str {
    match a {
        KubeAction::Exec(_) => "exec in",
        KubeAction::CreatePod(_) | KubeAction::CreateJob(_) | KubeAction::Apply(_) => "create",
        KubeAction::Wait(_) => "wait for",
        KubeAction::Logs { .. } => "read the log of",
        KubeAction::Delete => "delete",
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
