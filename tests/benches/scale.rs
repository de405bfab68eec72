//! `cargo bench -p outpost-tests --bench scale`: the control plane under a
//! large fleet, each figure printed beside its one-runner baseline measured
//! in the same run, on the same servers.
//!
//! 1. 1,000 runner connections: the control plane's CPU and RSS over 10 s of
//!    idle, pickup p50/p99 of a one-step job for tag `fleet` (200 samples,
//!    run request -> StepStarted, as `pickup.rs` measures it), and the error
//!    lines in the control plane's log (acceptance: none).
//! 2. 10,000 one-step executions queued for a tag no runner serves yet, then
//!    drained by 100 runners started together: the rate from their start,
//!    beside one runner's rate for 1,000, and a check that each step ran
//!    exactly once (every step appends its execution id to one file).
//!
//! It needs the release `outpost` binary beside it: run
//! `cargo build --release --bin outpost` first (`cargo bench` does not build
//! other packages' binaries).
//!
//! **Why the runners run inside this process.** One `outpost-runner` process
//! per runner would cost 1,000 processes' memory. Each runner here is instead
//! the runner library the binary wraps (`outpost_runner::Runner`), with its
//! own NATS connection over WebSocket, its own id, tags, replica id, inbox
//! prefix and outbox, heartbeating and re-asking its tag sets at the
//! library's default cadence. Nothing of that reaches the control plane
//! differently: it sees 1,000 client connections, 1,000 heartbeat subjects
//! and 1,000 runners' RPCs either way. Only the runner side shares a process
//! (one tokio runtime, the same cores). That is also why the control plane
//! runs as its own `outpost serve` process rather than in-process as
//! `Stack::start` does: its CPU and memory are read from /proc for its pid
//! alone, without the runners'.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use outpost_runner::RunnerOptions;
use outpost_schemas::job::TagSet;
use outpost_schemas::state::{ExecutionState, ExecutionStatus};
use outpost_schemas::subjects;
use outpost_tests::bench::report;
use outpost_tests::*;
use serde_json::Value;
use uuid::Uuid;

#[path = "scale/control_plane.rs"]
mod control_plane;
use control_plane::{stack_over, ControlPlaneProcess};

