//! Zero-trust identity for NATS: the operator, account and user keys, the
//! JWTs that `nats-server` checks in operator mode, runner credentials and
//! their revocation.
//!
//! Trust chain (nats-server "decentralised JWT" auth):
//!
//! ```text
//! operator (self-signed JWT, in nats-server's config)
//!  ├─ SYS account      ── sys user: pushes account updates ($SYS.REQ.CLAIMS.UPDATE)
//!  ├─ OUTPOST account  (JetStream: every stream and bucket; exports to runners)
//!  │   └─ signing key  ── services user: full access inside the account
//!  └─ RUNNERS account  (no JetStream; imports from OUTPOST; the revocation list)
//!      └─ signing key  ── one user per runner credential: its own subjects only
//! ```
//!
//! Runners live in their own account and reach OUTPOST only through
//! service imports. NATS checks a publisher's permissions on the subject but
//! not on the reply subject, and answers (JetStream publish acks, fetched
//! messages) go to the reply subject with the answering account's rights.
//! Across a service import NATS replaces the reply subject with one of its
//! own and routes the answer back into RUNNERS, so whatever reply subject a
//! runner names, nothing is written into OUTPOST but what it may publish.
//!
//! Every seed lives in files of mode 0600 in the keys dir (mode 0700) and
//! nowhere else. JWTs are public by design (they are signed claims, not
//! secrets); a runner's seed is generated for its bundle and never stored
//! by the control plane.

pub mod auth;
pub mod dev_tls;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use nkeys::KeyPair;
use outpost_schemas::job::TagSet;
use outpost_schemas::subjects;
use serde_json::{json, Value};
use sha2::Digest;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("keys dir {path}: {message}")]
    Keys { path: PathBuf, message: String },
    #[error("nkey: {0}")]
    Nkey(String),
    #[error("credentials: {0}")]
    Creds(String),
    #[error("NATS refused the account update: {0}")]
    Push(String),
    #[error("NATS is not in operator mode (nobody answers account updates)")]
    NotOperatorMode,
}

