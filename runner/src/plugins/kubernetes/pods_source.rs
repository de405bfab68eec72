//! Pods as the runner's nodes, as the plugin's resource model makes them
//! (`pods-resource-model.py`): one node per container, `<pod>-<container>`,
//! at the pod's IP, with the `default:*` attributes the pod steps and the
//! node executor read, `labels:<key>` for each label, and the tags `pods`
//! and the container's status. Each node runs its steps through the
//! plugin's node executor unless the source's `attributes` say otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams};
use outpost_schemas::job::kubernetes::{
    KubeConnection, PodsSource, PodsSourceConfig, NODE_CONFIG_FILE, NODE_CONTAINER, NODE_EXECUTOR,
    NODE_NAME, NODE_NAMESPACE,
};
use outpost_schemas::node::Node;

/// The pods a source file (`--kubernetes-pods`) selects, as nodes.
pub async fn load(path: &Path, key_store: &Path) -> Result<Vec<Node>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let config: PodsSourceConfig = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    let source = config.source()?;
    list(&source, key_store).await
}

/// Lists the pods `source` selects, as nodes.
pub async fn list(source: &PodsSource, key_store: &Path) -> Result<Vec<Node>, String> {
    let token = match &source.connection {
        KubeConnection::Url { token: Some(p), .. } => Some(
            crate::node_run::read_stored(key_store, p)
                .map_err(|why| format!("token_storage_path {p}: {why}"))?,
        ),
        _ => None,
    };
    let client = super::client(&source.connection, token.as_deref()).await?;
    let pods: Api<Pod> = match &source.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut params = ListParams::default();
    if let Some(l) = &source.label_selector {
        params = params.labels(l);
    }
    if let Some(f) = &source.field_selector {
        params = params.fields(f);
    }
    let listed = pods
        .list(&params)
        .await
        .map_err(|e| format!("cannot list pods: {}", super::api_error(&e)))?;
    Ok(nodes_of(&listed.items, source))
}

/// The state of a container, as the plugin names it.
fn state_of(status: &ContainerStatus) -> &'static str {
    match &status.state {
        Some(s) if s.running.is_some() => "running",
        Some(s) if s.terminated.is_some() => "terminated",
        Some(s) if s.waiting.is_some() => "waiting",
        _ => "unknown",
    }
}

pub fn nodes_of(pods: &[Pod], source: &PodsSource) -> Vec<Node> {
    let mut nodes = Vec::new();
    for pod in pods {
        let meta = &pod.metadata;
        let (Some(name), Some(status)) = (meta.name.as_deref(), pod.status.as_ref()) else {
            continue;
        };
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let labels = meta.labels.clone().unwrap_or_default();
        // A pod whose condition is not met says why, as the plugin's status.
        let condition = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.status == "False")
            .and_then(|c| c.reason.clone());
        for container in status.container_statuses.iter().flatten() {
            let state = state_of(container);
            let terminated = state == "terminated";
            let shown = match (state, &condition) {
                ("unknown", Some(reason)) => reason.clone(),
                ("unknown", None) => status.phase.clone().unwrap_or_default().to_lowercase(),
                (s, _) => s.to_string(),
            };
            if (source.running_only && shown != "running") || (!source.running_only && terminated) {
                continue;
            }
            let message = container
                .state
                .as_ref()
                .and_then(|s| {
                    s.waiting
                        .as_ref()
                        .and_then(|w| w.message.clone())
                        .or_else(|| s.terminated.as_ref().and_then(|t| t.message.clone()))
                })
                .unwrap_or_default();
            let mut attributes: BTreeMap<String, String> = BTreeMap::from([
                (NODE_NAME.into(), name.to_string()),
                (NODE_NAMESPACE.into(), namespace.clone()),
                (NODE_CONTAINER.into(), container.name.clone()),
                (
                    "default:pod_id".into(),
                    meta.uid.clone().unwrap_or_default(),
                ),
                (
                    "default:host_id".into(),
                    status.host_ip.clone().unwrap_or_default(),
                ),
                (
                    "default:started_at".into(),
                    status
                        .start_time
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .unwrap_or_default(),
                ),
                (
                    "default:labels".into(),
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                ("default:image".into(), container.image.clone()),
                ("default:status".into(), shown.clone()),
                ("default:status_message".into(), message),
                (
                    "default:container_id".into(),
                    container.container_id.clone().unwrap_or_default(),
                ),
                ("terminated".into(), terminated.to_string()),
                ("status".into(), shown.clone()),
                ("node-executor".into(), NODE_EXECUTOR.into()),
            ]);
            if let KubeConnection::ConfigFile(file) = &source.connection {
                attributes.insert(NODE_CONFIG_FILE.into(), file.clone());
            }
            for (k, v) in &labels {
                attributes.insert(format!("labels:{k}"), v.clone());
            }
            attributes.extend(source.attributes.clone());
            let mut tags: BTreeSet<String> = source.tags.iter().cloned().collect();
            for attr in &source.tag_selectors {
                if let Some(v) = attributes.get(attr).filter(|v| !v.is_empty()) {
                    tags.insert(v.clone());
                }
            }
            nodes.push(Node {
                nodename: format!("{name}-{}", container.name),
                hostname: status.pod_ip.clone().unwrap_or_else(|| name.to_string()),
                port: None,
                username: None,
                tags,
                attributes,
            });
        }
    }
    nodes
}
