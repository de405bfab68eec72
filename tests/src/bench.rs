//! What the benchmarks share: percentiles, how a latency figure is
//! printed, and a set of sshd on loopback for the node benchmarks.

use std::time::Duration;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
pub fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<58} n={:<4} p50 {:>9}  p99 {:>9}",
        samples.len(),
        ms(p50),
        ms(p99)
    );
    (p50, p99)
}

/// `servers` OpenSSH sshd on loopback that accept one ed25519 key (the
/// private half at `<dir>/keys/id`, key storage path `keys/id`), with a
/// `known_hosts` file naming them all; killed on drop.
pub struct SshFleet {
    pub servers: Vec<crate::sshd::Sshd>,
    pub key_store: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub known_hosts: std::path::PathBuf,
    /// The user the nodes log in as: this one.
    pub user: String,
}

impl SshFleet {
    pub fn start(dir: &std::path::Path, servers: usize) -> SshFleet {
        let key_store = dir.join("keys");
        std::fs::create_dir_all(&key_store).unwrap();
        let key = crate::sshd::keygen(&key_store, "id", "ed25519");
        let servers: Vec<crate::sshd::Sshd> = (0..servers)
            .map(|_| crate::sshd::Sshd::start(&[&key]))
            .collect();
        let known_hosts = dir.join("known_hosts");
        let lines: String = servers.iter().map(|s| s.known_hosts_line.clone()).collect();
        std::fs::write(&known_hosts, lines).unwrap();
        SshFleet {
            servers,
            key_store,
            key,
            known_hosts,
            user: std::env::var("USER").unwrap_or_else(|_| "root".into()),
        }
    }

    /// The port of node `i`: the nodes spread over the servers in turn.
    pub fn port(&self, i: usize) -> u16 {
        self.servers[i % self.servers.len()].port
    }
}
