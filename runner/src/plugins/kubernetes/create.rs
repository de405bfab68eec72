//! `Kubernetes-Create-Pod` and `Kubernetes-Create-Job`: the object the
//! step's keys build, posted as it is. Like the plugin's, the step does
//! not wait; a wait step does.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use outpost_schemas::job::kubernetes::{JobSpec, PodSpec};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

pub(super) async fn create_pod(
    spec: &PodSpec,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let body = spec.pod(
        &target.name,
        &target.namespace,
        &target.execution,
        target.node_container.as_deref(),
    );
    let pod: Pod = match body.map(serde_json::from_value) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Exit::Failed(format!("the step's keys make no valid pod: {e}")),
        Err(why) => return Exit::Failed(why),
    };
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    create(&pods, "pod", &pod, target, out, stop).await
}

pub(super) async fn create_job(
    spec: &JobSpec,
    debug: bool,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let job: Job = match spec
        .job(&target.name, &target.namespace, &target.execution)
        .map(serde_json::from_value)
    {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => return Exit::Failed(format!("the step's keys make no valid Job: {e}")),
        Err(why) => return Exit::Failed(why),
    };
    if debug {
        let text = serde_json::to_string(&job).unwrap_or_default();
        let _ = out
            .stderr
            .write_all(format!("kubernetes: create {text}\n").as_bytes())
            .await;
    }
    let jobs: Api<Job> = Api::namespaced(client, &target.namespace);
    create(&jobs, "Job", &job, target, out, stop).await
}

/// Posts `object`, unless the step is already stopped. An abort that
/// comes meanwhile is left to the caller's cleanup, which deletes it.
async fn create<K>(
    api: &Api<K>,
    kind: &str,
    object: &K,
    target: &Target,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    // Not raced with `stop`: a create whose answer is dropped may still
    // have made the object, and then nothing would delete it.
    if stop.is_cancelled() {
        return Exit::Killed;
    }
    match api.create(&PostParams::default(), object).await {
        Ok(_) if stop.is_cancelled() => Exit::Killed,
        Ok(_) => {
            let _ = out
                .stdout
                .write_all(format!("{kind} {} created\n", target.at()).as_bytes())
                .await;
            Exit::Code(0)
        }
        Err(e) => Exit::Failed(format!(
            "cannot create {kind} {}: {}",
            target.at(),
            api_error(&e)
        )),
    }
}