const FLEET: usize = 1000;
const GROUPS: usize = 10;
const PICKUP_SAMPLES: usize = 200;
const WARM_UP_RUNS: usize = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(10);
const SOLO_RUNS: usize = 1000;
const DRAIN_RUNNERS: usize = 100;
const DRAIN_RUNS: usize = 10_000;
const SUBMITTERS: usize = 16;
/// 1,000 runners connecting at once take far longer than the harness's
/// 60 s [`WAIT`] allows for one event.
const FLEET_LIVE_WITHIN: Duration = Duration::from_secs(180);

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    raise_fd_limit();
    let scratch = tempfile::tempdir().unwrap();
    let runner_log = scratch.path().join("runners.log");
    runner_side_logging(&runner_log);

    let nats = NatsServer::start();
    let cp = ControlPlaneProcess::start(&nats).await;
    let stack = stack_over(nats, &cp).await;
    let heartbeat = default_heartbeat(&stack.nats);
    let mut failures: Vec<String> = Vec::new();

    let pickup_job = stack
        .load(&job_yaml("fleet-pickup", "fleet", "'true'"), "fleet-pickup")
        .await;

    // Baseline first: the same measurements with one runner.
    eprintln!("baseline: 1 runner");
    let mut one = Fleet::start(
        &stack.nats,
        vec!["scale-one".into()],
        |_| tags(&["fleet", "g0"]),
        heartbeat,
    );
    one.wait_live(&stack, &cp, FLEET_LIVE_WITHIN).await;
    warm_up(&stack, pickup_job).await;
    // The warm-up's work and log lines are over before the window opens.
    tokio::time::sleep(heartbeat * 2).await;
    let idle_one = cp.idle_usage(IDLE_WINDOW).await;
    let pickup_one = pickup(&stack, pickup_job, PICKUP_SAMPLES).await;
    // Not left serving `fleet`: the next figures are for exactly 1,000.
    one.stop().await;

    eprintln!("starting {FLEET} runners");
    let ids: Vec<String> = (0..FLEET).map(|i| format!("scale-{i:04}")).collect();
    let mut fleet = Fleet::start(
        &stack.nats,
        ids,
        |i| tags(&["fleet", &format!("g{}", i % GROUPS)]),
        heartbeat,
    );
    let live_after = fleet.wait_live(&stack, &cp, FLEET_LIVE_WITHIN).await;
    eprintln!(
        "{FLEET} runners live after {:.1} s",
        live_after.as_secs_f64()
    );
    warm_up(&stack, pickup_job).await;
    tokio::time::sleep(heartbeat * 2).await;
    let idle_fleet = cp.idle_usage(IDLE_WINDOW).await;
    let pickup_fleet = pickup(&stack, pickup_job, PICKUP_SAMPLES).await;
    // Read while the 1,000 are still connected: this is their figure.
    let cp_errors = cp.error_lines();

    println!();
    println!(
        "{FLEET} runner connections (control plane: `outpost serve`, pid {}; runners in this process)",
        cp.pid()
    );
    println!(
        "{:<58} {FLEET} of {FLEET} after {:.1} s",
        "runners live (control plane's GET /runners)",
        live_after.as_secs_f64()
    );
    println!(
        "{:<58} {:>14} {:>14}",
        "",
        "1 runner",
        format!("{FLEET} runners")
    );
    println!(
        "{:<58} {:>14} {:>14}",
        format!("control plane CPU at idle, % of one core ({IDLE_WINDOW:?})"),
        format!("{:.1} %", idle_one.cpu_percent),
        format!("{:.1} %", idle_fleet.cpu_percent)
    );
    println!(
        "{:<58} {:>14} {:>14}",
        "control plane RSS at idle, MiB (max of 1 s samples)",
        format!("{:.1}", idle_one.rss_mib),
        format!("{:.1}", idle_fleet.rss_mib)
    );
    let (one50, one99) = report("pickup: run request -> step started (1 runner)", pickup_one);
    let (fleet50, fleet99) = report(
        &format!("pickup: run request -> step started ({FLEET} runners)"),
        pickup_fleet,
    );
    println!(
        "pickup with {FLEET} runners is {:.1}x the one-runner p50, {:.1}x its p99",
        fleet50.as_secs_f64() / one50.as_secs_f64(),
        fleet99.as_secs_f64() / one99.as_secs_f64()
    );
    println!(
        "{:<58} {} (acceptance: 0)",
        "control plane log: ERROR lines, or WARN about consumers",
        cp_errors.len()
    );
    for l in cp_errors.iter().take(5) {
        println!("    {l}");
    }
    if !cp_errors.is_empty() {
        failures.push(format!(
            "{} error lines in the control plane's log with {FLEET} runners",
            cp_errors.len()
        ));
    }
    let runner_warnings = warn_lines(&runner_log);
    println!(
        "{:<58} {} (runner side, for information)",
        "in-process runners' log: WARN and ERROR lines",
        runner_warnings.len()
    );
    if let Some(first) = runner_warnings.first() {
        println!("    first: {first}");
    }

    eprintln!("stopping {FLEET} runners");
    fleet.stop().await;

    // Baseline first again: the drain's step, on one runner.
    let solo_file = scratch.path().join("solo.ran");
    let solo_job = stack
        .load(
            &job_yaml("solo", "solo", &append_execid(&solo_file)),
            "solo",
        )
        .await;
    let solo_warm = stack
        .load(&job_yaml("solo-warm", "solo", "'true'"), "solo-warm")
        .await;
    let mut solo = Fleet::start(
        &stack.nats,
        vec!["scale-solo".into()],
        |_| tags(&["solo"]),
        heartbeat,
    );
    solo.wait_live(&stack, &cp, FLEET_LIVE_WITHIN).await;
    // Warmed up on another job, so that the file holds the measured runs only.
    warm_up(&stack, solo_warm).await;
    eprintln!("throughput: {SOLO_RUNS} executions on 1 runner");
    let solo_run = throughput(&stack, solo_job, SOLO_RUNS).await;
    solo.stop().await;

    let drain_file = scratch.path().join("drain.ran");
    let drain_job = stack
        .load(
            &job_yaml("drain", "drain", &append_execid(&drain_file)),
            "drain",
        )
        .await;
    let ids: Vec<String> = (0..DRAIN_RUNNERS)
        .map(|i| format!("drain-{i:03}"))
        .collect();
    eprintln!("queueing {DRAIN_RUNS} executions for tag drain, which no runner serves yet");
    let nats = &stack.nats;
    let (drain_run, drainers) = drain(&stack, drain_job, DRAIN_RUNS, "drain", move || {
        Fleet::start(nats, ids, |_| tags(&["drain"]), heartbeat)
    })
    .await;

    println!();
    println!("{DRAIN_RUNS} executions over {DRAIN_RUNNERS} runners");
    solo_run.print("1 runner, tag solo");
    drain_run.print(&format!(
        "{DRAIN_RUNNERS} runners, tag drain: queued first, timed from the runners' start"
    ));
    println!(
        "drain rate with {DRAIN_RUNNERS} runners is {:.1}x the one-runner rate",
        drain_run.rate() / solo_run.rate()
    );
    let drain_name = format!("{DRAIN_RUNNERS} runners");
    for (name, run, file) in [
        ("1 runner", &solo_run, &solo_file),
        (drain_name.as_str(), &drain_run, &drain_file),
    ] {
        let once = ran_once(file, &run.ids);
        println!(
            "{:<58} {} lines, {} distinct, {} not submitted, {} missing: {}",
            format!("exactly once ({name})"),
            once.lines,
            once.distinct,
            once.unknown,
            once.missing,
            if once.ok(run.ids.len()) {
                "ok"
            } else {
                "FAILED"
            }
        );
        if !once.ok(run.ids.len()) {
            failures.push(format!("steps did not run exactly once ({name})"));
        }
        if !run.unfinished.is_empty() {
            failures.push(format!(
                "{} executions sent no ExecutionFinished ({name})",
                run.unfinished.len()
            ));
        }
        let by_status = statuses(&stack, &run.ids).await;
        println!("{:<58} {by_status:?}", format!("statuses ({name})"));
        if by_status.get(&ExecutionStatus::Succeeded) != Some(&run.ids.len()) {
            failures.push(format!(
                "not every execution succeeded ({name}): {by_status:?}"
            ));
        }
    }
    let all_errors = cp.error_lines();
    println!(
        "{:<58} {}",
        "control plane log over the whole run: ERROR lines, or WARN about consumers",
        all_errors.len()
    );
    drainers.stop().await;
    // Before the stack: the control plane would log NATS going away.
    drop(cp);
    assert!(failures.is_empty(), "scale bench failed: {failures:#?}");
}

