//! A runner over wss:// verifies the hub: it trusts the CA it is given and
//! refuses a certificate from any other.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use outpost_runner::{Runner, RunnerOptions};
use outpost_schemas::job::TagSet;
use outpost_tests::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a server certificate for 127.0.0.1 signed by it.
fn pki(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-days",
            "1",
            "-subj",
            &format!("/CN={ca}"),
        ],
    );
}

fn server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_trusts_its_ca_and_refuses_any_other() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path(), "hub-ca");
    pki(dir.path(), "rogue-ca");
    server_cert(dir.path(), "hub-ca");
    let nats = NatsServer::start_with_ws_tls(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    assert!(nats.ws_url.starts_with("wss://"), "{}", nats.ws_url);
    let stack = Stack::start_on(nats, ServiceRoles::ALL).await;

    let mut heartbeats = stack
        .client
        .subscribe("outpost.hb.trusting.*")
        .await
        .unwrap();
    let ca = dir.path().join("hub-ca.pem");
    let _ok = start_runner_with(&stack.nats, "trusting", &["t"], |o| {
        o.nats.ca_file = Some(ca.clone())
    });
    tokio::time::timeout(WAIT, heartbeats.next())
        .await
        .expect("a runner trusting the hub's CA connects over wss");

    let mut opts = RunnerOptions::new(
        "wary",
        TagSet::new(["t"]).unwrap(),
        stack.nats.ws_options("wary"),
    );
    opts.nats.ca_file = Some(dir.path().join("rogue-ca.pem"));
    opts.work_dir = dir.path().join("wary");
    opts.connect_give_up = Duration::from_secs(2);
    let err = Runner::new(opts)
        .run(tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("a certificate from another CA is refused");
    let text = format!("{err:#}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "{text}"
    );
}