fn keys_err(path: &Path, e: impl std::fmt::Display) -> SecurityError {
    SecurityError::Keys {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Name of the account every Outpost identity lives in.
pub const ACCOUNT_NAME: &str = "OUTPOST";
/// Most tags a runner may be enrolled with: its permissions name every
/// subset of its tags, and the JWT carrying them must stay small.
pub const MAX_RUNNER_TAGS: usize = 4;

/// Writes `contents` to `path` with mode 0600, atomically (temp file, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
}

/// The control plane's key material, loaded from the keys dir.
pub struct KeyStore {
    dir: PathBuf,
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
    account_signer: KeyPair,
    runners: KeyPair,
    runners_signer: KeyPair,
    /// Seals secure option values at rest and for their runner.
    secrets: nkeys::XKey,
}

const OPERATOR_SEED: &str = "operator.nk";
const SYSTEM_SEED: &str = "system-account.nk";
const ACCOUNT_SEED: &str = "account.nk";
const SIGNER_SEED: &str = "account-signing.nk";
const RUNNERS_SEED: &str = "runners-account.nk";
const RUNNERS_SIGNER_SEED: &str = "runners-signing.nk";
/// Name of the account runner users live in.
pub const RUNNERS_ACCOUNT_NAME: &str = "OUTPOST_RUNNERS";
/// The JetStream API prefix runners use: OUTPOST's `$JS.API.…` consumer
/// calls, imported into RUNNERS under this name.
pub const RUNNER_API_PREFIX: &str = "JS.outpost.API";
const SECRETS_SEED: &str = "secrets.xk";
pub const SYS_CREDS: &str = "sys.creds";
pub const SERVICES_CREDS: &str = "services.creds";
pub const NATS_AUTH_CONF: &str = "nats-auth.conf";

impl KeyStore {
    /// Loads the keys in `dir`, creating any that are missing. Existing keys
    /// are never replaced: that would lock every issued credential out.
    pub fn init(dir: &Path) -> Result<KeyStore, SecurityError> {
        std::fs::create_dir_all(dir).map_err(|e| keys_err(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| keys_err(dir, e))?;
        Self::load(dir, true)
    }

    /// Loads the keys; with `create`, makes the missing ones.
    fn load(dir: &Path, create: bool) -> Result<KeyStore, SecurityError> {
        let seed = |name: &str, make: fn() -> KeyPair| -> Result<KeyPair, SecurityError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => KeyPair::from_seed(s.trim()).map_err(|e| keys_err(&path, e)),
                Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                    let kp = make();
                    let s = kp.seed().map_err(|e| SecurityError::Nkey(e.to_string()))?;
                    write_private(&path, s.as_bytes()).map_err(|e| keys_err(&path, e))?;
                    Ok(kp)
                }
                Err(e) => Err(keys_err(&path, e)),
            }
        };
        let secrets_path = dir.join(SECRETS_SEED);
        let secrets = match std::fs::read_to_string(&secrets_path) {
            Ok(s) => nkeys::XKey::from_seed(s.trim()).map_err(|e| keys_err(&secrets_path, e))?,
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                let x = nkeys::XKey::new();
                let s = x.seed().map_err(|e| SecurityError::Nkey(e.to_string()))?;
                write_private(&secrets_path, s.as_bytes())
                    .map_err(|e| keys_err(&secrets_path, e))?;
                x
            }
            Err(e) => return Err(keys_err(&secrets_path, e)),
        };
        let ks = KeyStore {
            operator: seed(OPERATOR_SEED, KeyPair::new_operator)?,
            system: seed(SYSTEM_SEED, KeyPair::new_account)?,
            account: seed(ACCOUNT_SEED, KeyPair::new_account)?,
            account_signer: seed(SIGNER_SEED, KeyPair::new_account)?,
            runners: seed(RUNNERS_SEED, KeyPair::new_account)?,
            runners_signer: seed(RUNNERS_SIGNER_SEED, KeyPair::new_account)?,
            secrets,
            dir: dir.to_path_buf(),
        };
        if create {
            for (name, make) in [
                (SYS_CREDS, KeyStore::system_user_creds as fn(&KeyStore) -> _),
                (SERVICES_CREDS, KeyStore::services_creds),
            ] {
                let path = dir.join(name);
                if !path.exists() {
                    let creds = make(&ks)?;
                    write_private(&path, creds.as_bytes()).map_err(|e| keys_err(&path, e))?;
                }
            }
        }
        Ok(ks)
    }

    /// Loads existing keys without writing anything (the dir may be
    /// read-only); absent keys are an error, not a prompt to create them
    /// (services must not mint a second trust root).
    pub fn open(dir: &Path) -> Result<KeyStore, SecurityError> {
        if !dir.join(ACCOUNT_SEED).exists() {
            return Err(keys_err(
                dir,
                "no keys here; create them with `outpost security init`",
            ));
        }
        KeyStore::load(dir, false)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn account_public_key(&self) -> String {
        self.account.public_key()
    }

    pub fn secrets_key(&self) -> &nkeys::XKey {
        &self.secrets
    }

    pub fn operator_jwt(&self) -> Result<String, SecurityError> {
        let op = self.operator.public_key();
        encode_jwt(
            json!({
                "iat": 1, "iss": op, "sub": op, "name": "outpost",
                "nats": {"system_account": self.system.public_key(), "type": "operator", "version": 2}
            }),
            &self.operator,
        )
    }

    fn system_account_jwt(&self) -> Result<String, SecurityError> {
        encode_jwt(
            json!({
                "iat": 1, "iss": self.operator.public_key(), "sub": self.system.public_key(), "name": "SYS",
                "nats": {
                    "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                    "type": "account", "version": 2
                }
            }),
            &self.operator,
        )
    }

    /// The OUTPOST account: JetStream on, and what runners may reach of it
    /// exported as services (answers come back through NATS's own reply
    /// subjects) or streams (notices to runners).
    pub fn account_jwt(&self) -> Result<String, SecurityError> {
        let service = |subject: String, stream_reply: bool| {
            json!({
                "name": subject, "subject": subject, "type": "service",
                "response_type": if stream_reply { "Stream" } else { "Singleton" }
            })
        };
        let exports: Vec<Value> = runner_services()
            .into_iter()
            .map(|(remote, _, streamed)| service(remote, streamed))
            .chain(
                runner_notices()
                    .into_iter()
                    .map(|subject| json!({"name": subject, "subject": subject, "type": "stream"})),
            )
            .collect();
        encode_jwt(
            json!({
                "iat": now(), "iss": self.operator.public_key(), "sub": self.account.public_key(),
                "name": ACCOUNT_NAME,
                "nats": {
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                        "wildcards": true, "conn": -1, "leaf": -1,
                        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
                    },
                    "signing_keys": [self.account_signer.public_key()],
                    "exports": exports,
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account", "version": 2
                }
            }),
            &self.operator,
        )
    }

    /// The RUNNERS account, with its imports from OUTPOST and `revocations`
    /// (user public key → unix seconds: credentials of that key issued at
    /// or before that time are refused).
    pub fn runners_account_jwt(
        &self,
        revocations: &BTreeMap<String, i64>,
    ) -> Result<String, SecurityError> {
        let outpost = self.account.public_key();
        let imports: Vec<Value> = runner_services()
            .into_iter()
            .map(|(remote, local, _)| {
                json!({
                    "name": local, "subject": remote, "local_subject": local,
                    "account": outpost, "type": "service"
                })
            })
            .chain(runner_notices().into_iter().map(|subject| {
                json!({"name": subject, "subject": subject, "account": outpost, "type": "stream"})
            }))
            .collect();
        encode_jwt(
            json!({
                "iat": now(), "iss": self.operator.public_key(), "sub": self.runners.public_key(),
                "name": RUNNERS_ACCOUNT_NAME,
                "nats": {
                    "limits": {
                        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                        "wildcards": true, "conn": -1, "leaf": -1
                    },
                    "signing_keys": [self.runners_signer.public_key()],
                    "imports": imports,
                    "revocations": revocations,
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account", "version": 2
                }
            }),
            &self.operator,
        )
    }

    fn system_user_creds(&self) -> Result<String, SecurityError> {
        let user = KeyPair::new_user();
        let jwt = encode_jwt(
            json!({
                "iat": now(), "iss": self.system.public_key(), "sub": user.public_key(), "name": "outpost-sys",
                "nats": {"subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
            }),
            &self.system,
        )?;
        creds_file(&jwt, &user)
    }

    fn services_creds(&self) -> Result<String, SecurityError> {
        let user = KeyPair::new_user();
        let jwt = user_jwt(
            (&self.account, &self.account_signer),
            "outpost-services",
            &user.public_key(),
            None,
        )?;
        creds_file(&jwt, &user)
    }
}

