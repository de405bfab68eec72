//! A real OpenSSH `sshd` per test, on a loopback port, with its own host key,
//! config and authorized keys in a temp dir; killed and reaped on drop.
//!
//! Logins are as the user running the tests (root in CI), by key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// known_hosts content that trusts this server's host key.
    pub known_hosts_line: String,
}

pub const SSHD: &str = "/usr/sbin/sshd";

/// Generates a key pair with ssh-keygen; returns the private key's path.
pub fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&path);
    if kind == "rsa" {
        cmd.args(["-b", "3072"]);
    }
    let status = cmd.stdout(Stdio::null()).status().expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
    path
}

impl Sshd {
    /// Starts sshd on loopback, authorising the public halves of `client_keys`.
    pub fn start(client_keys: &[&Path]) -> Self {
        Self::start_at(client_keys, None, "127.0.0.1")
    }

    /// Starts sshd inside network namespace `netns`, listening on `addr`:2222.
    /// It is unreachable from here, so readiness is its pid file.
    pub fn start_in_netns(client_keys: &[&Path], netns: &str, addr: &str) -> Self {
        Self::start_at(client_keys, Some(netns), addr)
    }

    fn start_at(client_keys: &[&Path], netns: Option<&str>, addr: &str) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run `just test` (it installs openssh-server), or `apt-get install openssh-server`"
        );
        let dir = tempfile::tempdir().unwrap();
        let host_key = keygen(dir.path(), "host_ed25519", "ed25519");
        let mut authorized = String::new();
        for k in client_keys {
            authorized.push_str(&std::fs::read_to_string(k.with_extension("pub")).unwrap());
        }
        let auth_path = dir.path().join("authorized_keys");
        std::fs::write(&auth_path, authorized).unwrap();
        // sshd refuses to start without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let pub_host = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let mut last_err = String::new();
        for _ in 0..20 {
            let port = if netns.is_some() {
                2222
            } else {
                crate::free_port()
            };
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress {addr}\nHostKey {host}\nAuthorizedKeysFile {auth}\nPidFile {dir}/sshd.pid\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nMaxStartups 200\nMaxSessions 200\nSubsystem sftp /usr/lib/openssh/sftp-server\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
                    host = host_key.display(),
                    auth = auth_path.display(),
                    dir = dir.path().display(),
                ),
            )
            .unwrap();
            let log = dir.path().join("sshd.log");
            let mut cmd = match netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, SSHD]);
                    c
                }
                None => Command::new(SSHD),
            };
            let pid_file = dir.path().join("sshd.pid");
            let mut child = cmd
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start sshd");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    last_err = std::fs::read_to_string(&log).unwrap_or_default();
                    break;
                }
                let ready = match netns {
                    Some(_) => pid_file.exists(),
                    None => std::net::TcpStream::connect((addr, port)).is_ok(),
                };
                if ready {
                    let key = pub_host
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    return Sshd {
                        child: Some(child),
                        dir,
                        port,
                        known_hosts_line: format!("[{addr}]:{port} {key}\n"),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not listen on {port}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("sshd would not start: {last_err}");
    }

    /// Writes a known_hosts file trusting this server; returns its path.
    pub fn known_hosts(&self) -> PathBuf {
        let p = self.dir.path().join("known_hosts");
        std::fs::write(&p, &self.known_hosts_line).unwrap();
        p
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A throwaway local user with a password, for password logins; removed on
/// drop. Needs root, as the tests are run.
pub struct TestUser {
    pub name: String,
    pub password: String,
}

impl TestUser {
    pub fn create() -> Self {
        let name = format!("opt{}", std::process::id());
        let password = format!(
            "pw-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let status = Command::new("useradd")
            .args(["-M", "-d", "/tmp", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd runs (the tests need root)");
        assert!(
            status.success(),
            "useradd {name} failed; the password tests need root"
        );
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        chpasswd
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(chpasswd.wait().unwrap().success(), "chpasswd failed");
        TestUser { name, password }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // -f: its sshd session may still be closing.
        let _ = Command::new("userdel").args(["-f", &self.name]).status();
    }
}
