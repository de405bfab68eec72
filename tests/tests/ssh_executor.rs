//! The SSH executor against a real OpenSSH sshd on loopback.

use std::sync::Arc;
use std::time::Duration;

use outpost_runner::executor::Exit;
use outpost_runner::ssh::{self, HostKeyPolicy, SshAuth, SshError, SshOptions, SshTarget};
use outpost_schemas::LogEntry;
use outpost_tests::sshd::{keygen, Sshd};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn target(sshd: &Sshd) -> SshTarget {
    SshTarget {
        host: "127.0.0.1".into(),
        port: sshd.port,
        username: std::env::var("USER").unwrap_or_else(|_| "root".into()),
    }
}

fn options(known_hosts: std::path::PathBuf, policy: HostKeyPolicy) -> SshOptions {
    SshOptions {
        known_hosts,
        host_key_policy: policy,
        connect_timeout: Duration::from_secs(5),
        command_timeout: None,
    }
}

fn key(path: &std::path::Path) -> SshAuth {
    SshAuth::Key(Arc::new(russh_key(path)))
}

fn russh_key(path: &std::path::Path) -> outpost_runner::ssh::PrivateKey {
    outpost_runner::ssh::load_key(path, None).expect("key loads")
}

async fn run(
    session: &ssh::Session,
    cmd: &str,
    cancel: &CancellationToken,
) -> (Result<Exit, SshError>, Vec<LogEntry>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    });
    let exit = session.run(cmd, None, &tx, cancel, None).await;
    drop(tx);
    (exit, collect.await.unwrap())
}

#[tokio::test]
async fn ed25519_and_rsa_keys_run_commands_with_output_and_exit_codes() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let rsa = keygen(keys.path(), "id_rsa", "rsa");
    let sshd = Sshd::start(&[&ed, &rsa]);
    for k in [&ed, &rsa] {
        let session = ssh::connect(
            &target(&sshd),
            &key(k),
            &options(sshd.known_hosts(), HostKeyPolicy::Strict),
        )
        .await
        .unwrap();
        let (exit, lines) = run(
            &session,
            "echo out; echo err >&2; exit 5",
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(exit.unwrap(), Exit::Code(5));
        let texts: Vec<(String, String)> = lines
            .iter()
            .map(|l| (format!("{:?}", l.stream), l.log.clone()))
            .collect();
        assert!(
            texts.contains(&("Stdout".into(), "out".into())),
            "{texts:?}"
        );
        assert!(
            texts.contains(&("Stderr".into(), "err".into())),
            "{texts:?}"
        );
        assert_eq!(
            texts.len(),
            2,
            "the wrapper's own report is not output: {texts:?}"
        );
        session.close().await;
    }
}

#[tokio::test]
async fn host_keys_are_checked_strictly_by_default() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let sshd = Sshd::start(&[&ed]);

    // A known_hosts entry with another key for the same host:port.
    let other = keygen(keys.path(), "other_host", "ed25519");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let wrong = keys.path().join("wrong_known_hosts");
    let other_key: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    std::fs::write(
        &wrong,
        format!("[127.0.0.1]:{} {}\n", sshd.port, other_key.join(" ")),
    )
    .unwrap();
    let err = ssh::connect(
        &target(&sshd),
        &key(&ed),
        &options(wrong.clone(), HostKeyPolicy::AcceptNew),
    )
    .await
    .err()
    .expect("a changed host key is refused, even with accept-new");
    assert!(
        matches!(err, SshError::HostKeyMismatch { line: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().starts_with("host key mismatch"), "{err}");

    // A recorded key of another type is a change too, not a new host: a man
    // in the middle offering RSA must not be learnt under accept-new.
    let rsa = keygen(keys.path(), "other_rsa_host", "rsa");
    let rsa_pub = std::fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let rsa_key: Vec<&str> = rsa_pub.split_whitespace().take(2).collect();
    let other_type = keys.path().join("other_type_known_hosts");
    std::fs::write(
        &other_type,
        format!("[127.0.0.1]:{} {}\n", sshd.port, rsa_key.join(" ")),
    )
    .unwrap();
    let err = ssh::connect(
        &target(&sshd),
        &key(&ed),
        &options(other_type.clone(), HostKeyPolicy::AcceptNew),
    )
    .await
    .err()
    .expect("a host known by another key type is refused");
    assert!(matches!(err, SshError::HostKeyMismatch { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(&other_type)
            .unwrap()
            .lines()
            .count(),
        1,
        "nothing was learnt"
    );

    let empty = keys.path().join("empty_known_hosts");
    let err = ssh::connect(
        &target(&sshd),
        &key(&ed),
        &options(empty.clone(), HostKeyPolicy::Strict),
    )
    .await
    .err()
    .expect("an unknown host is refused under strict");
    assert!(matches!(err, SshError::HostKeyUnknown { .. }), "{err}");

    // accept-new learns it, and the learnt key then passes strict.
    let s = ssh::connect(
        &target(&sshd),
        &key(&ed),
        &options(empty.clone(), HostKeyPolicy::AcceptNew),
    )
    .await
    .unwrap();
    s.close().await;
    let s = ssh::connect(
        &target(&sshd),
        &key(&ed),
        &options(empty, HostKeyPolicy::Strict),
    )
    .await
    .unwrap();
    s.close().await;
}

#[tokio::test]
async fn failures_name_their_cause_in_one_line() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let stranger = keygen(keys.path(), "stranger", "ed25519");
    let sshd = Sshd::start(&[&ed]);
    let err = ssh::connect(
        &target(&sshd),
        &key(&stranger),
        &options(sshd.known_hosts(), HostKeyPolicy::Strict),
    )
    .await
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            SshError::AuthRefused {
                method: "publickey",
                ..
            }
        ),
        "{err}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut t = target(&sshd);
    t.port = closed;
    let err = ssh::connect(
        &t,
        &key(&ed),
        &options(sshd.known_hosts(), HostKeyPolicy::Strict),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, SshError::Unreachable(_)), "{err}");
    assert_eq!(err.to_string().lines().count(), 1);
}

