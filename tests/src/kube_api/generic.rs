//! The other kinds Rundeck's generic steps create and delete: Deployments
//! and StatefulSets (apps/v1), ConfigMaps, Services, Secrets,
//! PersistentVolumeClaims and PersistentVolumes (core v1), Ingresses
//! (networking.k8s.io/v1) and StorageClasses (storage.k8s.io/v1), stored
//! as they come. No controller runs them: a Deployment's or a
//! StatefulSet's rollout is simulated, one more replica ready at each
//! read, so that a wait sees it progress without the fake keeping time.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use super::objects::{
    admit_metadata, created, deleted_status, now, ok, uid, KubeError, Params, Reply,
};
use super::pods::DeleteOptions;
use super::Shared;

/// `(group, version, plural, kind, namespaced)`.
pub(super) const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("apps", "v1", "deployments", "Deployment", true),
    ("apps", "v1", "statefulsets", "StatefulSet", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "services", "Service", true),
    ("", "v1", "secrets", "Secret", true),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    ("", "v1", "persistentvolumes", "PersistentVolume", false),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
    ),
];

/// `(plural, namespace, name, propagationPolicy, gracePeriodSeconds)` of
/// an object deleted.
pub type Deleted = (String, String, String, Option<String>, Option<i64>);

/// One stored object: `(plural, namespace, name)` → the object, and the
/// delete options it was deleted with (kept, for the tests, after).
#[derive(Default)]
pub(super) struct Objects {
    pub live: std::collections::BTreeMap<(String, String, String), Value>,
    pub deleted: Vec<Deleted>,
}

fn prefix(group: &str, version: &str) -> String {
    match group {
        "" => format!("/api/{version}"),
        g => format!("/apis/{g}/{version}"),
    }
}

/// The routes of every kind in [`KINDS`].
pub(super) fn routes(mut router: Router<Arc<Shared>>) -> Router<Arc<Shared>> {
    for &(group, version, plural, kind, namespaced) in KINDS {
        let base = prefix(group, version);
        let (collection, item) = if namespaced {
            (
                format!("{base}/namespaces/{{ns}}/{plural}"),
                format!("{base}/namespaces/{{ns}}/{plural}/{{name}}"),
            )
        } else {
            (
                format!("{base}/{plural}"),
                format!("{base}/{plural}/{{name}}"),
            )
        };
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let av = api_version.clone();
        let create = move |state, ns: Option<String>, body: Bytes| {
            let av = av.clone();
            async move { create(state, plural, kind, &av, ns.unwrap_or_default(), body) }
        };
        let read = move |state, ns: Option<String>, name: String| async move {
            read(state, plural, kind, group, ns.unwrap_or_default(), name)
        };
        let remove = move |state,
                           ns: Option<String>,
                           name: String,
                           query: Option<String>,
                           body: Bytes| async move {
            remove(
                state,
                plural,
                kind,
                group,
                ns.unwrap_or_default(),
                name,
                query,
                body,
            )
        };
        if namespaced {
            router = router
                .route(
                    &collection,
                    get(|| async { Err::<(), _>(KubeError::no_route()) }).post({
                        let create = create.clone();
                        move |AxumState(s): AxumState<Arc<Shared>>,
                              Path(ns): Path<String>,
                              body: Bytes| { create(s, Some(ns), body) }
                    }),
                )
                .route(
                    &item,
                    get({
                        move |AxumState(s): AxumState<Arc<Shared>>,
                              Path((ns, name)): Path<(String, String)>| {
                            read(s, Some(ns), name)
                        }
                    })
                    .delete({
                        move |AxumState(s): AxumState<Arc<Shared>>,
                              Path((ns, name)): Path<(String, String)>,
                              RawQuery(q): RawQuery,
                              body: Bytes| {
                            remove(s, Some(ns), name, q, body)
                        }
                    }),
                );
        } else {
            router = router
                .route(
                    &collection,
                    get(|| async { Err::<(), _>(KubeError::no_route()) }).post(
                        move |AxumState(s): AxumState<Arc<Shared>>, body: Bytes| {
                            create(s, None, body)
                        },
                    ),
                )
                .route(
                    &item,
                    get(
                        move |AxumState(s): AxumState<Arc<Shared>>, Path(name): Path<String>| {
                            read(s, None, name)
                        },
                    )
                    .delete(
                        move |AxumState(s): AxumState<Arc<Shared>>,
                              Path(name): Path<String>,
                              RawQuery(q): RawQuery,
                              body: Bytes| remove(s, None, name, q, body),
                    ),
                );
        }
    }
    router
}

