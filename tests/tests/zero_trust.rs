//! Proof of zero trust: the node sits in a network namespace that only the
//! runner's namespace can reach. The control plane (this process) and the
//! NATS hub cannot open the node's SSH port; the runner connects outbound to
//! the hub's WebSocket port, and the job still runs on the node through it.

use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::ExecutionStatus;
use outpost_tests::netns::ZeroTrustNet;
use outpost_tests::sshd::{keygen, Sshd};
use outpost_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reaches_a_node_the_control_plane_cannot() {
    let net = ZeroTrustNet::create();
    let dir = tempfile::tempdir().unwrap();
    let key_store = dir.path().join("keys");
    std::fs::create_dir_all(&key_store).unwrap();
    let key = keygen(&key_store, "id", "ed25519");
    let sshd = Sshd::start_in_netns(&[&key], &net.node_ns, &net.node_ip);

    // The control plane's side: no route to the node.
    let node_addr: std::net::SocketAddr = format!("{}:{}", net.node_ip, sshd.port).parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&node_addr, Duration::from_secs(1)).is_err(),
        "the control plane's namespace reached the node's SSH port"
    );

    // NATS listens for WebSocket on the hub link, where the runner can dial it.
    let nats = NatsServer::start_with_ws_host(&net.hub_ip);
    let stack = Stack::start_on(nats, ServiceRoles::ALL).await;
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let nodes_file = dir.path().join("nodes.yaml");
    std::fs::write(
        &nodes_file,
        format!(
            "island:\n  hostname: {}:{}\n  username: {user}\n  ssh-key-storage-path: keys/id\n",
            net.node_ip, sshd.port
        ),
    )
    .unwrap();
    let known_hosts = sshd.known_hosts();
    let mut reported = stack.client.subscribe("outpost.nodes.edge").await.unwrap();
    let runner = Command::new("ip")
        .args(["netns", "exec", &net.runner_ns])
        .arg(workspace_binary("outpost-runner"))
        .args([
            "--insecure",
            "--id",
            "edge",
            "--nats-url",
            &stack.nats.ws_url,
            "--nodes-file",
        ])
        .arg(&nodes_file)
        .arg("--key-store")
        .arg(&key_store)
        .arg("--known-hosts")
        .arg(&known_hosts)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env("OUTPOST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _runner = Reaped(runner);
    assert!(
        stack.nats.ws_url.contains(&net.hub_ip),
        "{}",
        stack.nats.ws_url
    );
    tokio::time::timeout(WAIT, reported.next())
        .await
        .expect("the runner, in its own namespace, reached the hub over WebSocket");

    let job = stack
        .load(
            "- name: island\n  nodefilters:\n    filter: island\n  sequence:\n    commands:\n    - exec: ip -o -4 addr show | awk '{print $4}'\n",
            "island",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:#?}");
    assert_eq!(st.successful_nodes, ["island"]);
    let addrs: Vec<String> = stack.log_texts(id).await;
    assert!(
        addrs.contains(&format!("{}/30", net.node_ip)),
        "the step ran in the node's namespace: {addrs:?}"
    );
    assert!(
        !addrs.iter().any(|a| a.starts_with(&net.hub_ip)),
        "{addrs:?}"
    );
}
