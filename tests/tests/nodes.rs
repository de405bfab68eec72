//! Node sources: a project's uploaded resources.yaml and a runner's own
//! file, listed and filtered through the CLI; runner credentials stay home.

use futures::StreamExt;
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_and_runner_nodes_are_listed_filtered_and_keep_credentials_home() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let project_file = dir.path().join("resources.yaml");
    std::fs::write(
        &project_file,
        "web1:\n  hostname: 10.9.0.1\n  tags: web, prod\nweb2:\n  hostname: 10.9.0.2:2222\n  tags: web, staging\n",
    )
    .unwrap();
    let runner_file = dir.path().join("runner-nodes.yaml");
    std::fs::write(
        &runner_file,
        "- nodename: db1\n  hostname: deploy@10.8.0.7\n  tags: [db, prod]\n  ssh-key-storage-path: keys/secret-db-key\n  ssh-password-storage-path: keys/secret-db-pass\n",
    )
    .unwrap();

    let mut reports = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let _edge = start_runner_with(&stack.nats, "edge", &["dc2"], |o| {
        o.nodes_file = Some(runner_file.clone())
    });
    tokio::time::timeout(WAIT, reports.next())
        .await
        .expect("the runner reports its nodes");

    let cli = |args: &[&str]| stack.cli(args);
    let (code, stdout, stderr) = cli(&["nodes", "load", project_file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("loaded 2 nodes"), "{stdout}");

    let (code, stdout, _) = cli(&["nodes"]);
    assert_eq!(code, Some(0));
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["db1", "web1", "web2"]);

    let (code, stdout, _) = cli(&["nodes", "--filter", "tags: prod"]);
    assert_eq!(code, Some(0));
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(&lines[0][..3], ["db1", "10.8.0.7", "runner:edge"]);
    assert_eq!(&lines[1][..3], ["web1", "10.9.0.1", "project"]);

    let (code, stdout, _) = cli(&["nodes", "-F", "tags: web !name: web1"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("web2 ") && stdout.contains("10.9.0.2:2222"),
        "{stdout}"
    );

    let (code, _, stderr) = cli(&["nodes", "--filter", "name: /web[/"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("column 7") && stderr.contains("invalid regex"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // The runner's credential references never left it.
    for secret in ["keys/secret-db-key", "keys/secret-db-pass"] {
        let found = find_in_all_streams(&stack.js, secret).await;
        assert!(found.is_empty(), "{secret} found in {found:?}");
    }
    // ...while the rest of its node did arrive.
    assert!(!find_in_all_streams(&stack.js, "10.8.0.7").await.is_empty());

    let (status, body) = {
        let r = stack
            .http
            .put(stack.url("/project/default/resources"))
            .body("web1:\n  hostname: h:notaport\n")
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("port `notaport`"),
        "{body}"
    );
}
