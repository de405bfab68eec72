//! The runner's durable outbox: a step's events and log lines survive a cut
//! link and a runner restart, arriving in order and once.
//!
//! The link is cut with a TCP proxy between the runner process and NATS:
//! for the full 60 s as a blackhole (bytes stop, nothing closes, so the
//! runner must notice by itself), and with resets for the restart. The
//! lost-runner deadline is set above the cut, so the control plane waits
//! for the runner instead of ending its step.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use outpost_runner::outbox::{Outbox, OutboxOptions};
use outpost_schemas::state::{ExecutionStatus, StepStatus};
use outpost_tests::proxy::TcpProxy;
use outpost_tests::*;
use uuid::Uuid;

const CUT: Duration = Duration::from_secs(60);

/// A step that prints `line N` every 50 ms (recording N in `progress`)
/// until `release` exists, then `last N`.
fn numbered_job(name: &str, dir: &Path) -> String {
    let (progress, release) = (dir.join("progress"), dir.join("release"));
    format!(
        "- name: {name}\n  sequence:\n    commands:\n    - exec: 'i=0; while [ ! -e {rel} ]; do i=$((i+1)); echo \"line $i\"; echo $i > {p}.tmp && mv {p}.tmp {p}; sleep 0.05; done; echo \"last $i\"'\n      runnerSelector:\n        filter: edge\n",
        rel = release.display(),
        p = progress.display(),
    )
}

fn progress(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("progress"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The outbox's entry files (whole ones: renamed into place).
fn outbox_files(work: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(work.join("outbox"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "msg"))
                .collect()
        })
        .unwrap_or_default()
}

fn outbox_entries(work: &Path) -> usize {
    outbox_files(work).len()
}

/// Whether the step's finished event is written to the outbox.
fn finished_in_outbox(work: &Path) -> bool {
    outbox_files(work)
        .iter()
        .any(|p| std::fs::read(p).is_ok_and(|b| b.windows(13).any(|w| w == b"step_finished")))
}

/// The step's output is `line 1` … `line N` then `last N`, each once and in
/// order; and the stream holds each chunk once, in sequence. Returns N.
async fn assert_every_line_once_in_order(stack: &Stack, id: Uuid) -> u64 {
    let texts = stack.log_texts(id).await;
    let last: u64 = texts
        .iter()
        .find_map(|t| t.strip_prefix("last "))
        .unwrap_or_else(|| panic!("no `last` line in {} lines", texts.len()))
        .parse()
        .unwrap();
    let numbered: Vec<u64> = texts
        .iter()
        .filter_map(|t| t.strip_prefix("line ").map(|n| n.parse().unwrap()))
        .collect();
    if numbered != (1..=last).collect::<Vec<_>>() {
        let first_bad = numbered
            .iter()
            .zip(1..)
            .position(|(n, want)| *n != want)
            .unwrap_or(numbered.len());
        panic!(
            "lines lost, repeated or out of order: {} numbered lines for last {last}; first wrong at index {first_bad}: {:?}",
            numbered.len(),
            &numbered[first_bad.saturating_sub(2)..(first_bad + 3).min(numbered.len())]
        );
    }
    assert_eq!(
        texts.last().map(String::as_str),
        Some(&*format!("last {last}"))
    );
    let seqs: Vec<u64> = stored_log_chunks(&stack.js, id)
        .await
        .into_iter()
        .map(|(_, c)| c.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "chunks stored twice or out of order"
    );
    last
}

/// A runner process (tag `edge`) connected through a proxy, running the
/// numbered step, whose first output has been stored.
struct BehindProxy {
    proxy: TcpProxy,
    url: String,
    work: PathBuf,
    runner: Reaped,
    heartbeats: async_nats::Subscriber,
    execution: Uuid,
}

