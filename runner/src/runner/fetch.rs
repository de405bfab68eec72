//! Binding to the dispatch consumers of the tag sets this runner serves,
//! and the long-poll fetch loop of each.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer::pull, AckKind};
use futures::StreamExt;
use outpost_schemas::subjects;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{self};

use super::step::handle_dispatch;
use super::{reconnected, Shared, RPC_TIMEOUT};

/// Asks the control plane which registered tag sets and plugin lanes this
/// runner serves, and starts a fetch loop for each new one it can run: at
/// start, whenever one is registered (`outpost.tagsets.changed`), and at
/// every heartbeat period in case an announcement was missed. The local
/// runner serves `_local` from the start, and asks only for its lanes.
pub(super) async fn bind_tag_sets(
    shared: Arc<Shared>,
    fetchers: TaskTracker,
    steps: TaskTracker,
    stop: CancellationToken,
) {
    let mut changed = match shared.client.subscribe(subjects::TAGSETS_CHANGED).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "cannot follow tag-set announcements; polling instead");
            None
        }
    };
    // (stream, consumer) pairs with a fetch loop.
    let mut bound: HashSet<(String, String)> = HashSet::new();
    let mut bind = |stream: String, token: &str, what: &str| {
        let consumer = subjects::dispatch_consumer(token);
        if bound.insert((stream.clone(), consumer.clone())) {
            tracing::info!(runner_id = %shared.opts.runner_id, tag_set = %token, stream, "serving {what}");
            fetchers.spawn(fetch_loop(
                shared.clone(),
                stream,
                consumer,
                steps.clone(),
                stop.clone(),
            ));
        }
    };
    if shared.opts.local {
        bind(
            subjects::DISPATCH_STREAM.into(),
            subjects::LOCAL_TOKEN,
            "tag set",
        );
    }
    let mut tick = tokio::time::interval(shared.opts.heartbeat_every);
    let subject = subjects::rpc(&shared.opts.runner_id, subjects::rpc::TAGSETS);
    let request = outpost_schemas::rpc::TagSetsRequest {
        tags: shared.opts.tags.tags().to_vec(),
    };
    loop {
        match bus::request_json::<_, outpost_schemas::rpc::TagSetsReply>(
            &shared.client,
            &subject,
            &request,
            RPC_TIMEOUT,
        )
        .await
        {
            Ok(reply) => {
                for token in &reply.tokens {
                    bind(subjects::DISPATCH_STREAM.into(), token, "tag set");
                }
                // A lane with a plugin this runner lacks or does not allow
                // is left alone: its steps are for other runners.
                for lane in &reply.lanes {
                    if shared.plugins.runs_all(lane.plugins.iter()) {
                        bind(
                            subjects::lane_stream(&lane.lane),
                            &lane.token(),
                            "plugin lane",
                        );
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, runner_id = %shared.opts.runner_id, "cannot learn which tag sets to serve; retrying");
            }
        }
        let announced = async {
            match changed.as_mut() {
                Some(sub) => {
                    sub.next().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = announced => {}
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Long-polls one consumer, one message per free slot.
pub(super) async fn fetch_loop(
    shared: Arc<Shared>,
    stream: String,
    consumer_name: String,
    steps: TaskTracker,
    stop: CancellationToken,
) {
    let consumer = loop {
        match shared
            .js
            .get_consumer_from_stream::<pull::Config, _, _>(&consumer_name, &stream)
            .await
        {
            Ok(c) => break c,
            Err(err) => {
                tracing::warn!(error = %err, consumer = consumer_name, "consumer not available yet");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let mut online = shared.outbox.online();
    loop {
        let permit = tokio::select! {
            p = shared.slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = stop.cancelled() => return,
        };
        if stop.is_cancelled() {
            return;
        }
        // A fetch is a long poll: it returns as soon as a message exists, or
        // empty after `fetch_expiry`. Not interrupted by `stop`, so that a
        // message that arrives meanwhile is handed back rather than stranded.
        let batch = consumer
            .fetch()
            .max_messages(1)
            .expires(shared.opts.fetch_expiry)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, consumer = consumer_name, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        // One message at most (max_messages(1)); the batch ends after it, or
        // empty at expiry. A reconnect meanwhile may be to a restarted
        // server that forgot this pull, and would answer it never: fetch
        // again at once. (Should the old server have sent a message in that
        // instant, it is redelivered after `ack_wait`.)
        let next = tokio::select! {
            m = batch.next() => m,
            _ = reconnected(&mut online) => {
                tracing::debug!(consumer = consumer_name, "reconnected; fetching again");
                continue;
            }
        };
        let msg = match next {
            None => continue,
            Some(Ok(m)) => m,
            Some(Err(err)) => {
                // e.g. the consumer was deleted: back off, do not spin.
                tracing::warn!(error = %err, consumer = consumer_name, "fetch failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if stop.is_cancelled() {
            let _ = msg.ack_with(AckKind::Nak(None)).await;
            return;
        }
        steps.spawn(handle_dispatch(shared.clone(), msg, permit));
    }
}
