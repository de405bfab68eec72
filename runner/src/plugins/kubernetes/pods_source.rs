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

const LIST_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The pods a source file (`--kubernetes-pods`) selects, as nodes.
pub async fn load(path: &Path, key_store: &Path) -> Result<Vec<Node>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let config: PodsSourceConfig = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    let source = config.source()?;
    // Before the runner takes work: a cluster that accepts the connection
    // and never answers must not hold it forever.
    tokio::time::timeout(LIST_LIMIT, list(&source, key_store))
        .await
        .map_err(|_| format!("the pods were not listed within {LIST_LIMIT:?}"))?
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
    let nodes = nodes_of(&listed.items, source);
    check_unique(&nodes)?;
    Ok(nodes)
}

/// The nodes of `pods`, as `pods-resource-model.py` makes them: one per
/// container of the spec (a pending pod's too); the status is the pod's
/// phase, else the container's state, else (for a container that has not
/// ended) the reason of the last pod condition that is `False`.
pub fn nodes_of(pods: &[Pod], source: &PodsSource) -> Vec<Node> {
    let mut nodes = Vec::new();
    for pod in pods {
        let meta = &pod.metadata;
        let (Some(name), Some(spec)) = (meta.name.as_deref(), pod.spec.as_ref()) else {
            continue;
        };
        let status = pod.status.clone().unwrap_or_default();
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let labels = meta.labels.clone().unwrap_or_default();
        for container in &spec.containers {
            let mut shown = status.phase.clone().unwrap_or_default();
            let (mut message, mut started_at) = (String::new(), String::new());
            let mut terminated = false;
            let mut container_id = String::new();
            let found: Option<&ContainerStatus> = status
                .container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == container.name);
            if let Some(cs) = found {
                if let Some(state) = &cs.state {
                    if let Some(running) = &state.running {
                        shown = "running".into();
                        if let Some(t) = &running.started_at {
                            started_at = t.0.strftime("%Y-%m-%d %H:%M:%S").to_string();
                        }
                    }
                    if state.waiting.is_some() {
                        shown = "waiting".into();
                    }
                    if state.terminated.is_some() {
                        terminated = true;
                        shown = "terminated".into();
                    }
                }
                container_id = cs.container_id.clone().unwrap_or_default();
            }
            if !terminated {
                for c in status
                    .conditions
                    .iter()
                    .flatten()
                    .filter(|c| c.status == "False")
                {
                    shown = c.reason.clone().unwrap_or_default();
                    message = c.message.clone().unwrap_or_default();
                }
            }
            let keep = match source.running_only {
                true => shown.to_lowercase() == "running",
                false => !terminated,
            };
            if !keep {
                continue;
            }
            let pod_ip = status.pod_ip.clone().unwrap_or_default();
            let description = match message.as_str() {
                "" => shown.clone(),
                m => format!("{shown}({m})"),
            };
            let mut attributes: BTreeMap<String, String> = BTreeMap::from([
                (NODE_NAME.into(), name.to_string()),
                (NODE_NAMESPACE.into(), namespace.clone()),
                (NODE_CONTAINER.into(), container.name.clone()),
                ("default:pod_id".into(), pod_ip.clone()),
                (
                    "default:host_id".into(),
                    status.host_ip.clone().unwrap_or_default(),
                ),
                ("default:started_at".into(), started_at),
                (
                    "default:labels".into(),
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                (
                    "default:image".into(),
                    container.image.clone().unwrap_or_default(),
                ),
                ("default:status".into(), shown.clone()),
                ("default:status_message".into(), message.clone()),
                ("default:container_id".into(), container_id),
                ("terminated".into(), terminated.to_string()),
                ("status".into(), shown.clone()),
                ("description".into(), description),
                // Outpost's: pods have no SSH, so they run through the
                // plugin's executor unless `attributes` says otherwise.
                ("node-executor".into(), NODE_EXECUTOR.into()),
            ]);
            if let KubeConnection::ConfigFile(file) = &source.connection {
                attributes.insert(NODE_CONFIG_FILE.into(), file.clone());
            }
            for (k, v) in &labels {
                attributes.insert(format!("labels:{k}"), v.clone());
            }
            let mut tags: BTreeSet<String> = source.tags.iter().cloned().collect();
            for attr in &source.tag_selectors {
                if let Some(v) = attributes.get(attr).filter(|v| !v.is_empty()) {
                    tags.insert(v.clone());
                }
            }
            attributes.extend(source.attributes.clone());
            nodes.push(Node {
                nodename: format!("{name}-{}", container.name),
                hostname: if pod_ip.is_empty() {
                    name.to_string()
                } else {
                    pod_ip
                },
                port: None,
                username: None,
                tags,
                attributes,
            });
        }
    }
    nodes
}

