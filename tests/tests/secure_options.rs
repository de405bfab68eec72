//! Secure options as Rundeck defines them, over the real stack: an option
//! without `valueExposed` (Secure Remote Authentication) logs in over SSH
//! (a real sshd, a real password) and no step sees it; a `storagePath`
//! default is read from the claiming runner's own key store.

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::sshd::{Sshd, TestUser};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentication_option_logs_in_over_ssh_and_no_step_sees_it() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(&[]);
    let user = TestUser::create();
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "db1:\n  hostname: 127.0.0.1:{}\n  username: {}\n  tags: db\n  ssh-authentication: password\n",
            sshd.port, user.name
        ),
    )
    .unwrap();
    let mut reported = stack.client.subscribe("outpost.nodes.vault").await.unwrap();
    let known_hosts = sshd.known_hosts();
    let _vault = start_runner_with(&stack.nats, "vault", &["vault"], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.known_hosts = known_hosts.clone();
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();

    // Rundeck would expand it to nothing; Outpost says why at import.
    refused(
        &stack,
        "- name: leaky\n  options:\n  - name: sshPassword\n    secure: true\n  sequence:\n    commands:\n    - exec: echo ${option.sshPassword}\n",
        "secure option without `valueExposed: true`",
    )
    .await;

    let job = stack
        .load(
            "- name: login\n  options:\n  - name: sshPassword\n    secure: true\n    required: true\n  nodefilters:\n    filter: 'name: db1'\n  sequence:\n    commands:\n    - exec: echo \"user=$(id -un) env=[${RD_OPTION_SSHPASSWORD:-unset}]\"\n    - script: |\n        #!/bin/sh\n        echo \"token=[@option.sshPassword@]\"\n",
            "login",
        )
        .await;
    let id = stack
        .run_job(job, &[("sshPassword", user.password.as_str())])
        .await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.successful_nodes, ["db1"]);
    let lines: Vec<String> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| e.log)
        .collect();
    assert_eq!(
        lines,
        [format!("user={} env=[unset]", user.name), "token=[]".into()]
    );

    // The wrong password is a failed login on the node, not a leak.
    let id = stack.run_job(job, &[("sshPassword", "wrong")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.failed_nodes, ["db1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_path_default_comes_from_the_claiming_runners_key_store() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(key_store.join("app")).unwrap();
    std::fs::write(key_store.join("app/token"), "s3cr3t-from-the-store\n").unwrap();
    let _edge = start_runner_with(&stack.nats, "edge", &["edge"], |o| {
        o.key_store = key_store.clone();
    });

    // A storage path on a plain option, which Rundeck ignores, is refused.
    refused(
        &stack,
        "- name: plain\n  options:\n  - name: t\n    storagePath: keys/app/token\n  sequence:\n    commands:\n    - exec: 'true'\n",
        "`storagePath` goes with `secure: true`",
    )
    .await;

    let yaml = "
- name: deploy
  runnerSelector: {filter: edge}
  options:
  - {name: token, secure: true, valueExposed: true, required: true, storagePath: keys/app/token}
  - {name: extra, secure: true, valueExposed: true, storagePath: keys/app/missing}
  sequence:
    commands:
    - exec: echo \"token=${option.token} sha=$(printf %s \"$RD_OPTION_TOKEN\" | sha256sum | cut -c1-16) extra=[$RD_OPTION_EXTRA]\"
";
    let needs_a_key = "
- name: needs-a-key
  runnerSelector: {filter: edge}
  options:
  - {name: token, secure: true, valueExposed: true, required: true, storagePath: keys/app/nope}
  sequence:
    commands:
    - exec: echo never
";
    let deploy = stack.load(yaml, "deploy").await;
    let sha = |s: &str| {
        use sha2::Digest;
        data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(s.as_bytes()))[..16].to_string()
    };

    // No value given: the required option's default is the runner's key;
    // the optional one's is missing, so it is empty, with Rundeck's warning.
    let id = stack.run_job(deploy, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let lines: Vec<(String, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.level, e.log))
        .collect();
    assert_eq!(
        lines,
        [
            (
                "WARN".to_string(),
                "Option 'extra' default value could not be loaded from key storage path: keys/app/missing: path not found".to_string()
            ),
            (
                "NORMAL".into(),
                format!("token=[SECURE] sha={} extra=[]", sha("s3cr3t-from-the-store"))
            ),
        ]
    );

    // A value the run gives wins over the store.
    let id = stack.run_job(deploy, &[("token", "given-at-run")]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    let out: Vec<String> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| e.log)
        .collect();
    assert!(
        out.contains(&format!(
            "token=[SECURE] sha={} extra=[]",
            sha("given-at-run")
        )),
        "{out:?}"
    );

    // A required key the runner lacks fails the step before it starts,
    // in Rundeck's words; the control plane accepted the run unread.
    let needs = stack.load(needs_a_key, "needs-a-key").await;
    let id = stack.run_job(needs, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    assert_eq!(st.steps[0].status, StepStatus::Failed);
    assert_eq!(
        st.steps[0].reason.as_deref(),
        Some("Required option 'token' default value could not be loaded from key storage path: keys/app/nope: path not found")
    );
}

/// Imports `yaml`, which must be refused with a message saying `why`.
async fn refused(stack: &Stack, yaml: &str, why: &str) {
    let (status, body) = stack.import(yaml).await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{body}");
}
