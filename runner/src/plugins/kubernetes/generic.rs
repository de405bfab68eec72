//! The plugin's generic steps, on any of its eleven kinds through kube's
//! dynamic API: `Kubernetes-Create` (a manifest, labelled with the
//! execution, as the pod and Job steps label theirs), `Kubernetes-Delete`
//! (with the plugin's delete options per kind), the rollout waits of
//! Deployments and StatefulSets, and an aborted create's deletion.

use kube::api::{Api, DeleteParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use outpost_schemas::job::kubernetes::{Resource, Wait, EXECUTION_LABEL};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

fn api(resource: Resource, target: &Target, client: kube::Client) -> Api<DynamicObject> {
    let (group, version) = resource.group_version();
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, resource.name()),
        resource.plural(),
    );
    if resource.namespaced() {
        Api::namespaced_with(client, &target.namespace, &ar)
    } else {
        Api::all_with(client, &ar)
    }
}

/// `Kind ns/name`, or `Kind name` for a kind in no namespace.
fn at(resource: Resource, target: &Target) -> String {
    if resource.namespaced() {
        format!("{} {}", resource.name(), target.at())
    } else {
        format!("{} {}", resource.name(), target.name)
    }
}

pub(super) async fn apply(
    resource: Resource,
    manifest: &serde_json::Value,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let mut manifest = manifest.clone();
    let labels = &mut manifest["metadata"]["labels"];
    if !labels.is_object() {
        *labels = serde_json::json!({});
    }
    labels[EXECUTION_LABEL] = serde_json::Value::String(target.execution.clone());
    let object: DynamicObject = match serde_json::from_value(manifest) {
        Ok(o) => o,
        Err(e) => return Exit::Failed(format!("configuration.yaml: {e}")),
    };
    let (api, params) = (api(resource, target, client), PostParams::default());
    let created = tokio::select! {
        r = api.create(&params, &object) => r,
        _ = stop.cancelled() => return Exit::Killed,
    };
    match created {
        Ok(_) => {
            let line = format!("{} created\n", at(resource, target));
            let _ = out.stdout.write_all(line.as_bytes()).await;
            Exit::Code(0)
        }
        Err(e) => Exit::Failed(format!(
            "cannot create {}: {}",
            at(resource, target),
            api_error(&e)
        )),
    }
}

/// As the plugin deletes: Deployments, StatefulSets, ConfigMaps and
/// Services in the foreground with a 5 s grace, Jobs in the background
/// (their pods too), the others with the server's defaults. An object
/// that is not there fails the step, as it fails the plugin's.
pub(super) async fn delete(
    resource: Resource,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
) -> Exit {
    let params = match resource {
        Resource::Deployment | Resource::StatefulSet | Resource::ConfigMap | Resource::Service => {
            DeleteParams {
                grace_period_seconds: Some(5),
                ..DeleteParams::foreground()
            }
        }
        Resource::Job => DeleteParams::background(),
        _ => DeleteParams::default(),
    };
    match api(resource, target, client)
        .delete(&target.name, &params)
        .await
    {
        Ok(_) => {
            let line = format!("{} deleted\n", at(resource, target));
            let _ = out.stdout.write_all(line.as_bytes()).await;
            Exit::Code(0)
        }
        Err(e) => Exit::Failed(format!(
            "cannot delete {}: {}",
            at(resource, target),
            api_error(&e)
        )),
    }
}

/// A rollout's replicas: `(ready, wanted)`, as the plugin counts them (a
/// Deployment's `status.replicas`, a StatefulSet's `spec.replicas`).
fn replicas(resource: Resource, object: &DynamicObject) -> (i64, i64) {
    let n = |v: &serde_json::Value| v.as_i64().unwrap_or(0);
    let ready = n(&object.data["status"]["readyReplicas"]);
    let wanted = match resource {
        Resource::StatefulSet => n(&object.data["spec"]["replicas"]),
        _ => n(&object.data["status"]["replicas"]),
    };
    (ready, wanted)
}

/// Looks once, then up to `retries` times more, `sleep` apart, until every
/// replica is ready: the plugin's `Kubernetes-Wait-Deployment` and
/// `-Wait-StatefulSet`. A Deployment with no unavailable replica left is
/// ready too, as the plugin ends its wait then.
pub(super) async fn wait_rollout(
    resource: Resource,
    wait: &Wait,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
    stop: &CancellationToken,
) -> Exit {
    let api = api(resource, target, client);
    let what = at(resource, target);
    let mut looks = 0;
    loop {
        let read = tokio::select! {
            r = api.get(&target.name) => r,
            _ = stop.cancelled() => return Exit::Killed,
        };
        let object = match read {
            Ok(o) => o,
            Err(e) => return Exit::Failed(format!("{what}: {}", api_error(&e))),
        };
        let (ready, wanted) = replicas(resource, &object);
        let no_unavailable = resource == Resource::Deployment
            && object.data["status"]["unavailableReplicas"]
                .as_i64()
                .unwrap_or(0)
                == 0;
        if ready >= wanted || no_unavailable {
            let line = format!("{what} is ready: {ready} of {wanted} replicas\n");
            let _ = out.stderr.write_all(line.as_bytes()).await;
            return Exit::Code(0);
        }
        if looks >= wait.retries {
            return Exit::Failed(format!(
                "{what} is not ready after {} looks: {ready} of {wanted} replicas",
                looks + 1
            ));
        }
        looks += 1;
        let line = format!("waiting for {what}: {ready} of {wanted} replicas ready\n");
        let _ = out.stderr.write_all(line.as_bytes()).await;
        tokio::select! {
            _ = tokio::time::sleep(wait.sleep) => {}
            _ = stop.cancelled() => return Exit::Killed,
        }
    }
}

/// After an aborted create: the object's labels and uid, if it is there.
pub(super) async fn labels_and_uid(
    resource: Resource,
    target: &Target,
    client: kube::Client,
) -> Result<Option<(Option<String>, Option<String>)>, kube::Error> {
    Ok(api(resource, target, client)
        .get_opt(&target.name)
        .await?
        .map(|o| {
            let mine = o
                .metadata
                .labels
                .unwrap_or_default()
                .get(EXECUTION_LABEL)
                .cloned();
            (mine, o.metadata.uid)
        }))
}

pub(super) async fn delete_with(
    resource: Resource,
    target: &Target,
    client: kube::Client,
    params: &DeleteParams,
) -> Result<(), kube::Error> {
    api(resource, target, client)
        .delete(&target.name, params)
        .await
        .map(|_| ())
}
