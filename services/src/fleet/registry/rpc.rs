//! The runner RPC responder: `outpost.rpc.<runner_id>.{claim,tagsets,rotated}`,
//! each checked against the runner id in the subject.

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::StreamExt;
use outpost_bus as bus;
use outpost_schemas::job::{TagSet, Target};
use outpost_schemas::rpc::ABORTED_CLAIM;
use outpost_schemas::rpc::{
    Claim, ClaimReply, ClaimRequest, RotatedRequest, RpcResult, TagSetsReply, TagSetsRequest,
};
use outpost_schemas::{subjects, Event, Header, StepGranted};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ServiceError;

use super::{nats_err, CredentialState, Registry, RegistryError};

impl Registry {
    /// Answers runner requests until `shutdown`. Replicas share the load
    /// through a queue group.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let client = &self.inner.client;
        let sub = |op: &'static str| {
            let client = client.clone();
            async move {
                client
                    .queue_subscribe(subjects::rpc_all(op), subjects::rpc::QUEUE.into())
                    .await
                    .map(|s| s.map(move |m| (op, m)))
                    .map_err(|e| ServiceError::Nats(e.to_string()))
            }
        };
        let mut all = futures::stream::select_all([
            sub(subjects::rpc::CLAIM).await?,
            sub(subjects::rpc::TAGSETS).await?,
            sub(subjects::rpc::SECRETS).await?,
            sub(subjects::rpc::ROTATED).await?,
        ]);
        let tasks = tokio_util::task::TaskTracker::new();
        // The server may have started from an include that lacks a
        // revocation made where no include is written (another host's
        // replica); the bucket has them all.
        let this = self.clone();
        tasks.spawn(async move { this.push_revocations_at_start().await });
        let sweeper = tokio::spawn(self.clone().sweep_loop(shutdown.clone()));
        let index = tokio::spawn(self.inner.tag_index.clone().maintain(
            self.inner.client.clone(),
            self.inner.tagsets.clone(),
            shutdown.clone(),
        ));
        loop {
            let next = tokio::select! {
                m = all.next() => m,
                _ = shutdown.cancelled() => break,
            };
            let Some((op, msg)) = next else { break };
            let this = self.clone();
            tasks.spawn(async move { this.answer(op, msg).await });
        }
        tasks.close();
        tasks.wait().await;
        let _ = sweeper.await;
        let _ = index.await;
        Ok(())
    }

    async fn push_revocations_at_start(&self) {
        if self.inner.keys.is_none() {
            return;
        }
        match self.revocations().await {
            Ok(r) if r.is_empty() => {}
            Ok(_) => {
                if let Err(err) = self.push_revocations().await {
                    self.inner
                        .push_pending
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::error!(error = %err, "cannot push the revocations at start; retried with the next rotation");
                }
            }
            Err(err) => tracing::error!(error = %err, "cannot read the revocations at start"),
        }
    }

    pub(super) async fn answer(&self, op: &str, msg: async_nats::Message) {
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let runner = msg
            .subject
            .split('.')
            .nth(2)
            .unwrap_or_default()
            .to_string();
        // Replies go with the control plane's full rights: only ever to the
        // asking runner's own inbox, never to a subject it picked (a bucket's,
        // another runner's abort subject…).
        // In operator mode a runner's request crosses the service import
        // from RUNNERS, and NATS has replaced its reply subject with `_R_.…`;
        // on an open NATS it is the runner's own inbox.
        let inbox = format!("{}.", crate::security::runner_inbox_prefix(&runner));
        if !reply.starts_with(&inbox) && !reply.starts_with("_R_.") {
            tracing::warn!(runner_id = %runner, op, reply = %reply, "refusing a runner request whose reply subject is not the runner's inbox");
            return;
        }
        let body = match op {
            subjects::rpc::CLAIM => match serde_json::from_slice(&msg.payload) {
                Ok(req) => self.claim(&runner, req).await.map(|r| json(&r)),
                Err(e) => Err(RegistryError::Invalid(format!("bad claim request: {e}"))),
            },
            subjects::rpc::TAGSETS => match serde_json::from_slice(&msg.payload) {
                Ok(req) => self.tag_sets(&runner, req).await.map(|r| json(&r)),
                Err(e) => Err(RegistryError::Invalid(format!("bad tagsets request: {e}"))),
            },
            subjects::rpc::SECRETS => match serde_json::from_slice(&msg.payload) {
                Ok(req) => self.secrets_for(&runner, req).await.map(|r| json(&r)),
                Err(e) => Err(RegistryError::Invalid(format!("bad secrets request: {e}"))),
            },
            subjects::rpc::ROTATED => match serde_json::from_slice(&msg.payload) {
                Ok(req) => self
                    .rotated(&runner, req)
                    .await
                    .map(|()| json(&RpcResult { error: None })),
                Err(e) => Err(RegistryError::Invalid(format!("bad rotated request: {e}"))),
            },
            _ => return,
        };
        let body = body.unwrap_or_else(|err| {
            tracing::warn!(error = %err, runner_id = %runner, op, "runner request failed");
            json(&RpcResult {
                error: Some(err.to_string()),
            })
        });
        if let Err(err) = self.inner.client.publish(reply, body).await {
            tracing::warn!(error = %err, runner_id = %runner, op, "cannot reply to runner");
        }
    }

    /// Whoever creates the claim runs the step. A runner may claim only
    /// steps whose target its tags satisfy.
    pub async fn claim(
        &self,
        runner: &str,
        req: ClaimRequest,
    ) -> Result<ClaimReply, RegistryError> {
        let Some(run) = self.run(req.execution_id).await? else {
            return Ok(ClaimReply::Refused {
                reason: format!("unknown execution {}", req.execution_id),
            });
        };
        let Some(step) = run.steps.get((req.step as usize).wrapping_sub(1)) else {
            return Ok(ClaimReply::Refused {
                reason: format!("execution {} has no step {}", req.execution_id, req.step),
            });
        };
        if run.finished.is_some() || run.current != req.step {
            return Ok(ClaimReply::Stale);
        }
        if step.command.is_none() && run.recovering.is_none() {
            return Ok(ClaimReply::Refused {
                reason: format!(
                    "step {} of execution {} is a job reference, which the control plane runs",
                    req.step, req.execution_id
                ),
            });
        }
        let allowed = match &step.target {
            Target::Local => Ok(runner == subjects::LOCAL_RUNNER_ID),
            Target::Tags(set) if runner == subjects::LOCAL_RUNNER_ID => Ok(set.is_empty()),
            Target::Tags(set) => match self.get(runner).await? {
                Some((rec, _)) if rec.revoked.is_some() => {
                    Err(format!("runner {runner} is revoked"))
                }
                Some((rec, _)) => {
                    TagSet::new(&rec.tags).map(|mine| set.satisfied_by(&mine.with_runner(runner)))
                }
                // Not enrolled: only an open NATS (no operator mode) lets such
                // a runner in, and there its tags are its own word.
                None => Ok(true),
            },
        };
        match allowed {
            Ok(true) => {}
            Ok(false) => {
                return Ok(ClaimReply::Refused {
                    reason: format!("runner {runner} does not serve {}", step.target),
                })
            }
            Err(reason) => return Ok(ClaimReply::Refused { reason }),
        }
        let key = subjects::claim_key(req.execution_id, req.step);
        let mine = Claim {
            runner_id: runner.into(),
            replica_id: req.replica_id,
            attempt: req.attempt,
        };
        match self
            .inner
            .claims
            .raw()
            .create(&key, serde_json::to_vec(&mine).expect("claim").into())
            .await
        {
            Ok(_) => {
                // Watched by the lost-runner sweep until the step ends. Both
                // writes at once: they sit on every step's pickup latency.
                let value = serde_json::to_vec(&mine).expect("claim");
                let (active, granted) = tokio::join!(
                    self.inner.active.raw().put(&key, value.into()),
                    self.publish_grant(&req, runner, &run)
                );
                if let Err(err) = active {
                    tracing::warn!(error = %err, execution_id = %req.execution_id, step = req.step, "cannot record the active claim; only redelivery will notice a lost runner");
                }
                granted?;
                return Ok(ClaimReply::Granted);
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(nats_err(e)),
        }
        let owner = self.claim_of(&key).await?;
        match owner {
            Some(c) if c.runner_id == ABORTED_CLAIM => Ok(ClaimReply::Aborted),
            // This very attempt, asking again after a lost reply (or after
            // the grant's publish failed: it is published again, once by its
            // dedup id).
            Some(c) if c == mine => {
                self.publish_grant(&req, runner, &run).await?;
                Ok(ClaimReply::Granted)
            }
            Some(c) => {
                // Claimed before, and delivered again: its holder stopped
                // acknowledging it. A claimed step never starts twice. If the
                // holder still heartbeats, it may just have lost its link
                // for a while: leave the verdict to the lost-runner sweep
                // (and a runner cannot end a live peer's step this way).
                // If the holder is silent, or is the asker itself (it lost
                // track of the step), end it as lost now.
                let asker_is_holder = c.replica_id == req.replica_id && c.runner_id == runner;
                let alive = !asker_is_holder
                    && crate::fleet::health::heartbeat_of(
                        &self.inner.js,
                        &c.runner_id,
                        c.replica_id,
                    )
                    .await
                    .map_err(nats_err)?
                    .is_some_and(|h| {
                        h.state != outpost_schemas::RunnerState::Stopped
                            && (Utc::now() - h.header.time)
                                .to_std()
                                .is_ok_and(|age| age <= self.inner.lost_after)
                    });
                if alive {
                    tracing::info!(execution_id = %req.execution_id, step = req.step, runner_id = runner, owner = %c.runner_id, "step redelivered while its holder still heartbeats; leaving it to the holder");
                    return Ok(ClaimReply::Held);
                }
                let who = if asker_is_holder {
                    "this replica lost track of it".to_string()
                } else {
                    format!(
                        "runner {} (replica {}) claimed it and went silent",
                        c.runner_id, c.replica_id
                    )
                };
                tracing::warn!(execution_id = %req.execution_id, step = req.step, runner_id = runner, owner = %c.runner_id, "step already claimed; ending it as runner-lost");
                self.publish_lost(
                    req.execution_id,
                    req.step,
                    run.nonce,
                    &c.runner_id,
                    &format!("runner-lost: {who}"),
                )
                .await?;
                Ok(ClaimReply::Lost)
            }
            None => Err(nats_err("claim vanished after it existed")),
        }
    }

    pub(super) async fn tag_sets(
        &self,
        runner: &str,
        req: TagSetsRequest,
    ) -> Result<TagSetsReply, RegistryError> {
        let behind =
            || ServiceError::Nats("the tag set index has not caught up yet; ask again".into());
        let wait = std::time::Duration::from_secs(5);
        let index = &self.inner.tag_index;
        if runner == subjects::LOCAL_RUNNER_ID {
            return Ok(TagSetsReply {
                tokens: vec![subjects::LOCAL_TOKEN.into()],
                lanes: index.lanes_for(None, wait).await.ok_or_else(behind)?,
            });
        }
        let mine = match self.tags_of(runner, &req.tags).await? {
            Ok(t) => t,
            Err(_) => return Ok(TagSetsReply::default()),
        };
        let mut tokens = index.satisfied_by(&mine, wait).await.ok_or_else(behind)?;
        tokens.sort();
        let lanes = index
            .lanes_for(Some(&mine), wait)
            .await
            .ok_or_else(behind)?;
        Ok(TagSetsReply { tokens, lanes })
    }

    /// The runner runs on `public_key` now: if that is its newest credential,
    /// the ones it replaced are revoked.
    pub(super) async fn rotated(
        &self,
        runner: &str,
        req: RotatedRequest,
    ) -> Result<(), RegistryError> {
        let mut changed = false;
        let now = Utc::now();
        if self.get(runner).await?.is_none() {
            // Not enrolled (an open NATS): nothing to revoke.
            return Ok(());
        }
        self.modify(runner, |rec| {
            changed = false;
            rec.started = Some(now);
            let newest = rec.credentials.last().map(|c| c.public_key.clone());
            if newest.as_deref() != Some(req.public_key.as_str()) {
                return Ok(());
            }
            for c in &mut rec.credentials {
                if c.state == CredentialState::Superseded {
                    c.state = CredentialState::Revoked;
                    c.revoked = Some(now);
                    changed = true;
                }
            }
            Ok(())
        })
        .await?;
        if changed {
            tracing::info!(
                runner_id = runner,
                "runner picked up its new credentials; revoking the old ones"
            );
        }
        // Also when nothing changed here but an earlier push failed after
        // the bucket was updated: it is retried when the runner asks again.
        if changed {
            self.inner
                .push_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if self
            .inner
            .push_pending
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            self.push_revocations().await?;
        }
        Ok(())
    }

    /// Records in the event stream who holds the claim, before the runner
    /// hears it was granted, so that every event the runner publishes about
    /// the step comes after its grant. Provenance checks read this, not the
    /// claims bucket. A failed publish fails the claim request; the runner
    /// asks again with the same attempt.
    pub(super) async fn publish_grant(
        &self,
        req: &ClaimRequest,
        runner: &str,
        run: &outpost_schemas::run::Run,
    ) -> Result<(), RegistryError> {
        let granted = Event::StepGranted(StepGranted {
            header: Header::now(),
            execution_id: req.execution_id,
            step: req.step,
            runner_id: runner.into(),
            replica_id: req.replica_id,
            // A node run's per-node reports name its later steps too.
            last_step: Some(crate::engine::plan::segment_end(run, req.step)),
        });
        bus::publish_event_as(
            &self.inner.js,
            &granted,
            subjects::CONTROL_PLANE_SOURCE,
            &granted.dedup_id(),
        )
        .await
        .map_err(ServiceError::from)?;
        Ok(())
    }
}

pub(super) fn json<T: Serialize>(v: &T) -> bytes::Bytes {
    serde_json::to_vec(v).expect("reply serialises").into()
}