/// In-process runners started together and stopped together.
struct Fleet {
    ids: Vec<String>,
    guards: Vec<RunnerGuard>,
}

impl Fleet {
    /// `tags(i)` is the i-th runner's tags. Each runner has its own NATS
    /// connection and a temp work dir (the harness's `start_runner_with`);
    /// only the heartbeat is set back to the library's default from the
    /// harness's 1 s, since the idle figures depend on it.
    fn start(
        nats: &NatsServer,
        ids: Vec<String>,
        tags: impl Fn(usize) -> Vec<String>,
        heartbeat: Duration,
    ) -> Self {
        let guards = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let tags = tags(i);
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                start_runner_with(nats, id, &tags, |o| o.heartbeat_every = heartbeat)
            })
            .collect();
        Fleet { ids, guards }
    }

    /// Until the control plane lists every one of them as live; how long
    /// that took. Polled every 2 s: with 1,000 runners `GET /runners` reads
    /// 1,000 heartbeats, itself a load.
    async fn wait_live(
        &mut self,
        stack: &Stack,
        cp: &ControlPlaneProcess,
        within: Duration,
    ) -> Duration {
        let t0 = Instant::now();
        let want: HashSet<&str> = self.ids.iter().map(String::as_str).collect();
        loop {
            let runners: Value = stack.get_json("/runners").await;
            let live = runners
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["live"] == true)
                .filter_map(|r| r["runner_id"].as_str())
                .filter(|id| want.contains(id))
                .collect::<HashSet<_>>()
                .len();
            if live == want.len() {
                return t0.elapsed();
            }
            cp.assert_running();
            if t0.elapsed() > within {
                let mut stopped = Vec::new();
                for g in self.guards.iter_mut() {
                    if let Some(why) = g.exit_reason().await {
                        stopped.push(why);
                    }
                }
                panic!(
                    "{live} of {} runners live after {within:?}; {} runner tasks ended: {:?}",
                    want.len(),
                    stopped.len(),
                    stopped.iter().take(3).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Cancels every runner at once, then waits for all: one at a time, each
    /// would wait out its pending long poll in turn.
    async fn stop(self) {
        futures::future::join_all(self.guards.into_iter().map(|g| g.stop())).await;
    }
}

fn tags(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| t.to_string()).collect()
}

/// The runner library's own heartbeat period (its tag-set refresh follows
/// it): a real fleet beats at this cadence, not the harness's 1 s.
fn default_heartbeat(nats: &NatsServer) -> Duration {
    RunnerOptions::new(
        "probe",
        TagSet::new(["probe"]).unwrap(),
        nats.ws_options("probe"),
    )
    .heartbeat_every
}

fn job_yaml(name: &str, tag: &str, exec: &str) -> String {
    format!(
        "- name: {name}\n  multipleExecutions: true\n  runnerSelector: {{filter: {tag}}}\n  sequence:\n    commands:\n    - exec: {exec}\n"
    )
}

/// The step that proves exactly-once: each run leaves its id in `file`.
fn append_execid(file: &Path) -> String {
    format!("echo ${{job.execid}} >> {}", file.display())
}

/// Connections, the tag set's consumer and the runners' bindings, before
/// anything is timed.
async fn warm_up(stack: &Stack, job: Uuid) {
    for _ in 0..WARM_UP_RUNS {
        let id = stack.run_job(job, &[]).await;
        stack.wait_terminal(id).await;
    }
}

/// Pickup as `pickup.rs` measures it: one execution at a time, from the
/// run request to its StepStarted event; the next once this one finished.
async fn pickup(stack: &Stack, job: Uuid, samples: usize) -> Vec<Duration> {
    let mut started = stack
        .client
        .subscribe("outpost.ev.step_started.>")
        .await
        .unwrap();
    let mut finished = stack
        .client
        .subscribe("outpost.ev.execution_finished.>")
        .await
        .unwrap();
    // The server has the subscriptions before the first event can come.
    stack.client.flush().await.unwrap();
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t0 = Instant::now();
        let id = stack.run_job(job, &[]).await;
        next_event_of(&mut started, id, "step started").await;
        out.push(t0.elapsed());
        next_event_of(&mut finished, id, "execution finished").await;
    }
    out
}