async fn numbered_run_behind_proxy(stack: &Stack, runner_id: &str, dir: &Path) -> BehindProxy {
    let proxy = TcpProxy::to_url(&stack.nats.ws_url).await;
    let url = format!("ws://127.0.0.1:{}", proxy.port());
    let work = dir.join("work");
    let mut heartbeats = stack
        .client
        .subscribe(format!("outpost.hb.{runner_id}.*"))
        .await
        .unwrap();
    let runner = runner_process_via(&url, runner_id, "edge", &work, &[]);
    next_message(&mut heartbeats, "heartbeat").await;
    let job = stack.load(&numbered_job("numbered", dir), "numbered").await;
    let mut logs = stack.client.subscribe("outpost.log.>").await.unwrap();
    let execution = stack.run_job(job, &[]).await;
    // Output flows: the step runs and the link works.
    next_message(&mut logs, "a log chunk").await;
    BehindProxy {
        proxy,
        url,
        work,
        runner,
        heartbeats,
        execution,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_second_link_cut_mid_step_loses_no_line() {
    let stack = Stack::start_tuned(NatsServer::start(), ServiceRoles::ALL, |o| {
        o.lost_runner_after = CUT * 5
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let BehindProxy {
        proxy,
        work,
        runner: _runner,
        execution: id,
        ..
    } = numbered_run_behind_proxy(&stack, "cutoff", dir.path()).await;

    proxy.blackhole();
    let cut_at = Instant::now();
    let before = progress(dir.path());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (early_lines, early_entries) = (progress(dir.path()), outbox_entries(&work));
    tokio::time::sleep(CUT - Duration::from_secs(20)).await;
    let (lines, entries) = (progress(dir.path()), outbox_entries(&work));
    // The step keeps printing, and its output keeps reaching the disk: at
    // least one entry per 200 ms (LINGER) while nothing is acknowledged.
    assert!(
        lines > early_lines + 300,
        "the step did not keep running while the link was cut: line {early_lines} 5 s into the cut, {lines} 40 s later"
    );
    assert!(
        entries >= early_entries + 100,
        "output did not reach the outbox during the cut: {early_entries} entries 5 s in, {entries} 40 s later"
    );
    std::fs::write(dir.path().join("release"), "").unwrap();
    // It ends while the link is still down: its finished event waits in the
    // outbox, and the control plane still sees it running.
    wait_for("the finished event in the outbox", || {
        finished_in_outbox(&work)
    })
    .await;
    assert!(cut_at.elapsed() < CUT, "the step should end during the cut");
    let pending = outbox_entries(&work);
    let st = stack.execution(id).await;
    assert_eq!(st.status, ExecutionStatus::Running, "{st:?}");
    assert_eq!(st.steps[0].status, StepStatus::Running, "{st:?}");
    tokio::time::sleep_until((cut_at + CUT).into()).await;

    proxy.restore();
    let restored = Instant::now();
    let st = stack.wait_terminal(id).await;
    let caught_up = restored.elapsed();
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:?}");
    let last = assert_every_line_once_in_order(&stack, id).await;
    println!(
        "cut {CUT:?}: the step had printed {before} lines at the cut and {last} at the end; {pending} outbox entries waited; all stored {caught_up:?} after the link came back"
    );
    wait_for("an empty outbox", || outbox_entries(&work) == 0).await;
}

/// With the default lost-runner deadline (30 s): the restarted process
/// takes over the replica id of the one that wrote the outbox, and lists
/// the step in its heartbeats until its reports are out, so the control
/// plane waits for them instead of ending the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_restarted_with_a_pending_outbox_publishes_it_first_and_loses_nothing() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let BehindProxy {
        proxy,
        url,
        work,
        runner: mut first,
        mut heartbeats,
        execution: id,
    } = numbered_run_behind_proxy(&stack, "phoenix", dir.path()).await;

    // Cut, let the step print a while and end, then kill the runner: its
    // lines and finished event exist only in its outbox.
    proxy.reset();
    let at_cut = progress(dir.path());
    // Enough output that publishing it takes longer than the new job's
    // pickup: the order of the two in the stream then shows which went first.
    wait_for("200 lines printed after the cut", || {
        progress(dir.path()) > at_cut + 200
    })
    .await;
    std::fs::write(dir.path().join("release"), "").unwrap();
    wait_for("the finished event in the outbox", || {
        finished_in_outbox(&work)
    })
    .await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let pending = outbox_entries(&work);
    assert!(pending > 1, "{pending}");

    // Work queued meanwhile must come after the old outbox.
    let second_job = stack
        .load(
            "- name: after\n  sequence:\n    commands:\n    - exec: echo after-restart\n      runnerSelector:\n        filter: edge\n",
            "after",
        )
        .await;
    let second = stack.run_job(second_job, &[]).await;
    proxy.restore();
    let _restarted = runner_process_via(&url, "phoenix", "edge", &work, &[]);
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Succeeded, "{st:?}");
    let last = assert_every_line_once_in_order(&stack, id).await;
    let st2 = stack.wait_terminal(second).await;
    assert_eq!(st2.status, ExecutionStatus::Succeeded, "{st2:?}");
    assert_eq!(stack.log_texts(second).await, ["after-restart"]);
    let old_last = stored_log_chunks(&stack.js, id).await.last().unwrap().0;
    let new_first = stored_log_chunks(&stack.js, second).await[0].0;
    assert!(
        old_last < new_first,
        "the restarted runner took new work before publishing its old outbox"
    );
    // One replica throughout: the new process took over the old one's id.
    let mut replicas = std::collections::BTreeSet::new();
    while let Ok(Some(hb)) = tokio::time::timeout(
        Duration::from_millis(10),
        futures::StreamExt::next(&mut heartbeats),
    )
    .await
    {
        replicas.insert(hb.subject.to_string());
    }
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    println!("{pending} outbox entries survived the kill; all {last} lines arrived once, in order");
    wait_for("an empty outbox", || outbox_entries(&work) == 0).await;
}