/// A user JWT of `account`, signed by its signing key.
fn user_jwt(
    (account, signer): (&KeyPair, &KeyPair),
    name: &str,
    public_key: &str,
    permissions: Option<&Permissions>,
) -> Result<String, SecurityError> {
    {
        let mut nats = json!({
            "subs": -1, "data": -1, "payload": -1,
            "issuer_account": account.public_key(),
            "type": "user", "version": 2
        });
        if let Some(p) = permissions {
            nats["pub"] = json!({"allow": p.publish});
            nats["sub"] = json!({"allow": p.subscribe});
        }
        encode_jwt(
            json!({
                "iat": now(), "iss": signer.public_key(), "sub": public_key, "name": name,
                "nats": nats
            }),
            signer,
        )
    }
}

impl KeyStore {
    /// A fresh credential for a runner: a new user key (so that revoking it
    /// touches no other credential) and a JWT allowing only its subjects.
    /// Returns the user public key and the `.creds` text.
    pub fn runner_creds(
        &self,
        runner_id: &str,
        tags: &TagSet,
    ) -> Result<(String, String), SecurityError> {
        let user = KeyPair::new_user();
        let perms = runner_permissions(runner_id, tags);
        let jwt = user_jwt(
            (&self.runners, &self.runners_signer),
            &format!("runner {runner_id}"),
            &user.public_key(),
            Some(&perms),
        )?;
        Ok((user.public_key(), creds_file(&jwt, &user)?))
    }

    /// The `nats-server` config fragment that turns on operator mode with a
    /// `full` resolver (account JWTs stored in `resolver_dir`, updatable at
    /// run time, which is how revocations reach the server).
    pub fn nats_auth_conf(
        &self,
        resolver_dir: &Path,
        revocations: &BTreeMap<String, i64>,
    ) -> Result<String, SecurityError> {
        Ok(format!(
            "# Generated by outpost; the operator and account JWTs are public, the seeds are not here.\n\
             operator: \"{op}\"\n\
             system_account: \"{sys}\"\n\
             resolver: {{ type: full, dir: \"{dir}\", allow_delete: false, interval: \"2m\", timeout: \"2s\" }}\n\
             resolver_preload: {{\n  {sys}: \"{sys_jwt}\"\n  {acc}: \"{acc_jwt}\"\n  {run}: \"{run_jwt}\"\n}}\n",
            op = self.operator_jwt()?,
            sys = self.system.public_key(),
            dir = resolver_dir.display(),
            sys_jwt = self.system_account_jwt()?,
            acc = self.account.public_key(),
            acc_jwt = self.account_jwt()?,
            run = self.runners.public_key(),
            run_jwt = self.runners_account_jwt(revocations)?,
        ))
    }

