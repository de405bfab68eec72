//! Rundeck's Kubernetes pod and Job steps on the runner (Create, Wait,
//! Pods-Logs, Delete), against the fake Kubernetes API server
//! (`outpost_tests::kube_api`, which kubectl 1.20 and the official Python
//! client are run against in `kube_fake_protocol.rs`): a Job's log streams
//! while it runs and its container's exit code is the step's, a pod is
//! created, waited for and deleted, and an abort deletes what its own
//! execution created, and nothing else.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::kube_api::{process_alive, runner, FakeKube, TOKEN};
use outpost_tests::*;

/// A job of `steps` (YAML list items, indented for `commands:`) against
/// the fake, with the token from the runner's key store.
fn job_yaml(name: &str, fake: &FakeKube, steps: &str) -> String {
    let auth = format!("url: {}\n        token: keys/k8s/token", fake.url());
    format!(
        "- name: {name}\n  runnerSelector: {{filter: k8s}}\n  sequence:\n    commands:\n{}",
        steps.replace("AUTH", &auth)
    )
}

const JOB_STEPS: &str = r#"
    - nodeStep: true
      type: Kubernetes-Create-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        container_name: main
        container_image: busybox:1.36
        image_pull_policy: IfNotPresent
        backoff_limit: '0'
        container_command: sh -c
        container_args: ${option.script}
        AUTH
    - nodeStep: true
      type: Kubernetes-Wait-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        retries: '600'
        sleep: '0.1'
        show_log: 'true'
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete-Job
      configuration:
        name: report-${job.execid}
        namespace: batch
        AUTH
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_log_streams_and_its_exit_code_is_the_steps() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let yaml = format!(
        "{}  options:\n  - name: script\n",
        job_yaml("report", &fake, JOB_STEPS)
    );
    let job = stack.load(&yaml, "report").await;

    let id = stack
        .run_job(job, &[("script", "echo start; echo done")])
        .await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.stream, e.log))
        .collect();
    let out: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l.as_str())
        .collect();
    let job_name = format!("report-{id}");
    assert_eq!(
        out,
        [
            format!("Job batch/{job_name} created").as_str(),
            "start",
            "done",
            &format!("Job batch/{job_name} deleted"),
        ],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&("stderr".into(), format!("Job batch/{job_name} succeeded"))),
        "{lines:#?}"
    );
    assert!(fake.jobs().is_empty(), "{:?}", fake.jobs());
    assert!(fake.pods().is_empty(), "{:?}", fake.pods());

    // A Job that fails: the wait step fails with its container's exit
    // code, and the Job stays for a look.
    let id = stack
        .run_job(job, &[("script", "echo bad >&2; exit 3")])
        .await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[1].status, StepStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[1].exit_code, Some(3), "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert!(lines.iter().any(|l| l == "bad"), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "Job batch/report-{id} failed: BackoffLimitExceeded"
        ))),
        "{lines:#?}"
    );
    assert_eq!(fake.jobs(), [("batch".to_string(), format!("report-{id}"))]);
    assert!(
        find_in_all_streams(&stack.js, TOKEN).await.is_empty(),
        "the token reached a stream"
    );
}

/// Whether the pod's first container has ended (the fake reports it once
/// its process is reaped).
fn ended(fake: &FakeKube, ns: &str, name: &str) -> bool {
    fake.pod(ns, name)
        .is_some_and(|p| !p["status"]["containerStatuses"][0]["state"]["terminated"].is_null())
}

/// A pod is created; once its container has ended, a wait, a log and a
/// delete step read it. (While a container runs it is ready, which ends a
/// wait at once: the container is let end first, so that what the wait
/// finds does not depend on timing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_created_waited_for_read_and_deleted() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let create = r#"
    - nodeStep: true
      type: Kubernetes-Create-Pod
      configuration:
        name: probe
        namespace: shop
        labels: app=probe
        container_name: main
        image: busybox
        environments: GREETING=hello from the pod
        container_command: sh -c
        container_args: echo "$GREETING"; exit ${option.code}
        AUTH
"#;
    let wait = r#"
    - nodeStep: true
      type: Kubernetes-Wait-Pod
      configuration:
        name: probe
        namespace: shop
        retries: '600'
        sleep: '0.1'
        AUTH
"#;
    let read = r#"
    - nodeStep: true
      type: Kubernetes-Pods-Logs
      configuration:
        name: probe
        namespace: shop
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete-Pod
      configuration:
        name: probe
        namespace: shop
        AUTH
    - nodeStep: true
      type: Kubernetes-Delete-Pod
      configuration:
        name: probe
        namespace: shop
        AUTH
