//! Rundeck's Kubernetes generic steps and rollout waits on the runner
//! (`Kubernetes-Create`, `Kubernetes-Delete`, `Kubernetes-Wait-Deployment`,
//! `-Wait-StatefulSet`), against the fake Kubernetes API server (whose
//! generic kinds the official Python client is run against in
//! `kube_fake_protocol.rs`): a manifest is applied with the execution's
//! label, a rollout is waited for until its replicas are ready (or the
//! looks run out), and objects are deleted as the plugin deletes them.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::kube_api::{runner, FakeKube, TOKEN};
use outpost_tests::*;

fn steps(fake: &FakeKube, body: &str) -> String {
    let auth = format!("url: {}\n        token: keys/k8s/token", fake.url());
    body.replace("AUTH", &auth)
}

const DEPLOY: &str = r#"
- name: deploy
  runnerSelector: {filter: k8s}
  options:
  - {name: replicas, value: '3'}
  - {name: retries, value: '5'}
  sequence:
    commands:
    - nodeStep: true
      type: Kubernetes-Create
      configuration:
        type: Deployment
        namespace: shop
        yaml: |
          apiVersion: apps/v1
          kind: Deployment
          metadata:
            name: web
            labels: {app: web}
          spec:
            replicas: ${option.replicas}
        AUTH
    - nodeStep: true
      type: Kubernetes-Create
      configuration:
        type: StorageClass
        yaml: |
          apiVersion: storage.k8s.io/v1
          kind: StorageClass
          metadata: {name: fast}
          provisioner: example.com/fast
        AUTH
    - nodeStep: true
      type: Kubernetes-Wait-Deployment
      configuration:
        name: web
        namespace: shop
        retries: ${option.retries}
        sleep: '0'
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete
      configuration:
        type: Deployment
        name: web
        namespace: shop
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete
      configuration:
        type: StorageClass
        name: fast
        AUTH
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_applied_its_rollout_waited_for_and_deleted() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let job = stack.load(&steps(&fake, DEPLOY), "deploy").await;

    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines = stack.output_lines(id).await;
    let said: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.stream.as_str(), l.log.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            ("stdout", "Deployment shop/web created"),
            ("stdout", "StorageClass fast created"),
            // One replica more at each read, in the fake.
            (
                "stderr",
                "waiting for Deployment shop/web: 1 of 3 replicas ready"
            ),
            (
                "stderr",
                "waiting for Deployment shop/web: 2 of 3 replicas ready"
            ),
            ("stderr", "Deployment shop/web is ready: 3 of 3 replicas"),
            ("stdout", "Deployment shop/web deleted"),
            ("stdout", "StorageClass fast deleted"),
        ],
        "{lines:#?}"
    );
    // As the plugin deletes: a Deployment in the foreground with a 5 s
    // grace, a StorageClass with the server's defaults.
    assert_eq!(
        fake.deleted_objects(),
        [
            (
                "deployments".to_string(),
                "shop".to_string(),
                "web".to_string(),
                Some("Foreground".to_string()),
                Some(5)
            ),
            (
                "storageclasses".to_string(),
                String::new(),
                "fast".to_string(),
                None,
                None
            ),
        ]
    );
    assert!(fake.objects().is_empty(), "{:?}", fake.objects());

    // Too few looks: the wait fails, saying how far the rollout got, and
    // the objects stay for a look.
    let id = stack
        .run_job(job, &[("replicas", "5"), ("retries", "1")])
        .await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[2].status, StepStatus::Failed);
    assert_eq!(
        st.steps[2].reason.as_deref(),
        Some("Deployment shop/web is not ready after 2 looks: 2 of 5 replicas"),
        "{st:#?}"
    );
    let web = fake
        .object("deployments", "shop", "web")
        .expect("the Deployment stays");
    // Labelled with the execution that made it, beside its own labels.
    assert_eq!(web["metadata"]["labels"]["app"], "web");
    assert_eq!(
        web["metadata"]["labels"]["outpost.dev/execution"],
        id.to_string().as_str()
    );
    assert!(
        find_in_all_streams(&stack.js, TOKEN).await.is_empty(),
        "the token reached a stream"
    );
}

/// A manifest whose kind is not the step's type is refused at import,
/// naming the key and the line; a create the server refuses (a duplicate)
/// fails the step with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_the_server_would_refuse_is_refused_with_its_reason() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let wrong = steps(
        &fake,
        "- name: wrong\n  sequence:\n    commands:\n    - nodeStep: true\n      type: Kubernetes-Create\n      configuration:\n        type: Service\n        yaml: 'apiVersion: v1\n\n          kind: ConfigMap\n\n          metadata: {name: c}'\n        AUTH\n",
    );
    let (status, body) = stack.import(&wrong).await;
    let body = body.to_string();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("line 4")
            && body.contains(
                "configuration.yaml: kind: `ConfigMap`, where the step's type is `Service`"
            ),
        "{body}"
    );

    let twice = steps(
        &fake,
        "- name: twice\n  runnerSelector: {filter: k8s}\n  sequence:\n    commands:\n    - nodeStep: true\n      type: Kubernetes-Create\n      configuration:\n        type: ConfigMap\n        namespace: shop\n        yaml: '{apiVersion: v1, kind: ConfigMap, metadata: {name: settings}, data: {a: \"1\"}}'\n        AUTH\n",
    );
    let job = stack.load(&twice, "twice").await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("cannot create ConfigMap shop/settings:") && reason.contains("409"),
        "{reason}"
    );
}
