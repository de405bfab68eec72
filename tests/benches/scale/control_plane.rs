//! `outpost serve` as its own process, so that its CPU and memory are its
//! own, and the harness's `Stack` pointed at it.

use super::*;

/// `outpost serve` (every role, as production runs it) in its own process
/// against the bench's nats-server, its stdout and stderr in a log file.
pub(crate) struct ControlPlaneProcess {
    child: Reaped,
    dir: tempfile::TempDir,
    api: String,
}

impl ControlPlaneProcess {
    pub(crate) async fn start(nats: &NatsServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(workspace_binary("outpost"))
            .args(["serve", "all", "--insecure", "--listen", "127.0.0.1:0"])
            .arg("--nats-url")
            .arg(&nats.client_url)
            .args(["--domain", "hub"])
            .arg("--keys-dir")
            .arg(&nats.keys_dir)
            .arg("--gateway-url")
            .arg(&nats.ws_url)
            // The default is one per host, which a concurrent test run
            // would hold (its outbox is locked).
            .arg("--local-runner-work-dir")
            .arg(dir.path().join("local-runner"))
            // Out of any checkout's `.outpost/outpost.toml`.
            .current_dir(dir.path())
            .env_remove("OUTPOST_CONFIG")
            // serve's own default, pinned: the error count depends on it.
            .env("OUTPOST_LOG", "info,async_nats=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start outpost serve");
        let mut cp = ControlPlaneProcess {
            child: Reaped(child),
            dir,
            api: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // It prints where the API listens once every role has started.
        cp.api = loop {
            let found = cp.log().lines().find_map(|l| {
                l.split_once("outpost: API on ")
                    .map(|(_, url)| url.trim().trim_end_matches('/').to_string())
            });
            if let Some(url) = found {
                break url;
            }
            cp.assert_running();
            assert!(
                Instant::now() < deadline,
                "outpost serve printed no API address:\n{}",
                cp.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        cp
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Failing on a dead control plane at once, rather than at a timeout
    /// that would blame the runners.
    pub(crate) fn assert_running(&self) {
        // An exited child is a zombie until reaped, so its stat remains.
        let state = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
            .and_then(|rest| rest.chars().next());
        assert!(
            !matches!(state, None | Some('Z') | Some('X')),
            "outpost serve exited:\n{}",
            self.log()
        );
    }

    /// CPU (user + system) and RSS over `window`, during which the bench
    /// sends nothing: 10 s covers two default heartbeat periods of every
    /// runner, and their tag-set refreshes.
    pub(crate) async fn idle_usage(&self, window: Duration) -> Usage {
        // SAFETY: sysconf reads a constant of the system.
        let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (cpu0, _) = self.proc_sample();
        let t0 = Instant::now();
        let mut rss_max_kib: u64 = 0;
        while t0.elapsed() < window {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_max_kib = rss_max_kib.max(self.proc_sample().1);
        }
        let (cpu1, _) = self.proc_sample();
        Usage {
            cpu_percent: (cpu1 - cpu0) as f64 / ticks_per_s / t0.elapsed().as_secs_f64() * 100.0,
            rss_mib: rss_max_kib as f64 / 1024.0,
        }
    }

    /// utime + stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat),
    /// and VmRSS in KiB.
    pub(crate) fn proc_sample(&self) -> (u64, u64) {
        self.assert_running();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name (field 2) may hold spaces; count after its ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        (ticks, rss_kib)
    }

    /// Lines of its log at ERROR, or at WARN about consumers: what a fleet
    /// this size would cause if each runner, or each of its requests, cost
    /// the control plane a JetStream consumer ("maximum consumers").
    pub(crate) fn error_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .map(strip_ansi)
            .filter(|l| {
                l.contains(" ERROR ")
                    || (l.contains("WARN") && l.to_lowercase().contains("consumer"))
            })
            .collect()
    }
}

pub(crate) struct Usage {
    pub(crate) cpu_percent: f64,
    pub(crate) rss_mib: f64,
}

/// A [`Stack`] whose API is the `outpost serve` process's. `Stack::start`
/// would run the services in this process, where their CPU and memory could
/// not be told from the runners'; the harness's helpers (`load`, `run_job`,
/// `wait_terminal`, `get_json`) work the same over either.
pub(crate) async fn stack_over(nats: NatsServer, cp: &ControlPlaneProcess) -> Stack {
    let (client, js) = nats.connect().await;
    let admin_token = create_token(&js, "scale-admin", &["admin"]).await;
    Stack {
        nats,
        services: None,
        api: cp.api.clone(),
        http: http_client(Some(&admin_token)),
        admin_token,
        js,
        client,
    }
}