"#;
    let creates = stack
        .load(
            &format!(
                "{}  options:\n  - name: code\n",
                job_yaml("create", &fake, create)
            ),
            "create",
        )
        .await;
    let reads = stack
        .load(&job_yaml("read", &fake, &format!("{wait}{read}")), "read")
        .await;
    let waits = stack.load(&job_yaml("wait", &fake, wait), "wait").await;

    let id = stack.run_job(creates, &[("code", "0")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(stack.log_texts(id).await, ["pod shop/probe created"]);
    let labels = &fake.pod("shop", "probe").unwrap()["metadata"]["labels"];
    assert_eq!(labels["app"], "probe");
    assert_eq!(labels["outpost.dev/execution"], id.to_string());
    wait_for("the container to end", || ended(&fake, "shop", "probe")).await;
    let id = stack.run_job(reads, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines = stack.log_texts(id).await;
    let greetings = lines.iter().filter(|l| *l == "hello from the pod").count();
    assert_eq!(
        greetings, 2,
        "once by the wait, once by the log step: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "pod shop/probe ended with exit code 0"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "pod shop/probe deleted"),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l == "pod shop/probe is not there"),
        "deleting it again is no failure: {lines:#?}"
    );
    assert!(fake.pods().is_empty(), "{:?}", fake.pods());

    // A container that ended with a code: the wait step's.
    let id = stack.run_job(creates, &[("code", "4")]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    wait_for("the container to end", || ended(&fake, "shop", "probe")).await;
    let id = stack.run_job(waits, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].exit_code, Some(4), "{st:#?}");
    assert_eq!(fake.pods(), [("shop".to_string(), "probe".to_string())]);
}

/// An abort while a step waits deletes the Job if the aborted execution
/// created it: the Job, its pod and the pod's process are gone. A Job
/// another execution created is left as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_deletes_what_its_execution_created_and_nothing_else() {
    let stack = Stack::start().await;
    let fake = FakeKube::start_with_token(TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let _runner = runner(&stack, dir.path(), None).await;
    let create = r#"
    - nodeStep: true
      type: Kubernetes-Create-Job
      configuration:
        name: ${option.name}
        container_name: main
        container_image: busybox
        container_command: sh -c
        container_args: echo started; exec sleep 1000
        AUTH
"#;
    let wait = r#"
    - nodeStep: true
      type: Kubernetes-Wait-Job
      configuration:
        name: ${option.name}
        sleep: '0.1'
        AUTH
"#;
    let options = "  options:\n  - name: name\n";
    let creates = stack
        .load(
            &format!("{}{options}", job_yaml("creates", &fake, create)),
            "creates",
        )
        .await;
    let waits = stack
        .load(
            &format!("{}{options}", job_yaml("waits", &fake, wait)),
            "waits",
        )
        .await;
    let both = stack
        .load(
            &format!(
                "{}{options}",
                job_yaml("both", &fake, &format!("{create}{wait}"))
            ),
            "both",
        )
        .await;

    // Created by one execution, waited on by another, which is aborted.
    let id = stack.run_job(creates, &[("name", "theirs")]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let id = stack.run_job(waits, &[("name", "theirs")]).await;
    wait_for_async("the other execution's Job's log", || async {
        stack.output_so_far(id).await.iter().any(|l| l == "started")
    })
    .await;
    stack.abort(id).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Aborted
    );

    // Created and waited on by the one aborted.
    let id = stack.run_job(both, &[("name", "ours")]).await;
    wait_for_async("the Job's log", || async {
        stack.output_so_far(id).await.iter().any(|l| l == "started")
    })
    .await;
    let pod = fake
        .pods()
        .into_iter()
        .find(|(_, p)| p.starts_with("ours-"))
        .expect("the Job's pod");
    let pid = fake
        .container_pid(&pod.0, &pod.1, "main")
        .expect("the pod's process");
    assert!(process_alive(pid));
    stack.abort(id).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Aborted, "{st:#?}");
    let lines = stack.log_texts(id).await;
    assert!(
        lines
            .iter()
            .any(|l| l == "aborted: deleted Job default/ours, which this execution created"),
        "{lines:#?}"
    );
    assert_eq!(fake.jobs(), [("default".to_string(), "theirs".to_string())]);
    let pods = fake.pods();
    assert!(
        pods.iter().all(|(_, p)| p.starts_with("theirs-")) && pods.len() == 1,
        "{pods:?}"
    );
    assert!(
        !process_alive(pid),
        "the aborted Job's container still runs"
    );
}
