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
use chrono::Utc;
use futures::StreamExt;
use outpost_bus as bus;
use outpost_schemas::job::{check_name, TagSet};
use outpost_schemas::rpc::Claim;
use outpost_schemas::{subjects, Event, Header, StepFinished, StepOutcome};
use uuid::Uuid;

use crate::security::{KeyStore, SecurityError, MAX_RUNNER_TAGS};
use crate::store::bucket::{Bucket, Cas};
use crate::ServiceError;
use outpost_schemas::run::Run;

mod rpc;
mod secrets;
mod sweep;

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

pub use outpost_schemas::records::{Credential, CredentialState, RunnerRecord};

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
        let claim = Claim::decode(&value);
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
    tag_index: crate::fleet::tag_index::TagSetIndex,
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
            if let Some(dir) = crate::security::resolver_dir(&text) {
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

    async fn publish_lost(
        &self,
        execution_id: Uuid,
        step: u32,
        nonce: Uuid,
        runner: &str,
        reason: &str,
    ) -> Result<(), RegistryError> {
        let finished = Event::StepFinished(StepFinished {
            node_data: Default::default(),
            data: Default::default(),
            header: Header::now(),
            execution_id,
            step,
            runner_id: runner.into(),
            outcome: StepOutcome::Failed,
            exit_code: None,
            reason: Some(reason.into()),
            log_chunks: 0,
            handler: None,
            halted: None,
            log_used: None,
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

    // ----- secure option values -----
}

fn parse_claim_key(key: &str) -> Option<(Uuid, u32)> {
    let (exec, step) = key.split_once('.')?;
    Some((Uuid::parse_str(exec).ok()?, step.parse().ok()?))
}
