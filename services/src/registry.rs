//! The runner registry: enrolled runner identities (enrol, rotate, revoke),
//! and the control plane's answers to runner requests on
//! `outpost.rpc.<runner_id>.*`: claims, the tag sets a runner serves, and the
//! secure option values of a step it claimed.
//!
//! A runner cannot read any bucket itself (its NATS permissions forbid it),
//! so everything it needs from them comes through here, checked against the
//! runner id in the request's subject.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use base64::Engine;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use outpost_runner::bus;
use outpost_runner::ABORTED_CLAIM;
use outpost_schemas::job::{check_name, TagSet, Target};
use outpost_schemas::rpc::{
    Claim, ClaimReply, ClaimRequest, RotatedRequest, RpcResult, SecretValues, SecretsReply,
    SecretsRequest, TagSetsReply, TagSetsRequest,
};
use outpost_schemas::{subjects, Event, Header, StepFinished, StepGranted, StepOutcome};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bucket::{Bucket, Cas};
use crate::plan::Run;
use crate::security::{KeyStore, SecurityError, MAX_RUNNER_TAGS};
use crate::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("runner `{0}` is not enrolled")]
    NotFound(String),
    #[error("runner `{0}` is already enrolled")]
    Exists(String),
    #[error("runner `{0}` is revoked")]
    Revoked(String),
    #[error("enrolment needs the control plane's keys (start it with a keys dir; `outpost security init` creates one)")]
    NoKeys,
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

fn nats_err(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Service(ServiceError::Nats(e.to_string()))
}

/// What runners are told about the gateway in their bundle, and how the
/// registry reaches NATS to push account updates.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    /// The URL runners connect to (`wss://gateway.example:443`).
    pub url: String,
    pub domain: String,
    /// PEM of the CA that signed the gateway's certificate, if private.
    pub ca_pem: Option<String>,
    /// Where the control plane itself reaches NATS (for account pushes).
    pub nats_url: String,
    pub nats_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Active,
    /// Replaced by a newer credential that the runner has not picked up yet.
    Superseded,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The NATS user public key (`U…`); the seed went to the runner only.
    pub public_key: String,
    pub issued: DateTime<Utc>,
    pub state: CredentialState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

/// An enrolled runner, as stored in `OUTPOST_RUNNERS` (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRecord {
    pub name: String,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
    pub credentials: Vec<Credential>,
    /// When a replica of it last started (it reports its credential then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
}

pub use outpost_schemas::bundle::Bundle;

/// Renders a bundle as the file handed to the operator.
pub fn bundle_text(b: &Bundle) -> String {
    format!(
        "# Outpost runner credentials for `{}`. Keep this file secret (mode 0600):\n\
         # it proves the runner's identity. Run: outpost-runner --creds <this file>\n{}",
        b.runner_id,
        toml::to_string(b).expect("bundle serialises")
    )
}
/// Reads step claims, remembering the ones found: a claim never changes
/// once created.
struct ClaimLookup {
    claims: Bucket,
    known: std::sync::Mutex<std::collections::HashMap<String, Claim>>,
}

impl ClaimLookup {
    async fn open(js: &jetstream::Context) -> Result<Self, ServiceError> {
        Ok(ClaimLookup {
            claims: Bucket::open(js, subjects::CLAIMS_BUCKET).await?,
            known: Default::default(),
        })
    }

    /// The claim under `key` (`<exec>.<step>`), if any; `_aborted` comes
    /// back as a claim by runner `_aborted`.
    async fn get(&self, key: &str) -> Result<Option<Claim>, ServiceError> {
        if let Some(hit) = self.known.lock().unwrap().get(key) {
            return Ok(Some(hit.clone()));
        }
        let Some(value) = self.claims.get_bytes(key).await? else {
            return Ok(None);
        };
        let claim = decode_claim(&value);
        let mut known = self.known.lock().unwrap();
        if known.len() > 50_000 {
            known.clear();
        }
        known.insert(key.to_string(), claim.clone());
        Ok(Some(claim))
    }
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    runners: Bucket,
    claims: Bucket,
    runs: Bucket,
    tagsets: Bucket,
    secrets: Bucket,
    active: Bucket,
    /// A claimed step whose replica has not heartbeated for this long ends
    /// as `runner-lost`.
    lost_after: std::time::Duration,
    keys: Option<Arc<KeyStore>>,
    gateway: Gateway,
    claim_lookup: ClaimLookup,
    /// Filled by `serve`'s watch; read by `tagsets` requests.
    tag_index: crate::tag_index::TagSetIndex,
    /// A revocation is in the bucket but maybe not yet pushed to NATS.
    push_pending: std::sync::atomic::AtomicBool,
}