    /// `existing` (a `nats-auth.conf` this store wrote, perhaps by an
    /// older Outpost) with the account JWTs as this version builds them,
    /// keeping its resolver dir and the revocations its runners' account
    /// holds. An upgrade changes what the accounts export and import (the
    /// plugin lanes did), and a server preloads only what this file says.
    ///
    /// The revocations are those of the file and those of the account JWT
    /// the server keeps in its resolver dir, which a revocation pushed by
    /// a replica that does not write this file reached: a revoked
    /// credential stays revoked across the rebuild.
    pub fn refreshed_nats_auth_conf(&self, existing: &str) -> Result<String, SecurityError> {
        let dir = resolver_dir(existing)
            .ok_or_else(|| SecurityError::Creds("the auth include names no resolver dir".into()))?;
        let account = self.runners.public_key();
        let mut revocations = revocations_in(existing, &account)?;
        let stored = Path::new(&dir).join(format!("{account}.jwt"));
        match std::fs::read_to_string(&stored) {
            Ok(jwt) => {
                let more = revocations_of(jwt.trim())
                    .map_err(|why| SecurityError::Creds(format!("{}: {why}", stored.display())))?;
                for (user, at) in more {
                    let e = revocations.entry(user).or_insert(at);
                    *e = (*e).max(at);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(keys_err(&stored, e)),
        }
        self.nats_auth_conf(Path::new(&dir), &revocations)
    }

    /// Sends the runners' account JWT, with its revocations, to every
    /// server of the cluster; connected users whose credentials it revokes
    /// are cut off.
    ///
    /// Only `OUTPOST_RUNNERS` is pushed. Re-pushing the `OUTPOST` account
    /// (a new JWT, if only by its `iat`) makes nats-server re-register that
    /// account's JetStream API imports, and for a moment every JetStream
    /// request of the control plane gets "no responders". The `OUTPOST`
    /// account never changes at run time; a restarted server preloads it
    /// from `nats-auth.conf`.
    pub async fn push_account(
        &self,
        nats_url: &str,
        ca_file: Option<&Path>,
        revocations: &BTreeMap<String, i64>,
    ) -> Result<(), SecurityError> {
        let jwts = [self.runners_account_jwt(revocations)?];
        let mut opts = async_nats::ConnectOptions::new()
            .name("outpost account update")
            .credentials(
                &std::fs::read_to_string(self.dir.join(SYS_CREDS))
                    .map_err(|e| keys_err(&self.dir, e))?,
            )
            .map_err(|e| SecurityError::Creds(e.to_string()))?;
        if let Some(ca) = ca_file {
            opts = opts.add_root_certificates(ca.to_path_buf());
        }
        let client = opts
            .connect(nats_url)
            .await
            .map_err(|e| SecurityError::Push(format!("connect: {e}")))?;
        for jwt in jwts {
            let reply = match client.request("$SYS.REQ.CLAIMS.UPDATE", jwt.into()).await {
                Ok(r) => r,
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    return Err(SecurityError::NotOperatorMode)
                }
                Err(e) => return Err(SecurityError::Push(e.to_string())),
            };
            let body: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
            if let Some(err) = body.get("error") {
                return Err(SecurityError::Push(err.to_string()));
            }
        }
        Ok(())
    }
}

/// The resolver dir of a `nats-auth.conf` written by
/// [`KeyStore::nats_auth_conf`].
pub fn resolver_dir(conf: &str) -> Option<String> {
    let line = conf.lines().find(|l| l.starts_with("resolver:"))?;
    let start = line.find("dir: \"")? + 6;
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

/// The revocations in the preloaded JWT of `account` in `conf`: none when
/// the file preloads no JWT of it, an error when that JWT does not read
/// (rebuilding from it would drop them).
fn revocations_in(conf: &str, account: &str) -> Result<BTreeMap<String, i64>, SecurityError> {
    let prefix = format!("{account}: \"");
    let Some(line) = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
    else {
        return Ok(BTreeMap::new());
    };
    line.strip_suffix('"')
        .ok_or_else(|| "no closing quote".to_string())
        .and_then(revocations_of)
        .map_err(|why| SecurityError::Creds(format!("the auth include's JWT of {account}: {why}")))
}

/// The revocations an account JWT holds.
fn revocations_of(jwt: &str) -> Result<BTreeMap<String, i64>, String> {
    let body = jwt.split('.').nth(1).ok_or("not a JWT")?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|e| format!("its claims are not base64url: {e}"))?;
    let claims: Value =
        serde_json::from_slice(&raw).map_err(|e| format!("its claims are not JSON: {e}"))?;
    match claims.pointer("/nats/revocations") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(r) => serde_json::from_value(r.clone()).map_err(|e| format!("its revocations: {e}")),
    }
}

