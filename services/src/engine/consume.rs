//! The consumer loop and message preamble the orchestrator and projector
//! share: lanes by execution, bounded failures, dead letters.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::provenance;
use crate::ServiceError;

/// A durable pull consumer on the event stream, created by `topology::ensure`.
pub(crate) async fn event_consumer(
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ServiceError> {
    js.get_consumer_from_stream(name, outpost_schemas::subjects::EVENTS_STREAM)
        .await
        .map_err(|e| ServiceError::Nats(format!("consumer {name}: {e}")))
}

/// Pulls from a durable consumer until `shutdown`, handling messages in
/// `lanes` sequential lanes chosen by `key`: messages with the same key (an
/// execution id) are handled one at a time in stream order, different keys
/// in parallel. The pull is a long poll, so a message is handled as soon as
/// it is stored.
///
/// Each lane is its own task, and a handler that panics costs only the
/// message it held: that message is handed back (and dead-lettered once it
/// has panicked [`MAX_PANICS`] times), and the lane goes on. A lane whose
/// queue is full does not hold up the others: its new messages are handed
/// back to JetStream for a moment, which only reorders events of one
/// execution, as two replicas may anyway.
pub async fn consume<F, Fut>(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    shutdown: CancellationToken,
    lanes: usize,
    key: fn(&str) -> &str,
    handler: F,
) where
    F: Fn(jetstream::Message) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    use futures::FutureExt;
    let consumer_name = consumer.cached_info().name.clone();
    let tasks = tokio_util::task::TaskTracker::new();
    let senders: Vec<_> = (0..lanes)
        .map(|_| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<jetstream::Message>(LANE_DEPTH);
            let handler = handler.clone();
            let consumer_name = consumer_name.clone();
            tasks.spawn(async move {
                while let Some(m) = rx.recv().await {
                    let held = m.clone();
                    if let Err(panic) = std::panic::AssertUnwindSafe(handler(m)).catch_unwind().await {
                        let why = panic_text(&panic);
                        let delivered = held.info().map(|i| i.delivered).unwrap_or(1);
                        tracing::error!(error = %why, subject = %held.subject, delivered, "message handler panicked");
                        if delivered >= MAX_PANICS {
                            outpost_bus::dead_letter(
                                &held.context,
                                outpost_schemas::subjects::CONTROL_PLANE_SOURCE,
                                &consumer_name,
                                &held,
                                &format!("handler panicked {delivered} times: {why}"),
                            )
                            .await;
                        } else {
                            let _ = held.ack_with(AckKind::Nak(Some(retry_delay(delivered)))).await;
                        }
                    }
                }
            });
            tx
        })
        .collect();
    tasks.close();
    while !shutdown.is_cancelled() {
        let messages = consumer
            .stream()
            .max_messages_per_batch(lanes.max(16))
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => Box::pin(m.take_until(shutdown.cancelled())),
            Err(err) => {
                tracing::warn!(error = %err, "cannot pull; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        while let Some(m) = messages.next().await {
            match m {
                Ok(m) => {
                    let lane = lane_of(key(&m.subject), lanes);
                    match senders[lane].try_send(m) {
                        Ok(()) => {}
                        Err(tokio::sync::mpsc::error::TrySendError::Full(m)) => {
                            tracing::debug!(subject = %m.subject, lane, "lane full; handing the message back");
                            let _ = m.ack_with(AckKind::Nak(Some(LANE_FULL_BACKOFF))).await;
                        }
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
                Err(err) => tracing::debug!(error = %err, "pull interrupted"),
            }
        }
    }
    // Dropping the senders lets the lanes finish what they hold.
    drop(senders);
    tasks.wait().await;
}

/// The lane that messages with `key` go to.
pub fn lane_of(key: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// Messages a lane holds before it hands new ones back.
const LANE_DEPTH: usize = 64;
const LANE_FULL_BACKOFF: Duration = Duration::from_millis(250);
/// A message whose handler panicked this many times is dead-lettered.
pub const MAX_PANICS: i64 = 3;
/// A message whose handling failed on a NATS error this many times is
/// dead-lettered: with [`retry_delay`] that is about half an hour of
/// outage, long enough for a restart, short enough to be noticed.
pub const MAX_FAILED_DELIVERIES: i64 = 60;

/// Backoff for a message handed back after a failure: 1 s, doubling, at
/// most 30 s.
pub(crate) fn retry_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(30))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// What an event handler decided about its message.
pub(crate) enum Handled {
    /// Done with it: ack.
    Done,
    /// It depends on an event not handled yet: hand it back for `Duration`.
    NotYet(Duration),
    /// It can never be handled: dead-letter it with this reason.
    Refuse(String),
}

/// The preamble and epilogue the orchestrator and projector share: decode
/// the event (a malformed one is dead-lettered), check where it came from (a
/// forged one is audited and dropped), run `on_event`, then ack, hand back
/// or dead-letter. Corrupt stored data is dead-lettered at once; a NATS
/// error is retried with backoff up to [`MAX_FAILED_DELIVERIES`] times.
pub(crate) async fn handle_event<F, Fut>(
    consumer: &str,
    provenance: &provenance::ProvenanceCheck,
    msg: jetstream::Message,
    on_event: F,
) where
    F: FnOnce(outpost_schemas::Event, i64) -> Fut,
    Fut: Future<Output = Result<Handled, ServiceError>>,
{
    use outpost_schemas::subjects::CONTROL_PLANE_SOURCE;
    let js = provenance.js();
    let dead_letter = |why: String| {
        let msg = &msg;
        async move { outpost_bus::dead_letter(js, CONTROL_PLANE_SOURCE, consumer, msg, &why).await }
    };
    let event: outpost_schemas::Event = match serde_json::from_slice(&msg.payload) {
        Ok(e) => e,
        Err(err) => return dead_letter(format!("malformed event: {err}")).await,
    };
    let execution_id = event.execution_id();
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    let kind = event.kind();
    let outcome = match provenance.check(&msg.subject, &event).await {
        Ok(provenance::Provenance::Genuine) => on_event(event, delivered).await,
        Ok(provenance::Provenance::Forged(why)) => {
            provenance.audit(&msg.subject, &event, &why).await;
            Ok(Handled::Done)
        }
        Err(err) => Err(err),
    };
    match outcome {
        Ok(Handled::Done) => {
            let _ = msg.ack().await;
        }
        Ok(Handled::NotYet(wait)) => {
            let _ = msg.ack_with(AckKind::Nak(Some(wait))).await;
        }
        Ok(Handled::Refuse(why)) => dead_letter(why).await,
        Err(err @ ServiceError::Corrupt(_)) => {
            tracing::error!(error = %err, execution_id = %execution_id, kind, consumer, "stored data is corrupt; dead-lettering the event");
            dead_letter(err.to_string()).await
        }
        Err(err) if delivered >= MAX_FAILED_DELIVERIES => {
            tracing::error!(error = %err, execution_id = %execution_id, kind, consumer, delivered, "handling kept failing; dead-lettering the event");
            dead_letter(format!("failed {delivered} times, last: {err}")).await
        }
        Err(err) => {
            tracing::warn!(error = %err, execution_id = %execution_id, kind, consumer, delivered, "handling failed; will retry");
            let _ = msg
                .ack_with(AckKind::Nak(Some(retry_delay(delivered))))
                .await;
        }
    }
}

/// The execution id token of an event subject, `outpost.ev.<kind>.<exec>.<source>`.
pub(crate) fn event_execution(subject: &str) -> &str {
    subject.split('.').nth(3).unwrap_or(subject)
}
