//! `outpost up` is a supervisor: it restarts the nats-server and the runner
//! it started when they die, one Ctrl-C stops everything, and its children
//! die with it even when it is SIGKILLed. Tested on the real binaries, as a
//! user runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_tests::*;

/// `outpost up` in `dir` (data in `dir/.outpost`, as a user's checkout),
/// killed with its process group's children on drop.
struct Up {
    child: Reaped,
    dir: tempfile::TempDir,
}

impl Up {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("up.log")).unwrap();
        let child = Command::new(workspace_binary("outpost"))
            .args(["up", "--insecure", "--listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(["--nats-port", &free_port().to_string()])
            .args(["--ws-port", &free_port().to_string()])
            .args(["--leaf-port", &free_port().to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let up = Up {
            child: Reaped(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !up.log().contains("Outpost is up") {
            assert!(Instant::now() < deadline, "not up: {}", up.log());
            assert!(up.alive(), "outpost up exited: {}", up.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    fn alive(&self) -> bool {
        alive(self.child.0.id())
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(workspace_binary("outpost"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("OUTPOST_API_URL")
            .env_remove("OUTPOST_TOKEN")
            .output()
            .unwrap()
    }

    /// `outpost run hello --follow`, until it exits 0 or `within` passes.
    fn hello_succeeds_within(&self, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let out = self.cli(&["run", "hello", "--follow"]);
            if out.status.success() {
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(stdout.contains("from the demo runner"), "{stdout}");
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "hello did not succeed within {within:?}: {}\n{}\n--- up ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
    }

    /// The pid of the child named `comm` (as in /proc/PID/comm).
    fn child_named(&self, comm: &str) -> Option<u32> {
        children(self.child.0.id()).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
        })
    }

    fn wait_for_new_child(&self, comm: &str, old: u32) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pid) = self.child_named(comm).filter(|p| *p != old && alive(*p)) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{comm} was not restarted: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.yaml")
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// Running (a zombie or a vanished pid is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid this test found as a child of its own child.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

fn wait_gone(pids: &[u32], within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "{what}: still running: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_restarts_nats_and_the_runner_and_one_ctrl_c_stops_everything() {
    let up = Up::start();
    let load = up.cli(&["job", "load", Up::examples().to_str().unwrap()]);
    assert!(load.status.success(), "{load:?}");
    up.hello_succeeds_within(Duration::from_secs(30));

    // nats-server SIGKILLed: restarted, and hello succeeds again in 15 s.
    let nats = up
        .child_named("nats-server")
        .expect("nats-server is a child");
    kill(nats, libc::SIGKILL);
    let t0 = Instant::now();
    let new_nats = up.wait_for_new_child("nats-server", nats);
    let took = up.hello_succeeds_within(Duration::from_secs(15).saturating_sub(t0.elapsed()));
    println!(
        "hello succeeded {:?} after nats-server was killed",
        t0.elapsed().max(took)
    );
    assert!(
        up.log().contains("nats-server") && up.log().contains("restarting"),
        "{}",
        up.log()
    );

    // The demo runner SIGKILLed: restarted, and hello succeeds.
    let runner = up
        .child_named("outpost-runner")
        .expect("the demo runner is a child");
    kill(runner, libc::SIGKILL);
    let new_runner = up.wait_for_new_child("outpost-runner", runner);
    up.hello_succeeds_within(Duration::from_secs(60));

    // One Ctrl-C (SIGINT to outpost up alone) stops everything, in bounded
    // time, and exits 0.
    kill(up.child.0.id(), libc::SIGINT);
    let pid = up.child.0.id();
    let mut up = up;
    let status = wait_exit(&mut up.child.0, Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {}", up.log());
    wait_gone(
        &[new_nats, new_runner],
        Duration::from_secs(5),
        "after Ctrl-C",
    );
    assert!(!alive(pid));
}

#[test]
fn a_sigkilled_up_leaves_no_orphans() {
    let up = Up::start();
    let nats = up
        .child_named("nats-server")
        .expect("nats-server is a child");
    let runner = up
        .child_named("outpost-runner")
        .expect("the demo runner is a child");
    kill(up.child.0.id(), libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(40);
    while [nats, runner].iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            let logs = |name: &str| {
                std::fs::read_to_string(up.dir.path().join(".outpost").join(name))
                    .unwrap_or_default()
            };
            panic!(
                "after SIGKILL of outpost up, still running: nats-server {} runner {}\n--- up ---\n{}\n--- nats ---\n{}\n--- runner ---\n{}",
                alive(nats),
                alive(runner),
                up.log(),
                logs("nats/nats.log"),
                logs("runner-demo.log")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