#[tokio::test]
async fn abort_leaves_no_process_behind_on_the_node() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let sshd = Sshd::start(&[&ed]);
    let session = Arc::new(
        ssh::connect(
            &target(&sshd),
            &key(&ed),
            &options(sshd.known_hosts(), HostKeyPolicy::Strict),
        )
        .await
        .unwrap(),
    );
    // A unique duration, so that we find exactly this test's process.
    let marker = format!("1000.{}", std::process::id());
    let cmd = format!("echo started; sleep {marker}; echo never");
    let cancel = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let s = session.clone();
    let c = cancel.clone();
    let task = tokio::spawn(async move { s.run(&cmd, None, &tx, &c, None).await });
    assert_eq!(rx.recv().await.unwrap().log, "started");
    // `started` is printed just before the sleep is spawned.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !remote_has(&marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep never started on the node"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let aborted_at = std::time::Instant::now();
    cancel.cancel();
    assert_eq!(task.await.unwrap().unwrap(), Exit::Killed);
    assert!(
        aborted_at.elapsed() < Duration::from_secs(2),
        "abort took {:?}",
        aborted_at.elapsed()
    );
    // The node is this machine: look for the process there.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while remote_has(&marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "`sleep {marker}` survived the abort"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a live (non-zombie) process runs `sleep <marker>`.
fn remote_has(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        cmdline.trim() == format!("sleep {marker}") && !zombie
    })
}

#[tokio::test]
async fn password_logins_work_and_a_wrong_password_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let sshd = Sshd::start(&[&ed]);
    let user = outpost_tests::sshd::TestUser::create();
    let mut t = target(&sshd);
    t.username = user.name.clone();
    let opts = options(sshd.known_hosts(), HostKeyPolicy::Strict);
    let session = ssh::connect(&t, &SshAuth::Password(user.password.clone()), &opts)
        .await
        .unwrap();
    let (exit, lines) = run(&session, "id -un", &CancellationToken::new()).await;
    assert_eq!(exit.unwrap(), Exit::Code(0));
    let out: Vec<&str> = lines.iter().map(|l| l.log.as_str()).collect();
    assert_eq!(out, [user.name.as_str()]);
    session.close().await;

    let err = ssh::connect(&t, &SshAuth::Password("wrong".into()), &opts)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            SshError::AuthRefused {
                method: "password",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn connect_and_command_timeouts_are_enforced() {
    let keys = tempfile::tempdir().unwrap();
    let ed = keygen(keys.path(), "id_ed25519", "ed25519");
    let sshd = Sshd::start(&[&ed]);

    // A server that accepts and never speaks SSH.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let mut t = target(&sshd);
    t.port = silent_port;
    let mut opts = options(sshd.known_hosts(), HostKeyPolicy::Strict);
    opts.connect_timeout = Duration::from_millis(500);
    let err = ssh::connect(&t, &key(&ed), &opts).await.err().unwrap();
    assert!(matches!(err, SshError::ConnectTimeout(_)), "{err}");
    hold.abort();

    let opts = options(sshd.known_hosts(), HostKeyPolicy::Strict);
    let session = ssh::connect(&target(&sshd), &key(&ed), &opts)
        .await
        .unwrap();
    let marker = format!("900.{}", std::process::id());
    let (tx, _rx) = mpsc::channel(16);
    let started = std::time::Instant::now();
    let err = session
        .run(
            &format!("sleep {marker}"),
            None,
            &tx,
            &CancellationToken::new(),
            Some(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert_eq!(err, SshError::CommandTimeout(Duration::from_secs(1)));
    assert!(started.elapsed() < Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while remote_has(&marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out command survived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