/// A cut longer than the lost-runner deadline: the control plane cannot
/// tell it from a death, so it ends the step `runner-lost`. When the link
/// returns, the step's output still arrives, and its own late finish
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_longer_than_the_deadline_ends_the_step_lost_and_its_output_still_arrives() {
    let stack = Stack::start_tuned(NatsServer::start(), ServiceRoles::ALL, |o| {
        o.lost_runner_after = Duration::from_secs(3)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let BehindProxy {
        proxy,
        work,
        runner: _runner,
        execution: id,
        ..
    } = numbered_run_behind_proxy(&stack, "faraway", dir.path()).await;

    proxy.reset();
    let st = stack.wait_terminal(id).await;
    assert_eq!(st.status, ExecutionStatus::Failed, "{st:?}");
    let reason = st.steps[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("runner-lost"), "{reason}");
    std::fs::write(dir.path().join("release"), "").unwrap();
    wait_for("the finished event in the outbox", || {
        finished_in_outbox(&work)
    })
    .await;

    proxy.restore();
    wait_for("an empty outbox", || outbox_entries(&work) == 0).await;
    // The runner's own "succeeded" came last and was ignored.
    let after = stack.execution(id).await;
    assert_eq!(after.status, ExecutionStatus::Failed, "{after:?}");
    assert_eq!(after.steps[0].status, StepStatus::Failed, "{after:?}");
    assert_eq!(after.steps[0].reason, st.steps[0].reason);
    let finished: Vec<_> = stack
        .events(id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            outpost_schemas::Event::StepFinished(f) => Some(f.runner_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished.len(),
        2,
        "the sweep's and the runner's: {finished:?}"
    );
    let last = assert_every_line_once_in_order(&stack, id).await;
    println!("runner-lost during the cut; all {last} lines arrived after it");
}

/// A chunk whose ack was lost, resent after the streams' dedup window, is
/// stored twice; the API shows it once, whole or page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_stored_twice_is_shown_once() {
    let stack = Stack::start().await;
    let job = stack
        .load(
            "- name: three\n  sequence:\n    commands:\n    - exec: echo one; sleep 0.3; echo two; sleep 0.3; echo three\n",
            "three",
        )
        .await;
    let id = stack.run_job(job, &[]).await;
    assert_eq!(
        stack.wait_terminal(id).await.status,
        ExecutionStatus::Succeeded
    );
    let chunks = stored_log_chunks(&stack.js, id).await;
    // As a runner resending after the window would: same chunk, new msg id.
    for (_, c) in [&chunks[0], chunks.last().unwrap()] {
        stack
            .js
            .send_publish(
                outpost_schemas::subjects::log(id, c.step, &c.runner_id),
                jetstream::message::PublishMessage::build()
                    .payload(serde_json::to_vec(c).unwrap().into())
                    .message_id(Uuid::now_v7().to_string()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(
        stored_log_chunks(&stack.js, id).await.len(),
        chunks.len() + 2
    );
    assert_eq!(stack.log_texts(id).await, ["one", "two", "three"]);
    // One line per page: the copy of the first chunk opens a page of its own.
    let texts: Vec<String> = stack
        .output_lines_paged(id, 1)
        .await
        .into_iter()
        .map(|e| e.log)
        .collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_holds_writers_until_jetstream_acknowledges_and_stores_once_in_order() {
    let nats = NatsServer::start();
    let (client, js) = nats.connect().await;
    js.create_stream(jetstream::stream::Config {
        name: "OUTBOX_TEST".into(),
        subjects: vec!["t.>".into()],
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let max_bytes = 4096;
    let outbox = Outbox::open(OutboxOptions {
        dir: dir.path().join("outbox"),
        max_bytes,
        sync: true,
    })
    .unwrap();
    let entry = |lane: &str, n: usize| {
        (
            format!("t.{lane}"),
            format!("{lane}-{n}"),
            Bytes::from(format!("{n:>500}")),
        )
    };
    // One entry was stored before, by a process whose ack was lost.
    let (subject, id, payload) = entry("a", 0);
    js.send_publish(
        subject,
        jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(id),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    const N: usize = 20;
    let writer = tokio::spawn({
        let outbox = outbox.clone();
        async move {
            for n in 0..N {
                for lane in ["a", "b"] {
                    let (subject, id, payload) = entry(lane, n);
                    outbox.push(lane, subject, id, payload).await.unwrap();
                }
            }
        }
    });
    // Not started: nothing is acknowledged, so the writer must stop at the bound.
    let mut writer = writer;
    let blocked = tokio::time::timeout(Duration::from_millis(500), &mut writer).await;
    assert!(blocked.is_err(), "a full outbox must hold its writer");
    let held = outbox.backlog();
    assert!(held.bytes <= max_bytes, "{held:?}");

    outbox.start(client, js.clone());
    writer.await.unwrap();
    assert!(outbox.flush(WAIT).await, "{:?}", outbox.backlog());
    let stream = js.get_stream("OUTBOX_TEST").await.unwrap();
    for lane in ["a", "b"] {
        let mut got = Vec::new();
        let mut after = 0;
        while let Ok(m) = stream
            .direct_get_next_for_subject(format!("t.{lane}"), Some(after + 1))
            .await
        {
            after = m.sequence;
            got.push(
                String::from_utf8_lossy(&m.payload)
                    .trim()
                    .parse::<usize>()
                    .unwrap(),
            );
        }
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "lane {lane}");
    }
    let leftover: Vec<_> = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "lock")
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}