fn create(
    shared: Arc<Shared>,
    plural: &str,
    kind: &str,
    api_version: &str,
    ns: String,
    body: Bytes,
) -> Reply {
    let mut body: Value = serde_json::from_slice(&body).map_err(|e| {
        KubeError::bad_request(format!("the body of the request was not a {kind}: {e}"))
    })?;
    // As the apiserver decodes, with the endpoint's kind as the default,
    // and clears the namespace of a kind that has none.
    if let Some(object) = body.as_object_mut() {
        object.entry("kind").or_insert_with(|| json!(kind));
        object
            .entry("apiVersion")
            .or_insert_with(|| json!(api_version));
        if ns.is_empty() {
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("namespace");
            }
        }
    }
    // As the apiserver decodes a body: its kind and apiVersion are the
    // endpoint's.
    if body["kind"] != kind || body["apiVersion"] != api_version {
        return Err(KubeError::bad_request(format!(
            "the API version in the data ({}) does not match the expected API version ({api_version}), or its kind ({}) is not {kind}",
            body["apiVersion"], body["kind"]
        )));
    }
    let mut st = shared.state.lock().unwrap();
    let name = admit_metadata(kind, &ns, &mut body, &uid(), now())?;
    if ns.is_empty() {
        body["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
    }
    let key = (plural.to_string(), ns, name.clone());
    if st.objects.live.contains_key(&key) {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        return Err(KubeError::already_exists(group, plural, &name));
    }
    st.resource_version += 1;
    body["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
    let replicas = body["spec"]["replicas"].as_i64().unwrap_or(1);
    match kind {
        "Deployment" => {
            body["status"] = json!({"observedGeneration": 1, "replicas": replicas, "unavailableReplicas": replicas});
        }
        "StatefulSet" => body["status"] = json!({"replicas": replicas, "currentReplicas": 0}),
        _ => {}
    }
    st.objects.live.insert(key, body.clone());
    created(body)
}

fn read(
    shared: Arc<Shared>,
    plural: &str,
    kind: &str,
    group: &str,
    ns: String,
    name: String,
) -> Reply {
    let mut st = shared.state.lock().unwrap();
    let object = st
        .objects
        .live
        .get_mut(&(plural.to_string(), ns, name.clone()))
        .ok_or_else(|| KubeError::not_found_in(group, plural, &name))?;
    // The simulated rollout: one more replica ready at each read.
    if matches!(kind, "Deployment" | "StatefulSet") {
        let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = (object["status"]["readyReplicas"].as_i64().unwrap_or(0) + 1).min(wanted);
        let status = &mut object["status"];
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(ready);
        status["currentReplicas"] = json!(ready);
        match wanted - ready {
            0 => {
                status
                    .as_object_mut()
                    .unwrap()
                    .remove("unavailableReplicas");
            }
            left => status["unavailableReplicas"] = json!(left),
        }
    }
    ok(object.clone())
}

#[allow(clippy::too_many_arguments)]
fn remove(
    shared: Arc<Shared>,
    plural: &str,
    kind: &str,
    group: &str,
    ns: String,
    name: String,
    query: Option<String>,
    body: Bytes,
) -> Reply {
    let options = DeleteOptions::read(&Params::parse(query.as_deref()), &body)?;
    let mut st = shared.state.lock().unwrap();
    let object = st
        .objects
        .live
        .remove(&(plural.to_string(), ns.clone(), name.clone()))
        .ok_or_else(|| KubeError::not_found_in(group, plural, &name))?;
    st.objects.deleted.push((
        plural.to_string(),
        ns,
        name.clone(),
        options.policy,
        options.grace,
    ));
    // As the apiserver's stores for these kinds answer (their
    // `ReturnDeletedObject`, and the OpenAPI spec's 200 body): the object
    // itself; for the others a `Status`.
    if matches!(
        plural,
        "services" | "storageclasses" | "persistentvolumes" | "persistentvolumeclaims"
    ) {
        return ok(object);
    }
    let uid = object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ok(deleted_status(group, kind, &name, &uid))
}
