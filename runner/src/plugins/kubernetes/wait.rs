//! `Kubernetes-Wait-Pod`, `Kubernetes-Wait-Job` and the log they and
//! `Kubernetes-Pods-Logs` write. They poll (`retries` looks, `sleep`
//! apart), as the plugin does, rather than watch.
//!
//! Where Outpost differs from the plugin, on purpose:
//! - a Job's log streams while it runs, each pod's once, where the plugin
//!   writes the first pod's whole log again on every look;
//! - a failed Job's step ends with its container's exit code;
//! - a pod whose container ran to its end ends the wait, with that exit
//!   code, where the plugin waits for readiness such a pod never reaches.

use std::collections::BTreeSet;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use outpost_schemas::job::kubernetes::Wait;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

/// Copies the pod's log, line by line as it comes, to `to`.
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
    let mut lines = stream.lines();
    while let Some(line) = lines.try_next().await.map_err(|e| e.to_string())? {
        if to.write_all(format!("{line}\n").as_bytes()).await.is_err() {
            break;
        }
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

/// The exit code of the first container of a pod that ended, if one did.
fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
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

/// The Job's pods, oldest first.
async fn job_pods(pods: &Api<Pod>, job: &str) -> Result<Vec<Pod>, kube::Error> {
    let mut list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?
        .items;
    list.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    });
    Ok(list)
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
        for look in 1..=wait.retries {
            let job = jobs
                .get(&target.name)
                .await
                .map_err(|e| format!("Job {at}: {}", api_error(&e)))?;
            if wait.show_log {
                let all = job_pods(&pods, &target.name)
                    .await
                    .map_err(|e| format!("the pods of Job {at}: {}", api_error(&e)))?;
                for pod in all.iter().filter(|p| started(p)) {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if logged.insert(name.clone()) {
                        let params = LogParams {
                            follow: true,
                            ..Default::default()
                        };
                        write_log(&pods, &name, &params, &mut out.stdout)
                            .await
                            .map_err(|why| {
                                format!("the log of pod {}/{name}: {why}", target.namespace)
                            })?;
                    }
                }
            }
            // Read again after a log: the Job may have ended meanwhile.
            let job = if wait.show_log {
                jobs.get(&target.name)
                    .await
                    .map_err(|e| format!("Job {at}: {}", api_error(&e)))?
            } else {
                job
            };
            match job_end(&job) {
                Some(JobEnd::Succeeded) => {
                    note(out, format!("Job {at} succeeded")).await;
                    return Ok(Exit::Code(0));
                }
                Some(JobEnd::Failed(why)) => {
                    note(out, format!("Job {at} failed: {why}")).await;
                    let code = job_pods(&pods, &target.name)
                        .await
                        .ok()
                        .and_then(|all| all.iter().rev().find_map(exit_code))
                        .filter(|c| *c != 0);
                    return Ok(match code {
                        Some(c) => Exit::Code(c),
                        None => Exit::Failed(format!("Job {at} failed: {why}")),
                    });
                }
                None if look < wait.retries => tokio::time::sleep(wait.sleep).await,
                None => {}
            }
        }
        Err(format!(
            "Job {at} did not finish in {} looks, {:?} apart (configuration.retries, configuration.sleep)",
            wait.retries, wait.sleep
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
        for look in 1..=wait.retries {
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
            let ended = exit_code(&pod);
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
            wait.retries, wait.sleep
        ))
    };
    tokio::select! {
        r = work => r.unwrap_or_else(Exit::Failed),
        _ = stop.cancelled() => Exit::Killed,
    }
}