/// What a NATS user may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// What OUTPOST exports as services for runners: (subject in OUTPOST,
/// subject in RUNNERS, answered with a stream of messages).
fn runner_services() -> Vec<(String, String, bool)> {
    let same = |s: &str| (s.to_string(), s.to_string(), false);
    // Any stream: `OUTPOST_DISPATCH` and each plugin lane's, which come and
    // go without a new account JWT. Each runner's own permissions name the
    // consumers (`dispatch_<token>`) it may use; no other stream has one
    // of that name.
    vec![
        same("outpost.ev.*.*.*"),
        same("outpost.log.*.*.*"),
        same("outpost.hb.*.*"),
        same("outpost.nodes.*"),
        same("outpost.rpc.*.*"),
        same("outpost.dlq.*.*"),
        same("$JS.ACK.*.>"),
        (
            "$JS.API.CONSUMER.MSG.NEXT.*.*".to_string(),
            format!("{RUNNER_API_PREFIX}.CONSUMER.MSG.NEXT.*.*"),
            true,
        ),
        (
            "$JS.API.CONSUMER.INFO.*.*".to_string(),
            format!("{RUNNER_API_PREFIX}.CONSUMER.INFO.*.*"),
            false,
        ),
    ]
}

/// What OUTPOST exports as streams for runners (notices, no replies).
fn runner_notices() -> Vec<String> {
    vec![
        "outpost.abort.>".to_string(),
        "outpost.ctl.>".to_string(),
        subjects::TAGSETS_CHANGED.to_string(),
    ]
}

/// A runner's subject space inside RUNNERS. Everything not listed is
/// denied, which is how other runners' consumers, other executions' logs and
/// events, and everything OUTPOST does not export (the buckets, the stream
/// API) stay out of reach.
pub fn runner_permissions(runner_id: &str, tags: &TagSet) -> Permissions {
    let mut publish = vec![
        format!("outpost.ev.*.*.{runner_id}"),
        format!("outpost.log.*.*.{runner_id}"),
        format!("outpost.hb.{runner_id}.*"),
        subjects::node_report(runner_id),
        format!("outpost.rpc.{runner_id}.>"),
        subjects::dead_letter(runner_id, "*"),
    ];
    // Every tag set it can serve is a subset of its tags plus its implicit
    // per-runner tag; each has one consumer.
    let mine = tags.with_runner(runner_id);
    let all: Vec<String> = mine.tags().to_vec();
    for mask in 1u32..(1 << all.len()) {
        let subset: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, t)| t.clone())
            .collect();
        // `all` is sorted, so the subset is too: this is its canonical token.
        let token = subset.join("+");
        let consumer = subjects::dispatch_consumer(&token);
        // On any stream: `OUTPOST_DISPATCH` and every plugin lane. Which
        // lanes it serves is the runner's choice (its plugins); which
        // targets is not.
        publish.push(format!(
            "{RUNNER_API_PREFIX}.CONSUMER.MSG.NEXT.*.{consumer}"
        ));
        publish.push(format!("{RUNNER_API_PREFIX}.CONSUMER.INFO.*.{consumer}"));
        publish.push(format!("$JS.ACK.*.{consumer}.>"));
    }
    Permissions {
        publish,
        subscribe: vec![
            format!("{}.>", runner_inbox_prefix(runner_id)),
            format!("{}.>", subjects::runner_abort_prefix(runner_id)),
            subjects::runner_control(runner_id, "*"),
            subjects::TAGSETS_CHANGED.to_string(),
        ],
    }
}