async fn next_event_of(sub: &mut async_nats::Subscriber, id: Uuid, what: &str) {
    while event_execution(&next_message(sub, what).await.subject) != Some(id) {}
}

/// `outpost.ev.<kind>.<execution_id>.<source>` -> the execution id.
fn event_execution(subject: &str) -> Option<Uuid> {
    subject
        .split('.')
        .nth(3)
        .and_then(|id| Uuid::parse_str(id).ok())
}

struct Throughput {
    ids: Vec<Uuid>,
    accepted_after: Duration,
    /// From the first submission to the last ExecutionFinished.
    elapsed: Duration,
    /// Submitted, but no ExecutionFinished seen within [`WAIT`] of the last.
    unfinished: HashSet<Uuid>,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.ids.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, name: &str) {
        println!(
            "throughput ({name}): {} one-step executions in {:.2} s = {:.0}/s (all accepted after {:.2} s)",
            self.ids.len(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.accepted_after.as_secs_f64()
        );
    }
}

/// Submits `runs` executions of `job` from [`SUBMITTERS`] concurrent API
/// requests and waits for every one's ExecutionFinished event.
async fn throughput(stack: &Stack, job: Uuid, runs: usize) -> Throughput {
    let (finished, ids, t0) = submit(stack, job, runs).await;
    let accepted_after = t0.elapsed();
    let unfinished = await_finished(finished, &ids).await;
    Throughput {
        ids,
        accepted_after,
        elapsed: t0.elapsed(),
        unfinished,
    }
}

