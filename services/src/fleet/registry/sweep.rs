//! The lost-runner sweep: a claimed step whose replica went silent, stopped
//! or dropped it ends `runner-lost`.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use outpost_schemas::rpc::Claim;

use super::{nats_err, parse_claim_key, Registry, RegistryError};

impl Registry {
    /// Sweeps for lost runners every quarter of `lost_after`, until
    /// `shutdown`. Every replica sweeps; the ids of what a sweep publishes
    /// make the work happen once.
    pub(super) async fn sweep_loop(self, shutdown: CancellationToken) {
        let every = (self.inner.lost_after / 4).max(std::time::Duration::from_millis(250));
        // Silence is only evidence once this process has itself been in
        // touch with NATS for a whole deadline: after its own outage (or
        // start), runners get that long to be heard again.
        let mut in_touch_since = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let may_declare = in_touch_since.elapsed() >= self.inner.lost_after;
            if let Err(err) = self.sweep(may_declare).await {
                tracing::warn!(error = %err, "lost-runner sweep failed; trying again");
                in_touch_since = std::time::Instant::now();
            }
        }
    }

    /// Ends, as `runner-lost`, every claimed step whose replica has not
    /// heartbeated for `lost_after` (or said it stopped) while the step is
    /// still the execution's current one; forgets claims of steps that ended.
    pub async fn sweep(&self, may_declare: bool) -> Result<usize, RegistryError> {
        // Each step in flight reads its holder's heartbeat alone: the cost
        // follows the work in flight, not the size of the fleet.
        let mut keys = self.inner.active.raw().keys().await.map_err(nats_err)?;
        let mut ended = 0;
        let now = Utc::now();
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats_err)?;
            let Some(entry) = self.inner.active.entry(&key).await? else {
                continue;
            };
            let claim = Claim::decode(&entry.value);
            let Some((exec, step)) = parse_claim_key(&key) else {
                continue;
            };
            let run = match self.run(exec).await {
                Ok(r) => r,
                Err(err) => {
                    // One unreadable run must not stop the sweep of the others.
                    tracing::warn!(error = %err, execution_id = %exec, "cannot read the run; skipping it this sweep");
                    continue;
                }
            };
            let current = run
                .as_ref()
                .is_some_and(|r| r.finished.is_none() && r.current == step);
            if !current {
                let _ = self.inner.active.raw().delete(&key).await;
                continue;
            }
            let claimed_at = DateTime::<Utc>::from_timestamp(
                entry.created.unix_timestamp(),
                entry.created.nanosecond(),
            )
            .unwrap_or(now);
            let hb = crate::fleet::health::heartbeat_of(
                &self.inner.js,
                &claim.runner_id,
                claim.replica_id,
            )
            .await
            .map_err(nats_err)?;
            let hb = hb.as_ref();
            let seen = hb
                .map(|h| h.header.time.max(claimed_at))
                .unwrap_or(claimed_at);
            let stopped = hb.is_some_and(|h| {
                h.state == outpost_schemas::RunnerState::Stopped && h.header.time > claimed_at
            });
            let silent = (now - seen).to_std().unwrap_or_default();
            // A live holder that no longer lists the step (it gave up
            // reporting it) has lost it too; old runners list nothing.
            let dropped = hb.is_some_and(|h| {
                let lists = !h.steps.is_empty() || h.running_steps == 0;
                lists
                    && !h.steps.contains(&key)
                    && h.header.time > claimed_at + chrono::Duration::seconds(2)
            });
            if !stopped && !dropped && silent <= self.inner.lost_after {
                continue;
            }
            if !may_declare {
                continue;
            }
            let why = if dropped && !stopped && silent <= self.inner.lost_after {
                format!(
                    "runner-lost: replica {} of runner {} no longer runs the step",
                    claim.replica_id, claim.runner_id
                )
            } else if stopped {
                format!(
                    "runner-lost: replica {} of runner {} stopped with the step running",
                    claim.replica_id, claim.runner_id
                )
            } else {
                format!(
                    "runner-lost: replica {} of runner {} has not been heard from for {}s (limit {}s)",
                    claim.replica_id,
                    claim.runner_id,
                    silent.as_secs(),
                    self.inner.lost_after.as_secs()
                )
            };
            tracing::warn!(execution_id = %exec, step, runner_id = %claim.runner_id, reason = %why, "runner lost");
            let nonce = run.map(|r| r.nonce).unwrap_or_default();
            self.publish_lost(exec, step, nonce, &claim.runner_id, &why)
                .await?;
            let _ = self.inner.active.raw().delete(&key).await;
            ended += 1;
        }
        Ok(ended)
    }
}
