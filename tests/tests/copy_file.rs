//! Rundeck's Copy File step (`copyfile`) in a node job: files from the
//! runner reach an SSH node over SFTP (a real sshd on loopback, with the
//! key from the runner's key store) and a `node-executor: local` node on
//! the runner's host, where Rundeck's copiers put them: a trailing `/`
//! keeps the name, `recursive` copies the directory, a `pattern` picks
//! files, files 0644 and directories 0755. A missing source fails the
//! node, saying why.

use std::os::unix::fs::PermissionsExt;

use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::*;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copyfile_puts_files_on_ssh_and_local_nodes_as_rundeck_does() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(key_store.join("web")).unwrap();
    let key = keygen(&key_store.join("web"), "id", "ed25519");
    let sshd = Sshd::start(&[&key]);
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    // What the runner has to give.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("conf/extra")).unwrap();
    std::fs::write(src.join("app.tgz"), "payload").unwrap();
    std::fs::set_permissions(src.join("app.tgz"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(src.join("conf/a.conf"), "a=1").unwrap();
    std::fs::write(src.join("conf/extra/b.conf"), "b=2").unwrap();
    std::fs::write(src.join("conf/notes.txt"), "skip me").unwrap();
    // Each node's own destination, on this host.
    let dest = dir.path().join("dest");
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "web1:\n  hostname: 127.0.0.1:{p}\n  username: {user}\n  tags: web\n  ssh-key-storage-path: keys/web/id\n\
             here:\n  hostname: localhost\n  tags: web\n  node-executor: local\n",
            p = sshd.port
        ),
    )
    .unwrap();
    let mut reported = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let _edge = start_runner_with(&stack.nats, "edge", &["dc1"], |o| {
        o.nodes_file = Some(nodes_file.clone());
        o.key_store = key_store.clone();
        o.known_hosts = sshd.known_hosts();
    });
    use futures::StreamExt;
    tokio::time::timeout(WAIT, reported.next()).await.unwrap();

    let yaml = format!(
        r#"
- name: ship
  nodefilters:
    filter: 'tags: web'
    dispatch: {{threadcount: 2, keepgoing: true}}
  sequence:
    keepgoing: true
    commands:
    - type: copyfile
      nodeStep: true
      configuration:
        sourcePath: {src}/app.tgz
        destinationPath: {dest}/${{node.name}}/releases/
        echo: 'true'
    - type: copyfile
      nodeStep: true
      configuration:
        sourcePath: {src}/conf
        destinationPath: {dest}/${{node.name}}/etc
        pattern: '**/*.conf'
    - type: copyfile
      nodeStep: true
      configuration:
        sourcePath: {src}/conf
        destinationPath: {dest}/${{node.name}}/all
        recursive: 'true'
    - type: copyfile
      nodeStep: true
      configuration:
        sourcePath: {src}/missing
        destinationPath: {dest}/${{node.name}}/x
"#,
        src = src.display(),
        dest = dest.display()
    );
    let job = stack.load(&yaml, "ship").await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:#?}");
    for node in ["web1", "here"] {
        for step in &st.steps[..3] {
            assert_eq!(step.nodes[node].status, StepStatus::Succeeded, "{st:#?}");
        }
        let missing = &st.steps[3].nodes[node];
        assert_eq!(missing.status, StepStatus::Failed, "{st:#?}");
        let why = missing.reason.as_deref().unwrap_or_default();
        assert!(
            why.contains("CopyFileFailed") && why.contains("missing"),
            "{st:#?}"
        );

        let root = dest.join(node);
        let shipped = root.join("releases/app.tgz");
        assert_eq!(std::fs::read_to_string(&shipped).unwrap(), "payload");
        // Not the source's mode: Rundeck's copiers write 0644.
        assert_eq!(mode(&shipped), 0o644, "{node}");
        assert_eq!(mode(&root.join("releases")), 0o755, "{node}");
        // The pattern keeps paths under the source, and only matches.
        assert_eq!(
            std::fs::read_to_string(root.join("etc/a.conf")).unwrap(),
            "a=1"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/extra/b.conf")).unwrap(),
            "b=2"
        );
        assert!(!root.join("etc/notes.txt").exists());
        // Recursive copies the directory itself into the destination.
        assert_eq!(
            std::fs::read_to_string(root.join("all/conf/extra/b.conf")).unwrap(),
            "b=2"
        );
        assert!(root.join("all/conf/notes.txt").exists());
    }
    let lines: Vec<(Option<String>, String)> = stack
        .output_lines(id)
        .await
        .into_iter()
        .map(|e| (e.node, e.log))
        .collect();
    let shipped = format!("{}/web1/releases/app.tgz", dest.display());
    assert!(
        lines.contains(&(
            Some("web1".into()),
            format!(
                "Begin copy 7 bytes to node web1: {}/app.tgz -> {shipped}",
                src.display()
            )
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&(Some("web1".into()), format!("Copied: {shipped}"))),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&(
            Some("web1".into()),
            "Begin copy 2 files to node web1".into()
        )),
        "{lines:#?}"
    );
    drop(sshd);
}