impl Registry {
    pub async fn new(
        client: async_nats::Client,
        js: jetstream::Context,
        keys: Option<Arc<KeyStore>>,
        gateway: Gateway,
        lost_after: std::time::Duration,
    ) -> Result<Self, ServiceError> {
        Ok(Registry {
            inner: Arc::new(Inner {
                runners: Bucket::open(&js, subjects::RUNNERS_BUCKET).await?,
                claims: Bucket::open(&js, subjects::CLAIMS_BUCKET).await?,
                runs: Bucket::open(&js, subjects::RUNS_BUCKET).await?,
                tagsets: Bucket::open(&js, subjects::TAGSETS_BUCKET).await?,
                secrets: Bucket::open(&js, subjects::SECRETS_BUCKET).await?,
                active: Bucket::open(&js, subjects::ACTIVE_BUCKET).await?,
                claim_lookup: ClaimLookup::open(&js).await?,
                tag_index: Default::default(),
                lost_after,
                client,
                js,
                keys,
                gateway,
                push_pending: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    pub fn keys(&self) -> Option<&Arc<KeyStore>> {
        self.inner.keys.as_ref()
    }

    // ----- identities -----

    pub async fn get(&self, name: &str) -> Result<Option<(RunnerRecord, u64)>, RegistryError> {
        Ok(self.inner.runners.get(name).await?)
    }

    pub async fn list(&self) -> Result<Vec<RunnerRecord>, RegistryError> {
        let mut keys = self.inner.runners.raw().keys().await.map_err(nats_err)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(nats_err)?;
            if let Some((rec, _)) = self.get(&k).await? {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Registers a runner and returns its bundle. The bundle's seed is made
    /// here and returned once; only its public key is stored.
    pub async fn enrol(
        &self,
        name: &str,
        tags: &[String],
        actor: &str,
    ) -> Result<(RunnerRecord, Bundle), RegistryError> {
        check_name("runner name", name, |c| c == '-' || c == '_')
            .map_err(RegistryError::Invalid)?;
        if name.starts_with('_') {
            return Err(RegistryError::Invalid(
                "runner names cannot start with `_` (reserved for the control plane)".into(),
            ));
        }
        let set = TagSet::new(tags).map_err(RegistryError::Invalid)?;
        if set.tags().len() > MAX_RUNNER_TAGS {
            return Err(RegistryError::Invalid(format!(
                "a runner may carry at most {MAX_RUNNER_TAGS} tags (its NATS permissions name every subset of them); got {}",
                set.tags().len()
            )));
        }
        let keys = self.inner.keys.as_ref().ok_or(RegistryError::NoKeys)?;
        let (public_key, creds) = keys.runner_creds(name, &set)?;
        let rec = RunnerRecord {
            name: name.into(),
            tags: set.tags().to_vec(),
            created: Utc::now(),
            created_by: actor.into(),
            revoked: None,
            started: None,
            credentials: vec![Credential {
                public_key,
                issued: Utc::now(),
                state: CredentialState::Active,
                revoked: None,
            }],
        };
        match self
            .inner
            .runners
            .raw()
            .create(name, serde_json::to_vec(&rec).expect("record").into())
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                return Err(RegistryError::Exists(name.into()))
            }
            Err(e) => return Err(nats_err(e)),
        }
        tracing::info!(runner_id = name, tags = ?rec.tags, "runner enrolled");
        let bundle = self.bundle(&rec, creds);
        Ok((rec, bundle))
    }

    fn bundle(&self, rec: &RunnerRecord, creds: String) -> Bundle {
        Bundle {
            runner_id: rec.name.clone(),
            tags: rec.tags.clone(),
            url: self.inner.gateway.url.clone(),
            domain: self.inner.gateway.domain.clone(),
            ca: self.inner.gateway.ca_pem.clone(),
            api_prefix: Some(crate::security::RUNNER_API_PREFIX.to_string()),
            creds,
        }
    }

    /// Issues a new credential. The old one stays valid until the runner
    /// reports (`rotated`) that it runs on the new one, so that no work is
    /// lost in between; `revoke` cuts both.
    pub async fn rotate(&self, name: &str) -> Result<Bundle, RegistryError> {
        let keys = self.inner.keys.clone().ok_or(RegistryError::NoKeys)?;
        let mut creds_out = None;
        let rec = self
            .modify(name, |rec| {
                if rec.revoked.is_some() {
                    return Err(RegistryError::Revoked(name.into()));
                }
                let set = TagSet::new(&rec.tags).map_err(RegistryError::Invalid)?;
                let (public_key, creds) = keys.runner_creds(name, &set)?;
                for c in &mut rec.credentials {
                    if c.state == CredentialState::Active {
                        c.state = CredentialState::Superseded;
                    }
                }
                rec.credentials.push(Credential {
                    public_key,
                    issued: Utc::now(),
                    state: CredentialState::Active,
                    revoked: None,
                });
                creds_out = Some(creds);
                Ok(())
            })
            .await?;
        tracing::info!(runner_id = name, "runner credentials rotated");
        Ok(self.bundle(&rec, creds_out.expect("set by modify")))
    }

    /// Revokes every credential of the runner: NATS cuts its connections at
    /// once and refuses new ones. Steps it had claimed end as `runner-lost`.
    /// Returns how many steps were ended, and whether NATS cut the runner
    /// off (false when NATS is not in operator mode).
    pub async fn revoke(&self, name: &str) -> Result<(usize, bool), RegistryError> {
        let now = Utc::now();
        self.modify(name, |rec| {
            rec.revoked.get_or_insert(now);
            for c in &mut rec.credentials {
                if c.state != CredentialState::Revoked {
                    c.state = CredentialState::Revoked;
                    c.revoked = Some(now);
                }
            }
            Ok(())
        })
        .await?;
        self.inner
            .push_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let cut = self.push_revocations().await?;
        tracing::warn!(runner_id = name, cut, "runner revoked");
        let ended = self
            .end_claims_of(name, &format!("runner-lost: runner {name} was revoked"))
            .await?;
        Ok((ended, cut))
    }

    /// Applies `change` to a record with compare-and-set, retrying on races.
    async fn modify(
        &self,
        name: &str,
        mut change: impl FnMut(&mut RunnerRecord) -> Result<(), RegistryError>,
    ) -> Result<RunnerRecord, RegistryError> {
        self.inner
            .runners
            .modify(name, |rec: Option<RunnerRecord>| {
                let mut rec = rec.ok_or_else(|| RegistryError::NotFound(name.into()))?;
                change(&mut rec)?;
                Ok(Cas::Write(rec.clone(), rec))
            })
            .await
    }

    /// Every revoked credential of every runner (user key → revocation
    /// time), read fresh from the bucket so that concurrent revocations on
    /// different replicas all end up in the pushed account JWT.
    pub async fn revocations(&self) -> Result<BTreeMap<String, i64>, RegistryError> {
        let mut out = BTreeMap::new();
        for rec in self.list().await? {
            for c in rec.credentials {
                if c.state == CredentialState::Revoked {
                    out.insert(c.public_key, c.revoked.unwrap_or(c.issued).timestamp());
                }
            }
        }
        Ok(out)
    }

    /// Pushes the account JWT with the current revocations to NATS, and
    /// rewrites the server's auth include so that a restart keeps them.
    /// Returns false when NATS is not in operator mode, so nothing could be
    /// cut.
    pub async fn push_revocations(&self) -> Result<bool, RegistryError> {
        let keys = self.inner.keys.as_ref().ok_or(RegistryError::NoKeys)?;
        // Push until what was pushed is what the bucket holds: a replica
        // revoking at the same moment may have pushed an older list after
        // ours, and this replica's next read sees its change.
        let mut revocations = self.revocations().await?;
        loop {
            match keys
                .push_account(
                    &self.inner.gateway.nats_url,
                    self.inner.gateway.nats_ca_file.as_deref(),
                    &revocations,
                )
                .await
            {
                Ok(()) => {}
                Err(SecurityError::NotOperatorMode) => {
                    // Development NATS without authentication: there is no
                    // credential to cut. The record still refuses the
                    // runner's claims and tag sets.
                    tracing::warn!("NATS is not in operator mode: revocation recorded, but connections cannot be cut");
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
            let now = self.revocations().await?;
            if now == revocations {
                break;
            }
            revocations = now;
        }
        // Only where this process also wrote the server's include file.
        let conf = keys.dir().join(crate::security::NATS_AUTH_CONF);
        if let Ok(text) = std::fs::read_to_string(&conf) {
            if let Some(dir) = resolver_dir(&text) {
                let fresh = keys.nats_auth_conf(std::path::Path::new(&dir), &revocations)?;
                crate::security::write_private(&conf, fresh.as_bytes())
                    .map_err(|e| RegistryError::Invalid(format!("{}: {e}", conf.display())))?;
            }
        }
        self.inner
            .push_pending
            .store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(true)
    }

    /// Ends, as failed with `reason`, every step that `runner` holds a claim
    /// on and that has not finished. Steps in flight are the active bucket's
    /// keys, far fewer than the claims, which stay as long as the events.
    async fn end_claims_of(&self, runner: &str, reason: &str) -> Result<usize, RegistryError> {
        let mut keys = match self.inner.active.raw().keys().await {
            Ok(k) => k,
            Err(e) => return Err(nats_err(e)),
        };
        let mut ended = 0;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats_err)?;
            let Some(claim) = self.claim_of(&key).await? else {
                continue;
            };
            if claim.runner_id != runner {
                continue;
            }
            let Some((exec, step)) = parse_claim_key(&key) else {
                continue;
            };
            let Some(run) = self.run(exec).await? else {
                continue;
            };
            if run.finished.is_some() || run.current != step {
                continue;
            }
            self.publish_lost(exec, step, run.nonce, runner, reason)
                .await?;
            ended += 1;
        }
        Ok(ended)
    }

    /// Records in the event stream who holds the claim, before the runner
    /// hears it was granted, so that every event the runner publishes about
    /// the step comes after its grant. Provenance checks read this, not the
    /// claims bucket. A failed publish fails the claim request; the runner
    /// asks again with the same attempt.
    async fn publish_grant(&self, req: &ClaimRequest, runner: &str) -> Result<(), RegistryError> {
        let granted = Event::StepGranted(StepGranted {
            header: Header::now(),
            execution_id: req.execution_id,
            step: req.step,
            runner_id: runner.into(),
            replica_id: req.replica_id,
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

    async fn publish_lost(
        &self,
        execution_id: Uuid,
        step: u32,
        nonce: Uuid,
        runner: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let finished = Event::StepFinished(StepFinished {
            header: Header::now(),
            execution_id,
            step,
            runner_id: runner.into(),
            outcome: StepOutcome::Failed,
            exit_code: None,
            reason: Some(reason.into()),
            log_chunks: 0,
        });
        let id = format!("{}.{step}.lost.{}", execution_id.simple(), nonce.simple());
        bus::publish_event_as(
            &self.inner.js,
            &finished,
            subjects::CONTROL_PLANE_SOURCE,
            &id,
        )
        .await
        .map_err(ServiceError::from)?;
        Ok(())
    }

    /// The claim on a step (`<exec>.<step>` key), if any.
    pub async fn claim_of(&self, key: &str) -> Result<Option<Claim>, RegistryError> {
        Ok(self.inner.claim_lookup.get(key).await?)
    }

    async fn run(&self, execution_id: Uuid) -> Result<Option<Run>, RegistryError> {
        let key = subjects::execution_key(execution_id);
        Ok(self.inner.runs.get(&key).await?.map(|(run, _)| run))
    }

    /// Tags the runner may serve: its enrolment's, or (for a runner that is
    /// not enrolled, which only an open NATS lets in) the ones it declares.
    async fn tags_of(
        &self,
        runner: &str,
        declared: &[String],
    ) -> Result<Result<TagSet, String>, RegistryError> {
        match self.get(runner).await? {
            Some((rec, _)) if rec.revoked.is_some() => {
                Ok(Err(format!("runner {runner} is revoked")))
            }
            Some((rec, _)) => Ok(TagSet::new(&rec.tags).map(|t| t.with_runner(runner))),
            None => Ok(TagSet::new(declared).map(|t| t.with_runner(runner))),
        }
    }

    // ----- runner requests -----

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

    /// Sweeps for lost runners every quarter of `lost_after`, until
    /// `shutdown`. Every replica sweeps; the ids of what a sweep publishes
    /// make the work happen once.
    async fn sweep_loop(self, shutdown: CancellationToken) {
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
        let heartbeats: std::collections::HashMap<Uuid, outpost_schemas::RunnerHeartbeat> =
            crate::fleet::heartbeats(&self.inner.js)
                .await
                .map_err(nats_err)?
                .into_iter()
                .map(|h| (h.replica_id, h))
                .collect();
        let mut keys = self.inner.active.raw().keys().await.map_err(nats_err)?;
        let mut ended = 0;
        let now = Utc::now();
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats_err)?;
            let Some(entry) = self.inner.active.entry(&key).await? else {
                continue;
            };
            let claim = decode_claim(&entry.value);
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
            let hb = heartbeats.get(&claim.replica_id);
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

    async fn answer(&self, op: &str, msg: async_nats::Message) {
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
                    self.publish_grant(&req, runner)
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
                self.publish_grant(&req, runner).await?;
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
                    && crate::fleet::heartbeat_of(&self.inner.js, &c.runner_id, c.replica_id)
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

    async fn tag_sets(
        &self,
        runner: &str,
        req: TagSetsRequest,
    ) -> Result<TagSetsReply, RegistryError> {
        if runner == subjects::LOCAL_RUNNER_ID {
            return Ok(TagSetsReply {
                tokens: vec![subjects::LOCAL_TOKEN.into()],
            });
        }
        let mine = match self.tags_of(runner, &req.tags).await? {
            Ok(t) => t,
            Err(_) => return Ok(TagSetsReply { tokens: vec![] }),
        };
        let mut tokens = self
            .inner
            .tag_index
            .satisfied_by(&mine, std::time::Duration::from_secs(5))
            .await
            .ok_or_else(|| {
                ServiceError::Nats("the tag set index has not caught up yet; ask again".into())
            })?;
        tokens.sort();
        Ok(TagSetsReply { tokens })
    }

    /// Secure option values go only to the runner holding the step's claim,
    /// sealed to the one-use key it sent.
    async fn secrets_for(
        &self,
        runner: &str,
        req: SecretsRequest,
    ) -> Result<SecretsReply, RegistryError> {
        let refuse = |reason: String| Ok(SecretsReply::Refused { reason });
        if let Some((rec, _)) = self.get(runner).await? {
            if rec.revoked.is_some() {
                return refuse(format!("runner {runner} is revoked"));
            }
        }
        let key = subjects::claim_key(req.execution_id, req.step);
        match self.claim_of(&key).await? {
            Some(c) if c.runner_id == runner => {}
            _ => {
                return refuse(format!(
                    "runner {runner} holds no claim on step {} of {}",
                    req.step, req.execution_id
                ))
            }
        }
        let Some(keys) = &self.inner.keys else {
            return refuse("the control plane has no secrets key".into());
        };
        let Some(stored) = self
            .inner
            .secrets
            .get_bytes(&subjects::execution_key(req.execution_id))
            .await?
        else {
            return refuse(format!("no secure values stored for {}", req.execution_id));
        };
        let values = open_stored(keys, &stored)?;
        let recipient = nkeys::XKey::from_public_key(&req.reply_key)
            .map_err(|e| RegistryError::Invalid(format!("reply_key: {e}")))?;
        let plain = serde_json::to_vec(&values).expect("values");
        let sealed = keys
            .secrets_key()
            .seal(&plain, &recipient)
            .map_err(|e| RegistryError::Invalid(format!("seal: {e}")))?;
        Ok(SecretsReply::Sealed {
            sender: keys.secrets_key().public_key(),
            sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        })
    }

    /// The runner runs on `public_key` now: if that is its newest credential,
    /// the ones it replaced are revoked.
    async fn rotated(&self, runner: &str, req: RotatedRequest) -> Result<(), RegistryError> {
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

    // ----- secure option values -----

    /// Seals an execution's secure option values under the secrets key and
    /// stores them; only a runner holding a claim on the execution can have
    /// them back, through [`Registry::secrets_for`].
    pub async fn store_secrets(
        &self,
        execution_id: Uuid,
        values: &SecretValues,
    ) -> Result<(), RegistryError> {
        let keys = self.inner.keys.as_ref().ok_or(RegistryError::NoKeys)?;
        let sealed = seal_at_rest(keys, values)?;
        self.inner
            .secrets
            .raw()
            .put(subjects::execution_key(execution_id), sealed.into())
            .await
            .map_err(nats_err)?;
        Ok(())
    }
}

/// At rest: sealed by a one-use sender key to the secrets key, so the API
/// needs only the public half to store values.
fn seal_at_rest(keys: &KeyStore, values: &SecretValues) -> Result<Vec<u8>, RegistryError> {
    let sender = nkeys::XKey::new();
    let recipient = nkeys::XKey::from_public_key(&keys.secrets_key().public_key())
        .map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let sealed = sender
        .seal(&serde_json::to_vec(values).expect("values"), &recipient)
        .map_err(|e| RegistryError::Invalid(format!("seal: {e}")))?;
    Ok(serde_json::to_vec(&serde_json::json!({
        "sender": sender.public_key(),
        "sealed": base64::engine::general_purpose::STANDARD.encode(sealed),
    }))
    .expect("json"))
}

fn open_stored(keys: &KeyStore, stored: &[u8]) -> Result<SecretValues, RegistryError> {
    #[derive(Deserialize)]
    struct Stored {
        sender: String,
        sealed: String,
    }
    let bad =
        |e: String| RegistryError::Service(ServiceError::Corrupt(format!("sealed secrets: {e}")));
    let s: Stored = serde_json::from_slice(stored).map_err(|e| bad(e.to_string()))?;
    let sender = nkeys::XKey::from_public_key(&s.sender).map_err(|e| bad(e.to_string()))?;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(s.sealed)
        .map_err(|e| bad(e.to_string()))?;
    let plain = keys
        .secrets_key()
        .open(&sealed, &sender)
        .map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&plain).map_err(|e| bad(e.to_string()))
}

fn json<T: Serialize>(v: &T) -> bytes::Bytes {
    serde_json::to_vec(v).expect("reply serialises").into()
}

/// A claim value: JSON, or the bare `_aborted` marker.
pub fn decode_claim(value: &[u8]) -> Claim {
    serde_json::from_slice(value).unwrap_or_else(|_| Claim {
        runner_id: String::from_utf8_lossy(value).into_owned(),
        replica_id: Uuid::nil(),
        attempt: Uuid::nil(),
    })
}

fn parse_claim_key(key: &str) -> Option<(Uuid, u32)> {
    let (exec, step) = key.split_once('.')?;
    Some((Uuid::parse_str(exec).ok()?, step.parse().ok()?))
}

/// The `dir` of the resolver line we write in the auth include.
fn resolver_dir(conf: &str) -> Option<String> {
    let line = conf.lines().find(|l| l.starts_with("resolver:"))?;
    let start = line.find("dir: \"")? + 6;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}