/// Queues `runs` executions of `job` while no runner serves its tag, waits
/// until every dispatch waits in the tag's consumer, then starts the
/// runners and times the drain from their start to the last
/// ExecutionFinished.
async fn drain(
    stack: &Stack,
    job: Uuid,
    runs: usize,
    token: &str,
    start: impl FnOnce() -> Fleet,
) -> (Throughput, Fleet) {
    let (finished, ids, t0) = submit(stack, job, runs).await;
    let accepted_after = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let queued = match stack
            .js
            .get_consumer_from_stream::<async_nats::jetstream::consumer::pull::Config, _, _>(
                subjects::dispatch_consumer(token),
                subjects::DISPATCH_STREAM,
            )
            .await
        {
            Ok(mut c) => c.info().await.map(|i| i.num_pending).unwrap_or(0),
            Err(_) => 0,
        };
        if queued as usize >= runs {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {queued} of {runs} dispatches queued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{runs} dispatches queued after {:.1} s; starting the runners",
        t0.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let fleet = start();
    let unfinished = await_finished(finished, &ids).await;
    (
        Throughput {
            ids,
            accepted_after,
            elapsed: started.elapsed(),
            unfinished,
        },
        fleet,
    )
}

/// Subscribes to ExecutionFinished (before the first submission: executions
/// finish while others are still being submitted), then submits.
async fn submit(
    stack: &Stack,
    job: Uuid,
    runs: usize,
) -> (async_nats::Subscriber, Vec<Uuid>, Instant) {
    let finished = stack
        .client
        .subscribe("outpost.ev.execution_finished.>")
        .await
        .unwrap();
    stack.client.flush().await.unwrap();
    let t0 = Instant::now();
    let ids: Vec<Uuid> = futures::stream::iter(0..runs)
        .map(|_| stack.run_job(job, &[]))
        .buffer_unordered(SUBMITTERS)
        .collect()
        .await;
    (finished, ids, t0)
}

async fn await_finished(mut finished: async_nats::Subscriber, ids: &[Uuid]) -> HashSet<Uuid> {
    let mut unfinished: HashSet<Uuid> = ids.iter().copied().collect();
    while !unfinished.is_empty() {
        // Core NATS may drop events for a slow subscriber: stop waiting
        // rather than hang, and let the state check tell lost from unseen.
        match tokio::time::timeout(WAIT, finished.next()).await {
            Ok(Some(m)) => {
                if let Some(id) = event_execution(&m.subject) {
                    unfinished.remove(&id);
                }
            }
            _ => break,
        }
    }
    unfinished
}

struct RanOnce {
    lines: usize,
    distinct: usize,
    /// Lines that are not the id of a submitted execution.
    unknown: usize,
    /// Submitted executions whose id is not in the file.
    missing: usize,
}

impl RanOnce {
    fn ok(&self, submitted: usize) -> bool {
        self.lines == submitted
            && self.distinct == submitted
            && self.unknown == 0
            && self.missing == 0
    }
}

/// Each submitted execution's step ran once: its id is in `file` once, and
/// nothing else is.
fn ran_once(file: &Path, submitted: &[Uuid]) -> RanOnce {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let want: HashSet<Uuid> = submitted.iter().copied().collect();
    let lines: Vec<&str> = text.lines().collect();
    let distinct: HashSet<&str> = lines.iter().copied().collect();
    let ran: HashSet<Uuid> = lines
        .iter()
        .filter_map(|l| Uuid::parse_str(l.trim()).ok())
        .filter(|id| want.contains(id))
        .collect();
    let unknown = lines
        .iter()
        .filter(|l| !Uuid::parse_str(l.trim()).is_ok_and(|id| want.contains(&id)))
        .count();
    RanOnce {
        lines: lines.len(),
        distinct: distinct.len(),
        unknown,
        // `ran` holds submitted ids only.
        missing: want.len() - ran.len(),
    }
}

/// How many executions ended in each status, from the projected state in
/// KV; one that is not terminal yet (the projector may trail the
/// orchestrator's event) is awaited with the harness's `wait_terminal`.
async fn statuses(stack: &Stack, ids: &[Uuid]) -> BTreeMap<ExecutionStatus, usize> {
    let kv = stack
        .js
        .get_key_value(subjects::EXECUTIONS_BUCKET)
        .await
        .unwrap();
    let kv = &kv;
    let got: Vec<ExecutionStatus> = futures::stream::iter(ids)
        .map(|id| async move {
            let stored = kv.get(subjects::execution_key(*id)).await.unwrap();
            match stored.and_then(|v| serde_json::from_slice::<ExecutionState>(&v).ok()) {
                Some(st) if st.status.is_terminal() => st.status,
                _ => stack.wait_terminal(*id).await.status,
            }
        })
        .buffer_unordered(SUBMITTERS)
        .collect()
        .await;
    let mut out = BTreeMap::new();
    for s in got {
        *out.entry(s).or_insert(0) += 1;
    }
    out
}

/// The in-process runners' warnings go to a file, not the bench's output
/// (1,000 runners can be loud), and are counted at the end.
fn runner_side_logging(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

fn warn_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// Without colour codes, should a log be written with them anyway:
/// `ESC [ ... letter` would hide " ERROR " from a plain match.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// 1,000 runners hold a few descriptors each (socket, outbox lock, outbox
/// files): past the soft limit of 1,024 many systems default to.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process, with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
