//! Deleting: the Delete-Pod and Delete-Job steps, as the plugin deletes,
//! and what an aborted step's execution created.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use outpost_schemas::job::kubernetes::{Kind, EXECUTION_LABEL};
use tokio::io::AsyncWriteExt;

use super::{api_error, Target};
use crate::executor::{Exit, PluginOutput};

/// After an abort or a timeout: deletes the step's pod or Job (a Job with
/// its pods) if this execution created it.
pub(super) async fn delete_if_ours(
    kind: Kind,
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
) {
    let label_of = |meta: kube::api::ObjectMeta| {
        (
            meta.labels
                .unwrap_or_default()
                .get(EXECUTION_LABEL)
                .cloned(),
            meta.uid,
        )
    };
    let meta = match kind {
        Kind::Pod => Api::<Pod>::namespaced(client.clone(), &target.namespace)
            .get_opt(&target.name)
            .await
            .map(|o| o.map(|p| label_of(p.metadata))),
        Kind::Job => Api::<Job>::namespaced(client.clone(), &target.namespace)
            .get_opt(&target.name)
            .await
            .map(|o| o.map(|j| label_of(j.metadata))),
        Kind::Other(r) => super::generic::labels_and_uid(r, target, client.clone()).await,
    };
    let (ours, uid) = match meta {
        Ok(Some((label, uid))) => (label.is_some_and(|e| e == target.execution), uid),
        Ok(None) => return,
        Err(err) => {
            let err = api_error(&err);
            tracing::warn!(error = %err, object = %target.at(), "cannot read the aborted step's object to delete it");
            return;
        }
    };
    if !ours {
        return;
    }
    // The object read, not one of the same name made since.
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    let deleted = match kind {
        Kind::Pod => Api::<Pod>::namespaced(client, &target.namespace)
            .delete(&target.name, &params)
            .await
            .map(|_| ()),
        Kind::Job => Api::<Job>::namespaced(client, &target.namespace)
            .delete(&target.name, &params)
            .await
            .map(|_| ()),
        Kind::Other(r) => super::generic::delete_with(r, target, client, &params).await,
    };
    let line = match deleted {
        Ok(()) => format!(
            "aborted: deleted {} {}, which this execution created\n",
            kind.as_str(),
            target.at()
        ),
        Err(err) => {
            let err = api_error(&err);
            tracing::warn!(error = %err, object = %target.at(), "cannot delete the aborted step's object");
            format!(
                "aborted: cannot delete {} {}, which this execution created: {err}\n",
                kind.as_str(),
                target.at()
            )
        }
    };
    let _ = out.stderr.write_all(line.as_bytes()).await;
}

/// As the plugin: a 5 s grace, in the foreground; a pod that is not
/// there is no failure.
pub(super) async fn delete_pod(
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
) -> Exit {
    let pods: Api<Pod> = Api::namespaced(client, &target.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(5),
        ..DeleteParams::foreground()
    };
    match pods.delete(&target.name, &params).await {
        Ok(_) => {
            let _ = out
                .stdout
                .write_all(format!("pod {} deleted\n", target.at()).as_bytes())
                .await;
            Exit::Code(0)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let _ = out
                .stdout
                .write_all(format!("pod {} is not there\n", target.at()).as_bytes())
                .await;
            Exit::Code(0)
        }
        Err(e) => Exit::Failed(format!(
            "cannot delete pod {}: {}",
            target.at(),
            api_error(&e)
        )),
    }
}

/// As the plugin: the Job's pods, then the Job in the background (which
/// removes any pod left); a Job that is not there fails the step.
pub(super) async fn delete_job(
    target: &Target,
    client: kube::Client,
    out: &mut PluginOutput,
) -> Exit {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let jobs: Api<Job> = Api::namespaced(client, &target.namespace);
    let of_job = kube::api::ListParams::default().labels(&format!("job-name={}", target.name));
    if let Err(e) = pods
        .delete_collection(&DeleteParams::background(), &of_job)
        .await
    {
        let _ = out
            .stderr
            .write_all(
                format!(
                    "cannot delete the pods of Job {}: {}\n",
                    target.at(),
                    api_error(&e)
                )
                .as_bytes(),
            )
            .await;
    }
    match jobs.delete(&target.name, &DeleteParams::background()).await {
        Ok(_) => {
            let _ = out
                .stdout
                .write_all(format!("Job {} deleted\n", target.at()).as_bytes())
                .await;
            Exit::Code(0)
        }
        Err(e) => Exit::Failed(format!(
            "cannot delete Job {}: {}",
            target.at(),
            api_error(&e)
        )),
    }
}
