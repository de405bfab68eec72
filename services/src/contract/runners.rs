//! Runners: the live fleet, enrolment and the actions on one runner.

use chrono::{DateTime, Utc};
use outpost_schemas::messages::{PluginVersion, RunnerState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::fleet::health::Health;
pub use crate::fleet::registry::CredentialState;

/// One entry of `GET /runners`: a replica and its latest heartbeat, or an
/// enrolled runner with no replica checking in (then only the runner's
/// fields are set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunnerReplica {
    pub runner_id: String,
    pub tags: Vec<String>,
    /// Its latest heartbeat is recent, and it did not say it stopped.
    pub live: bool,
    /// This replica's health.
    pub health: Health,
    /// The runner's health: its healthiest replica's.
    pub runner_health: Health,
    /// One per process; replicas share `runner_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The control plane's own embedded runner.
    #[serde(default)]
    pub local: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunnerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    /// Messages waiting in its outbox for JetStream: non-zero after a link cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_bytes: Option<u64>,
    /// When the heartbeat was sent: the last check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// When a replica of it last started, for a runner with none checking in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// The plugins this replica runs: those it has that its allow-list
    /// allows (all it has, without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginVersion>,
    /// The plugins it has that its allow-list leaves out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins_not_allowed: Vec<String>,
}

/// `POST /runners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrolRequest {
    /// A subject token: `[A-Za-z0-9][A-Za-z0-9_-]*`.
    pub name: String,
    /// At most 4, each a subject token.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// An enrolled runner (`GET /runners/enrolled`); no secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrolledRunner {
    pub name: String,
    pub tags: Vec<String>,
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
    pub credentials: Vec<Credential>,
    /// When a replica of it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Credential {
    /// The NATS user public key (`U…`); the seed went to the runner only.
    pub public_key: String,
    pub issued: DateTime<Utc>,
    pub state: CredentialState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

impl EnrolledRunner {
    pub fn credentials_in(&self, state: CredentialState) -> usize {
        self.credentials.iter().filter(|c| c.state == state).count()
    }
}

impl From<crate::fleet::registry::RunnerRecord> for EnrolledRunner {
    fn from(r: crate::fleet::registry::RunnerRecord) -> Self {
        EnrolledRunner {
            name: r.name,
            tags: r.tags,
            created: r.created,
            created_by: r.created_by,
            revoked: r.revoked,
            credentials: r
                .credentials
                .into_iter()
                .map(|c| Credential {
                    public_key: c.public_key,
                    issued: c.issued,
                    state: c.state,
                    revoked: c.revoked,
                })
                .collect(),
            started: r.started,
        }
    }
}

/// The answer to an enrolment: the bundle is the only copy of the
/// runner's credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Enrolment {
    pub runner: EnrolledRunner,
    /// The credentials file, for `outpost-runner --creds` (keep it mode 0600).
    pub bundle: String,
}

/// `POST /runners/{name}/rotate`: new credentials; the old ones work until
/// the runner has switched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rotation {
    pub runner: String,
    pub bundle: String,
}

/// `POST /runners/{name}/revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Revocation {
    pub runner: String,
    pub revoked: bool,
    /// Steps it held, now ended as runner-lost.
    pub steps_ended: usize,
    /// False when NATS is not in operator mode: the registry refuses the
    /// runner's claims, but nothing cut its connection.
    pub connections_cut: bool,
}

/// `POST /runners/{name}/drain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Draining {
    pub runner: String,
    pub draining: bool,
    /// Replicas that were live when the drain notice went out.
    pub live_replicas: usize,
}

/// `POST /runners/{name}/ping`: every replica that answered within 2 s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PingReply {
    pub runner: String,
    pub replicas: Vec<PingedReplica>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PingedReplica {
    pub replica_id: Uuid,
    /// The round trip, in milliseconds.
    pub rtt_ms: f64,
}
