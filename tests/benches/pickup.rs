//! `just bench`: pickup latency and throughput of the real stack, each
//! printed beside the raw JetStream figure it is bounded by, measured in the
//! same run on the same server.
//!
//! - pickup: from sending the run request to the StepStarted event of an
//!   idle runner connected over WebSocket;
//! - baseline: publish to a work-queue stream, received by a waiting
//!   long-poll fetch over WebSocket;
//! - throughput: one-step executions per second, end to end.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use outpost_tests::bench::report;
use outpost_tests::*;

const SAMPLES: usize = 300;
const THROUGHPUT_RUNS: usize = 1000;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let stack = Stack::start().await;
    let _runner = start_runner(&stack.nats, "bench", &["bench"]);
    let job = stack
        .load(
            "- name: pickup\n  multipleExecutions: true\n  runnerSelector: {filter: bench}\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "pickup",
        )
        .await;
    let local_job = stack
        .load(
            "- name: local\n  multipleExecutions: true\n  sequence:\n    commands:\n    - exec: 'true'\n",
            "local",
        )
        .await;

    // Warm up: connections, the tag set's consumer, the runner's binding.
    for _ in 0..20 {
        let id = stack.run_job(job, &[]).await;
        stack.wait_terminal(id).await;
    }

    let baseline = raw_jetstream(&stack.nats).await;

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
    let mut pickup = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t0 = Instant::now();
        let id = stack.run_job(job, &[]).await;
        let key = id.simple().to_string();
        loop {
            let m = started.next().await.unwrap();
            if m.subject.contains(&key) {
                break;
            }
        }
        pickup.push(t0.elapsed());
        loop {
            let m = finished.next().await.unwrap();
            if m.subject.contains(&key) {
                break;
            }
        }
    }
    println!();
    let (p50, _) = report("pickup: run request -> step started (ws runner)", pickup);
    let (b50, _) = report(
        "baseline: raw JetStream publish -> long-poll fetch (ws)",
        baseline,
    );
    println!(
        "pickup p50 is {:.1}x the raw JetStream p50 (target: pickup p50 <= 20 ms)",
        p50.as_secs_f64() / b50.as_secs_f64()
    );

    println!();
    for (name, job) in [("ws runner", job), ("local runner", local_job)] {
        let t0 = Instant::now();
        let mut done = 0usize;
        let mut requests = futures::stream::iter(0..THROUGHPUT_RUNS)
            .map(|_| stack.run_job(job, &[]))
            .buffer_unordered(32);
        let mut ids = std::collections::HashSet::new();
        while let Some(id) = requests.next().await {
            ids.insert(id.simple().to_string());
        }
        let accepted = t0.elapsed();
        while done < THROUGHPUT_RUNS {
            let m = finished.next().await.unwrap();
            if ids.iter().any(|k| m.subject.contains(k.as_str())) {
                done += 1;
            }
        }
        let total = t0.elapsed();
        println!(
            "throughput ({name}): {THROUGHPUT_RUNS} one-step executions in {:.2} s = {:.0}/s (all accepted after {:.2} s)",
            total.as_secs_f64(),
            THROUGHPUT_RUNS as f64 / total.as_secs_f64(),
            accepted.as_secs_f64()
        );
    }
}

/// Publish to a work-queue stream while a long-poll fetch waits, over the
/// same WebSocket listener the runner uses.
async fn raw_jetstream(nats: &NatsServer) -> Vec<Duration> {
    let (_pc, publisher) = nats.connect().await;
    let (_fc, fetcher) =
        outpost_bus::connect(&nats.ws_options("bench fetcher"), Duration::from_secs(10))
            .await
            .unwrap();
    publisher
        .create_stream(stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    publisher
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("bench".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
            "BENCH",
        )
        .await
        .unwrap();
    let consumer: jetstream::consumer::PullConsumer = fetcher
        .get_consumer_from_stream("bench", "BENCH")
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let fetch_loop = tokio::spawn(async move {
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let now = Instant::now();
                m.ack().await.unwrap();
                if tx.send(now).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 20 {
        // Let the fetch get back to waiting, as an idle runner's would be.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        publisher
            .publish(format!("bench.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let received = rx.recv().await.unwrap();
        if i >= 20 {
            out.push(received.duration_since(t0));
        }
    }
    fetch_loop.abort();
    out
}
