//! What the control plane and the operator tell a running runner: abort
//! notices, drain and ping, and a rotated credentials file.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::subjects;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{self};

use super::{CancelReason, Shared, RPC_TIMEOUT};

/// The messages on `subject` until `stop`; `None` (logged) if the
/// subscription fails.
pub(super) async fn notices(
    client: &async_nats::Client,
    subject: String,
    what: &str,
    stop: &CancellationToken,
) -> Option<std::pin::Pin<Box<impl futures::Stream<Item = async_nats::Message>>>> {
    match client.subscribe(subject).await {
        Ok(sub) => Some(Box::pin(sub.take_until(stop.clone().cancelled_owned()))),
        Err(err) => {
            tracing::error!(error = %err, what, "cannot subscribe");
            None
        }
    }
}

pub(super) async fn abort_listener(
    shared: Arc<Shared>,
    client: async_nats::Client,
    stop: CancellationToken,
) {
    let prefix = subjects::runner_abort_prefix(&shared.opts.runner_id);
    let Some(mut notices) = notices(&client, format!("{prefix}.*"), "abort notices", &stop).await
    else {
        return;
    };
    while let Some(msg) = notices.next().await {
        // Only the orchestrator's notice: other publishers' replies (a
        // JetStream ack sent to a forged reply subject) are not aborts.
        if msg.payload.as_ref() != outpost_schemas::rpc::ABORT_NOTICE {
            continue;
        }
        let Some(id) = msg
            .subject
            .rsplit('.')
            .next()
            .and_then(|s| Uuid::parse_str(s).ok())
        else {
            continue;
        };
        for r in shared.running.lock().unwrap().values() {
            if r.execution_id == id {
                *r.reason.lock().unwrap() = Some(CancelReason::Abort);
                r.cancel.cancel();
                tracing::info!(execution_id = %id, runner_id = %shared.opts.runner_id, "aborting step");
            }
        }
    }
}

/// Picks up rotated credentials. When the credentials file changes, the
/// client reconnects (reading the file again) and the runner tells the
/// control plane which key it now runs on, which then revokes the keys that
/// one replaced. Told once at start too: the file may have been replaced
/// while the runner was down.
pub(super) async fn watch_creds(shared: Arc<Shared>, stop: CancellationToken) {
    let Some(path) = shared.opts.nats.creds_file.clone() else {
        return;
    };
    if shared.opts.local {
        // The embedded runner uses the control plane's own credentials.
        return;
    }
    let key_of = |p: &std::path::Path| bus::load_creds(p).ok().map(|(_, kp)| kp.public_key());
    let mut current = key_of(&path);
    let mut told = false;
    let subject = subjects::rpc(&shared.opts.runner_id, subjects::rpc::ROTATED);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = key_of(&path);
        if now.is_some() && now != current {
            tracing::info!(runner_id = %shared.opts.runner_id, "credentials file changed; reconnecting with the new credentials");
            current = now;
            told = false;
            // The lanes are bound once, at start.
            let reaches = bus::load_creds(&path)
                .is_ok_and(|(jwt, _)| crate::plugins::credential_reaches_lanes(&jwt));
            if reaches
                && shared.plugins.plugins.is_empty()
                && !crate::plugins::Usable::new(shared.opts.allowed_plugins.as_ref())
                    .plugins
                    .is_empty()
            {
                tracing::warn!(runner_id = %shared.opts.runner_id, "the new credential may fetch plugin steps; restart the runner to offer its plugins");
            }
            if let Err(err) = shared.client.force_reconnect().await {
                tracing::warn!(error = %err, "cannot reconnect");
            }
            continue;
        }
        if told {
            continue;
        }
        let Some(key) = current.clone() else { continue };
        let request = outpost_schemas::rpc::RotatedRequest { public_key: key };
        match bus::request_json::<_, outpost_schemas::rpc::RpcResult>(
            &shared.client,
            &subject,
            &request,
            RPC_TIMEOUT,
        )
        .await
        {
            Ok(_) => told = true,
            Err(err) => tracing::debug!(error = %err, "cannot report the credential in use yet"),
        }
    }
}

/// Answers pings, and drains on a drain notice: no new steps, running ones
/// finish, then the runner stops (and shows `down`).
pub(super) async fn control_listener(
    shared: Arc<Shared>,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    let id = &shared.opts.runner_id;
    let Some(mut notices) = notices(
        &shared.client,
        subjects::runner_control(id, "*"),
        "control notices",
        &stop,
    )
    .await
    else {
        return;
    };
    while let Some(msg) = notices.next().await {
        match msg.subject.rsplit('.').next() {
            Some(outpost_schemas::rpc::CONTROL_PING) => {
                let Ok(ping) = serde_json::from_slice::<outpost_schemas::rpc::Ping>(&msg.payload)
                else {
                    continue;
                };
                let pong = outpost_schemas::rpc::Pong {
                    nonce: ping.nonce,
                    replica_id: shared.replica_id,
                };
                let _ = shared
                    .client
                    .publish(
                        subjects::rpc(id, "pong"),
                        serde_json::to_vec(&pong).expect("pong").into(),
                    )
                    .await;
            }
            Some(outpost_schemas::rpc::CONTROL_DRAIN)
                if msg.payload.as_ref() == outpost_schemas::rpc::DRAIN_NOTICE
                    && !shared.opts.local =>
            {
                tracing::info!(runner_id = %id, "drain requested: taking no new steps");
                // Unlike SIGTERM, a drain waits for running steps however
                // long they take.
                shared
                    .draining
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                drain.cancel();
            }
            _ => {}
        }
    }
}