/// Inbox prefix a runner must use: its permissions allow replies only there.
pub fn runner_inbox_prefix(runner_id: &str) -> String {
    format!("_INBOX_{runner_id}")
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Encodes and signs a JWT the way nats-server expects (`ed25519-nkey`).
fn encode_jwt(mut claims: Value, signer: &KeyPair) -> Result<String, SecurityError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The id is a hash of the claims themselves, as in nats-io/jwt.
    let digest = sha2::Sha256::digest(serde_json::to_vec(&claims).expect("json"));
    claims["jti"] = Value::String(data_encoding::BASE32_NOPAD.encode(&digest));
    let header = b64.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64.encode(serde_json::to_vec(&claims).expect("json"));
    let signing_input = format!("{header}.{body}");
    let sig = signer
        .sign(signing_input.as_bytes())
        .map_err(|e| SecurityError::Nkey(e.to_string()))?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}

fn creds_file(jwt: &str, user: &KeyPair) -> Result<String, SecurityError> {
    let seed = user
        .seed()
        .map_err(|e| SecurityError::Nkey(e.to_string()))?;
    Ok(format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_permissions_name_only_its_subjects() {
        let tags = TagSet::new(["linux", "eu"]).unwrap();
        let p = runner_permissions("web", &tags);
        // {eu, linux, _r_web}: 7 non-empty subsets, 3 subjects each, plus 6.
        assert_eq!(p.publish.len(), 6 + 7 * 3);
        assert!(p
            .publish
            .iter()
            .all(|s| !s.contains("$KV") && !s.contains("STREAM.")));
        assert!(p
            .publish
            .contains(&"JS.outpost.API.CONSUMER.MSG.NEXT.*.dispatch_eu+linux".to_string()));
        assert!(p.publish.contains(&"outpost.ev.*.*.web".to_string()));
        assert!(!p.publish.iter().any(|s| s.contains("outpost.ev.>")));
        assert_eq!(p.subscribe[0], "_INBOX_web.>");
    }

    /// An upgrade rewrites the include with this version's accounts and
    /// loses no revocation: neither the file's nor one that reached the
    /// server's resolver dir only (pushed by a replica elsewhere).
    #[test]
    fn a_refreshed_auth_include_keeps_its_revocations_and_dir() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::init(&dir.path().join("keys")).unwrap();
        let jwt_dir = dir.path().join("jwt");
        std::fs::create_dir(&jwt_dir).unwrap();
        let revoked: BTreeMap<String, i64> = [("UREVOKED".to_string(), 1_700_000_000)].into();
        let old = keys.nats_auth_conf(&jwt_dir, &revoked).unwrap();
        let runners = keys.runners.public_key();
        let mut pushed = revoked.clone();
        pushed.insert("UELSEWHERE".into(), 1_700_000_100);
        std::fs::write(
            jwt_dir.join(format!("{runners}.jwt")),
            keys.runners_account_jwt(&pushed).unwrap(),
        )
        .unwrap();
        // As an older version wrote it: one stream exported.
        let account = keys.account.public_key();
        let old: String = old
            .lines()
            .map(|l| match l.trim().starts_with(&account) {
                true => format!("  {account}: \"eyJ0eXAiOiJKV1QifQ.e30.old\"\n"),
                false => format!("{l}\n"),
            })
            .collect();
        assert!(old.contains("e30.old"));
        let fresh = keys.refreshed_nats_auth_conf(&old).unwrap();
        assert_eq!(
            resolver_dir(&fresh).as_deref(),
            Some(jwt_dir.to_str().unwrap())
        );
        assert_eq!(revocations_in(&fresh, &runners).unwrap(), pushed);
        assert!(!fresh.contains("e30.old"));
        assert!(fresh.contains(&keys.account.public_key()));
        assert!(revocations_in("operator: x\n", "AX").unwrap().is_empty());
        // A JWT that does not read would lose its revocations: refused.
        let garbled: String = fresh
            .lines()
            .map(|l| match l.trim().starts_with(&runners) {
                true => format!("  {runners}: \"eyJ0eXAiOiJKV1QifQ.!!.x\"\n"),
                false => format!("{l}\n"),
            })
            .collect();
        let err = keys.refreshed_nats_auth_conf(&garbled).unwrap_err();
        assert!(err.to_string().contains("not base64url"), "{err}");
    }

    #[test]
    fn keys_are_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let a = KeyStore::init(&keys).unwrap();
        let b = KeyStore::init(&keys).unwrap();
        assert_eq!(a.account_public_key(), b.account_public_key());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);
        for entry in std::fs::read_dir(&keys).unwrap() {
            let p = entry.unwrap().path();
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}
