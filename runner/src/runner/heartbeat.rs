//! Heartbeats: the replica's state, capacity, and the steps it holds.

use std::sync::Arc;

use outpost_schemas::{subjects, Header, RunnerHeartbeat, RunnerState};
use tokio_util::sync::CancellationToken;

use crate::bus::{self, BusError};

use super::Shared;

pub(super) async fn heartbeat_loop(
    shared: Arc<Shared>,
    draining: CancellationToken,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.opts.heartbeat_every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let state = if draining.is_cancelled() {
            RunnerState::Draining
        } else {
            RunnerState::Running
        };
        if let Err(err) = publish_heartbeat(&shared, state).await {
            tracing::warn!(error = %err, runner_id = %shared.opts.runner_id, "heartbeat failed");
        }
    }
}

pub(super) async fn publish_heartbeat(
    shared: &Shared,
    state: RunnerState,
) -> Result<bool, BusError> {
    let (running, steps) = {
        let map = shared.running.lock().unwrap();
        let mut steps: Vec<String> = map
            .keys()
            .map(|(exec, step)| subjects::claim_key(*exec, *step))
            .collect();
        // Steps a previous process of this replica left reports of: still
        // ours until they are out.
        for lane in shared.outbox.recovered_lanes() {
            if !steps.contains(&lane) {
                steps.push(lane);
            }
        }
        (map.values().filter(|r| !r.ended).count() as u32, steps)
    };
    let backlog = shared.outbox.backlog();
    let hb = RunnerHeartbeat {
        header: Header::now(),
        runner_id: shared.opts.runner_id.clone(),
        replica_id: shared.replica_id,
        version: env!("CARGO_PKG_VERSION").into(),
        hostname: shared.hostname.clone(),
        tags: shared.opts.tags.tags().to_vec(),
        local: shared.opts.local,
        running_steps: running,
        capacity: shared.opts.capacity as u32,
        state,
        steps,
        outbox_entries: backlog.entries as u64,
        outbox_bytes: backlog.bytes,
        plugins: shared.plugins.plugins.clone(),
        plugins_not_allowed: shared.plugins.not_allowed.clone(),
    };
    let subject = subjects::heartbeat(&shared.opts.runner_id, shared.replica_id);
    bus::publish_json(&shared.js, &subject, &hb.header.message_id.to_string(), &hb).await
}
