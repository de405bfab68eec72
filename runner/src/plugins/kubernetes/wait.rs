//! `Kubernetes-Wait-Pod`, `Kubernetes-Wait-Job` and the log they and
//! `Kubernetes-Pods-Logs` write. They poll (`retries` looks, `sleep`
//! apart), as the plugin does, rather than watch.
//!
//! Where Outpost differs from the plugin, on purpose:
//! - a Job's log streams while it runs, each pod's once, where the plugin
//!   writes the first pod's whole log again on every look;
//! - a failed Job's step ends with its container's exit code;
//! - a container that has ended ends Wait-Pod, with its exit code, where
//!   the plugin waits for a readiness that container has lost;
//! - a log that cannot be read is said, and the wait goes on.

use std::collections::BTreeSet;

use futures::AsyncReadExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use outpost_schemas::job::kubernetes::Wait;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

/// Copies the pod's log to `to` as it comes, as bytes (a log need not be
/// UTF-8; the step's readers split and mask it as a process's output),
/// ending it with a newline if it ends without one.
pub(super) async fn write_log(
    pods: &Api<Pod>,
    name: &str,
    params: &LogParams,
    to: &mut DuplexStream,
) -> Result<(), String> {
    let stream = pods
        .log_stream(name, params)
        .await
        .map_err(|e| api_error(&e))?;
    let mut stream = std::pin::pin!(stream);
    let mut buf = vec![0u8; 16 * 1024];
    let mut last = b'\n';
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        last = buf[n - 1];
        if to.write_all(&buf[..n]).await.is_err() {
            return Ok(());
        }
    }
    if last != b'\n' {
        let _ = to.write_all(b"\n").await;
    }
    Ok(())
}

async fn note(out: &mut PluginOutput, line: String) {
    let _ = out.stderr.write_all(format!("{line}\n").as_bytes()).await;
}

/// What a look at a Job found.
enum JobEnd {
    Succeeded,
    Failed(String),
}

fn job_end(job: &Job) -> Option<JobEnd> {
    let status = job.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let holds = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if let Some(failed) = holds("Failed") {
        return Some(JobEnd::Failed(format!(
            "{}: {}",
            failed.reason.as_deref().unwrap_or("Failed"),
            failed.message.as_deref().unwrap_or("no message")
        )));
    }
    if holds("Complete").is_some() || status.completion_time.is_some() {
        return Some(if status.succeeded.unwrap_or(0) > 0 {
            JobEnd::Succeeded
        } else {
            JobEnd::Failed("it completed with no pod succeeded".into())
        });
    }
    None
}

/// The exit code of the pod's container `container` (else its first)
/// if it ended.
fn exit_code(pod: &Pod, container: Option<&str>) -> Option<i32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = match container {
        Some(c) => statuses.iter().find(|s| s.name == c)?,
        None => statuses.first()?,
    };
    status
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn started(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Running" | "Succeeded" | "Failed"))
}