/// Two pods of one name in two namespaces would make two nodes of one
/// name, and a step for one could run in the other.
pub fn check_unique(nodes: &[Node]) -> Result<(), String> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for n in nodes {
        let ns = n.attributes.get(NODE_NAMESPACE).map_or("", String::as_str);
        if let Some(other) = seen.insert(&n.nodename, ns) {
            return Err(format!(
                "node `{}` comes from pods in namespaces `{other}` and `{ns}`; set namespace_filter, or a label_selector that tells them apart",
                n.nodename
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ns: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "image": "nginx:1"}, {"name": "side", "image": "envoy:2"}]},
            "status": status,
        }))
        .unwrap()
    }

    fn source(running_only: bool) -> PodsSource {
        PodsSource {
            connection: KubeConnection::ConfigFile("/k/c".into()),
            namespace: None,
            label_selector: None,
            field_selector: None,
            running_only,
            tags: vec!["pods".into()],
            tag_selectors: vec!["default:status".into()],
            attributes: BTreeMap::new(),
        }
    }

    /// As the plugin: a pending pod's containers are nodes with its phase,
    /// a running container of a pod that is not ready takes the
    /// condition's reason, an ended one is left out (or, with `running`,
    /// everything but `running`).
    #[test]
    fn pods_become_nodes_as_the_resource_model_makes_them() {
        let running = serde_json::json!({"running": {"startedAt": "2026-12-04T10:00:00Z"}});
        let pods = [
            pod(
                "web-0",
                "shop",
                serde_json::json!({
                    "phase": "Running", "podIP": "10.1.0.5", "hostIP": "10.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": [
                        {"name": "app", "image": "docker.io/nginx:1", "imageID": "", "ready": true, "restartCount": 0, "state": running, "containerID": "c://1"},
                        {"name": "side", "image": "envoy:2", "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
                    ],
                }),
            ),
            pod(
                "web-1",
                "shop",
                serde_json::json!({
                    "phase": "Running", "podIP": "10.1.0.6",
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "NotReady", "message": "first"},
                        {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": "containers with unready status: [app]"},
                    ],
                    "containerStatuses": [
                        {"name": "app", "image": "nginx:1", "imageID": "", "ready": false, "restartCount": 0, "state": running},
                    ],
                }),
            ),
            pod("web-2", "shop", serde_json::json!({"phase": "Pending"})),
        ];
        let seen = |nodes: Vec<Node>| -> Vec<(String, String, String, Vec<String>)> {
            nodes
                .into_iter()
                .map(|n| {
                    (
                        n.nodename,
                        n.hostname,
                        n.attributes["description"].clone(),
                        n.tags.into_iter().collect(),
                    )
                })
                .collect()
        };
        let s = |v: &str| v.to_string();
        assert_eq!(
            seen(nodes_of(&pods, &source(false))),
            [
                (
                    s("web-0-app"),
                    s("10.1.0.5"),
                    s("running"),
                    vec![s("pods"), s("running")]
                ),
                (
                    s("web-1-app"),
                    s("10.1.0.6"),
                    s("ContainersNotReady(containers with unready status: [app])"),
                    vec![s("ContainersNotReady"), s("pods")]
                ),
                (
                    s("web-1-side"),
                    s("10.1.0.6"),
                    s("ContainersNotReady(containers with unready status: [app])"),
                    vec![s("ContainersNotReady"), s("pods")]
                ),
                (
                    s("web-2-app"),
                    s("web-2"),
                    s("Pending"),
                    vec![s("Pending"), s("pods")]
                ),
                (
                    s("web-2-side"),
                    s("web-2"),
                    s("Pending"),
                    vec![s("Pending"), s("pods")]
                ),
            ]
        );
        let only = seen(nodes_of(&pods, &source(true)));
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].0, "web-0-app");
        let web0 = &nodes_of(&pods, &source(false))[0];
        for (k, v) in [
            ("default:pod_id", "10.1.0.5"),
            ("default:host_id", "10.0.0.1"),
            ("default:started_at", "2026-12-04 10:00:00"),
            ("default:labels", "app:web"),
            ("default:image", "nginx:1"),
            ("default:container_id", "c://1"),
            ("kubernetes:config_file", "/k/c"),
            ("labels:app", "web"),
            ("terminated", "false"),
            ("node-executor", NODE_EXECUTOR),
        ] {
            assert_eq!(web0.attributes[k], v, "{k}");
        }
        // Same names from two namespaces are refused.
        let twice = [
            pods[0].clone(),
            pod(
                "web-0",
                "staging",
                pods[0]
                    .status
                    .clone()
                    .map(|s| serde_json::to_value(s).unwrap())
                    .unwrap(),
            ),
        ];
        let err = check_unique(&nodes_of(&twice, &source(false))).unwrap_err();
        assert!(err.contains("namespaces `shop` and `staging`"), "{err}");
    }
}
