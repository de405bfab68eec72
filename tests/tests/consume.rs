//! The control plane's consumer loop (`outpost_services::engine::consume`) on a
//! real JetStream: a handler that panics costs only its message, and a
//! lane that is stuck holds up no other lane.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use outpost_schemas::subjects;
use outpost_tests::*;
use tokio_util::sync::CancellationToken;

async fn consumer(
    js: &jetstream::Context,
    name: &str,
) -> jetstream::consumer::Consumer<pull::Config> {
    outpost_services::store::topology::ensure(js).await.unwrap();
    js.create_consumer_on_stream(
        pull::Config {
            durable_name: Some(name.into()),
            filter_subject: "outpost.ev.test.>".into(),
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        },
        subjects::EVENTS_STREAM,
    )
    .await
    .unwrap()
}

async fn publish(js: &jetstream::Context, key: &str, body: &str) {
    js.publish(
        format!("outpost.ev.test.{key}._cp"),
        body.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_loses_only_its_message_which_is_dead_lettered() {
    let nats = NatsServer::start();
    let (_client, js) = nats.connect().await;
    let consumer = consumer(&js, "panics").await;
    let handled = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(outpost_services::engine::consume(
        consumer,
        shutdown.clone(),
        4,
        |s| s,
        {
            let handled = handled.clone();
            move |msg: jetstream::Message| {
                let handled = handled.clone();
                async move {
                    if msg.payload.as_ref() == b"boom" {
                        panic!("the handler met a message it cannot take");
                    }
                    handled.fetch_add(1, Ordering::SeqCst);
                    msg.ack().await.unwrap();
                }
            }
        },
    ));
    // Everything shares one key, so one lane: work behind the panic is
    // handled by the same lane after it.
    publish(&js, "a", "before").await;
    publish(&js, "a", "boom").await;
    for _ in 0..5 {
        publish(&js, "a", "after").await;
    }
    let dlq = js.get_stream(subjects::DEADLETTER_STREAM).await.unwrap();
    let subject = subjects::dead_letter(subjects::CONTROL_PLANE_SOURCE, "panics");
    let dead = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(m) = dlq.direct_get_last_for_subject(&subject).await {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the panicking message was not dead-lettered");
    assert_eq!(dead.payload.as_ref(), b"boom");
    let error = dead
        .headers
        .get(subjects::DLQ_ERROR_HEADER)
        .unwrap()
        .to_string();
    assert!(error.contains("panicked 3 times"), "{error}");
    wait_for("every good message handled", || {
        handled.load(Ordering::SeqCst) == 6
    })
    .await;
    // The loop is still alive.
    publish(&js, "b", "later").await;
    wait_for("a message after the panics handled", || {
        handled.load(Ordering::SeqCst) == 7
    })
    .await;
    stop(shutdown, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_lane_does_not_stop_the_others() {
    let nats = NatsServer::start();
    let (_client, js) = nats.connect().await;
    let consumer = consumer(&js, "stuck").await;
    let release = CancellationToken::new();
    let others = Arc::new(AtomicUsize::new(0));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(outpost_services::engine::consume(
        consumer,
        shutdown.clone(),
        8,
        |s| s.split('.').nth(3).unwrap_or(s),
        {
            let (release, others) = (release.clone(), others.clone());
            move |msg: jetstream::Message| {
                let (release, others) = (release.clone(), others.clone());
                async move {
                    if msg.subject.contains(".stuck.") {
                        release.cancelled().await;
                    } else {
                        others.fetch_add(1, Ordering::SeqCst);
                    }
                    msg.ack().await.unwrap();
                }
            }
        },
    ));
    // More than a lane holds, all for the stuck key, then other keys.
    for i in 0..200 {
        publish(&js, "stuck", &i.to_string()).await;
    }
    for i in 0..50 {
        publish(&js, &format!("k{i}"), "x").await;
    }
    // Keys that share the stuck key's lane wait behind it, by design.
    let stuck_lane = outpost_services::engine::lane_of("stuck", 8);
    let free = (0..50)
        .filter(|i| outpost_services::engine::lane_of(&format!("k{i}"), 8) != stuck_lane)
        .count();
    assert!(free > 0);
    wait_for(
        "the other lanes' keys handled while one lane is stuck",
        || others.load(Ordering::SeqCst) == free,
    )
    .await;
    release.cancel();
    wait_for("the rest handled once the lane moves", || {
        others.load(Ordering::SeqCst) == 50
    })
    .await;
    stop(shutdown, task).await;
}

/// Stops the loop and waits for it: it must end, lanes drained, promptly.
async fn stop(shutdown: CancellationToken, task: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the consumer loop did not stop")
        .unwrap();
}