/// The Job's pods, oldest first: by its `controller-uid` (a pod left by an
/// earlier Job of the same name is not its), else its name.
async fn job_pods(pods: &Api<Pod>, job: &Job) -> Result<Vec<Pod>, kube::Error> {
    let selector = match &job.metadata.uid {
        Some(uid) => format!("controller-uid={uid}"),
        None => format!(
            "job-name={}",
            job.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    let mut list = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    list.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    Ok(list)
}

/// The container the Job runs: the first of its template, the plugin's
/// one.
fn job_container(job: &Job) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()
        .map(|c| c.name.clone())
}

/// Writes the log of each of the Job's pods that started and whose log
/// is not written yet, following it to its end. A log that cannot be read
/// is said, and the wait goes on: the Job decides the step.
async fn write_new_logs(
    pods: &Api<Pod>,
    job: &Job,
    logged: &mut BTreeSet<String>,
    namespace: &str,
    out: &mut PluginOutput,
) -> Result<(), String> {
    let all = job_pods(pods, job)
        .await
        .map_err(|e| format!("the pods of the Job: {}", api_error(&e)))?;
    let container = job_container(job);
    for pod in all.iter().filter(|p| started(p)) {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if !logged.insert(name.clone()) {
            continue;
        }
        let params = LogParams {
            follow: true,
            container: container.clone(),
            ..Default::default()
        };
        if let Err(why) = write_log(pods, &name, &params, &mut out.stdout).await {
            note(
                out,
                format!("cannot read the log of pod {namespace}/{name}: {why}"),
            )
            .await;
        }
    }
    Ok(())
}

pub(super) async fn wait_job(
    wait: &Wait,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &target.namespace);
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let at = target.at();
    let work = async {
        // The pods whose log is written: each once, whole.
        let mut logged = BTreeSet::new();
        let get = || async {
            jobs.get(&target.name)
                .await
                .map_err(|e| format!("Job {at}: {}", api_error(&e)))
        };
        // As the plugin: a first look, then `retries` more.
        for look in 0..=wait.retries {
            let mut job = get().await?;
            if wait.show_log {
                write_new_logs(&pods, &job, &mut logged, &target.namespace, out).await?;
                // Read again after the logs: the Job may have ended meanwhile.
                job = get().await?;
            }
            let Some(end) = job_end(&job) else {
                if look < wait.retries {
                    tokio::time::sleep(wait.sleep).await;
                }
                continue;
            };
            if wait.show_log {
                // Pods that started after the last list; their logs are whole.
                write_new_logs(&pods, &job, &mut logged, &target.namespace, out).await?;
            }
            return Ok(match end {
                JobEnd::Succeeded => {
                    note(out, format!("Job {at} succeeded")).await;
                    Exit::Code(0)
                }
                JobEnd::Failed(why) => {
                    note(out, format!("Job {at} failed: {why}")).await;
                    let container = job_container(&job);
                    let code = job_pods(&pods, &job).await.ok().and_then(|all| {
                        all.iter()
                            .rev()
                            .find_map(|p| exit_code(p, container.as_deref()).filter(|c| *c != 0))
                    });
                    match code {
                        Some(c) => Exit::Code(c),
                        None => Exit::Failed(format!("Job {at} failed: {why}")),
                    }
                }
            });
        }
        Err(format!(
            "Job {at} did not finish in {} looks, {:?} apart (configuration.retries, configuration.sleep)",
            wait.retries + 1,
            wait.sleep
        ))
    };
    tokio::select! {
        r = work => r.unwrap_or_else(Exit::Failed),
        _ = stop.cancelled() => Exit::Killed,
    }
}

pub(super) async fn wait_pod(
    wait: &Wait,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let at = target.at();
    let work = async {
        for look in 0..=wait.retries {
            let pod = pods
                .get(&target.name)
                .await
                .map_err(|e| format!("pod {at}: {}", api_error(&e)))?;
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .is_some_and(|c| c.ready);
            let first = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone());
            let ended = exit_code(&pod, first.as_deref());
            if ready || ended.is_some() {
                if wait.show_log {
                    let containers = pod.spec.iter().flat_map(|s| &s.containers);
                    for c in containers {
                        let params = LogParams {
                            container: Some(c.name.clone()),
                            ..Default::default()
                        };
                        write_log(&pods, &target.name, &params, &mut out.stdout)
                            .await
                            .map_err(|why| format!("the log of pod {at}: {why}"))?;
                    }
                }
                return Ok(match ended {
                    Some(code) => {
                        note(out, format!("pod {at} ended with exit code {code}")).await;
                        Exit::Code(code)
                    }
                    None => {
                        note(out, format!("pod {at} is ready")).await;
                        Exit::Code(0)
                    }
                });
            }
            if look < wait.retries {
                tokio::time::sleep(wait.sleep).await;
            }
        }
        Err(format!(
            "pod {at} was not ready in {} looks, {:?} apart (configuration.retries, configuration.sleep)",
            wait.retries + 1,
            wait.sleep
        ))
    };
    tokio::select! {
        r = work => r.unwrap_or_else(Exit::Failed),
        _ = stop.cancelled() => Exit::Killed,
    }
}
