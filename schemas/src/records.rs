//! The control plane's KV records: what `OUTPOST_JOBS`, `OUTPOST_PROJECTS`,
//! `OUTPOST_NODES`, `OUTPOST_RUNNING`, `OUTPOST_DEADLINES`,
//! `OUTPOST_RUNNERS` and `OUTPOST_TOKENS` hold. They are
//! NATS payloads like any message, so replicas of different versions, and
//! backup or migration tools, read them by these definitions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::job::Job;
use crate::node::Node;

/// `OUTPOST_JOBS` `job.<uuid>`: a job as imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRecord {
    pub id: Uuid,
    pub project: String,
    pub job: Job,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `OUTPOST_RUNNING` `job.<uuid>`: the job's executions admitted and not
/// yet seen finished, which its `multipleExecutions` limit counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunningRecord {
    pub executions: Vec<AdmittedRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdmittedRun {
    pub execution_id: Uuid,
    pub admitted_at: DateTime<Utc>,
}

/// `OUTPOST_DEADLINES` `<exec>`: when a running execution's `timeout`
/// passes. The orchestrator writes it when it plans the run and deletes it
/// when the run ends; every orchestrator replica watches the bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadlineRecord {
    pub execution_id: Uuid,
    pub deadline: DateTime<Utc>,
    /// The timeout as the run read it (`6h 30m`), for the reason shown.
    pub timeout: String,
    /// The run's nonce, which salts the timeout's dedup id.
    pub nonce: Uuid,
}

/// `OUTPOST_PROJECTS` `<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectRecord {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Rundeck's project configuration, key by key (`project.globals.NAME`
    /// is `${globals.NAME}` in every job of the project).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

impl ProjectRecord {
    /// Its globals (`project.globals.NAME`), by name.
    pub fn globals(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("project.globals.")?.to_string(), v.clone())))
            .collect()
    }
}

/// `OUTPOST_NODES` `<project>`: the project's uploaded node source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectNodes {
    pub nodes: Vec<Node>,
    pub updated_at: DateTime<Utc>,
}

/// `OUTPOST_RUNNERS` `<name>`: an enrolled runner (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Credential {
    /// The NATS user public key (`U…`); the seed went to the runner only.
    pub public_key: String,
    pub issued: DateTime<Utc>,
    pub state: CredentialState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    Active,
    /// Replaced by a newer credential that the runner has not picked up yet.
    Superseded,
    Revoked,
}

/// `OUTPOST_TOKENS` `<id>`: an API token, stored as the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// The role per project; `*` stands for every project.
    pub roles: BTreeMap<String, Role>,
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

/// Ordered: each role can do what the one below it can.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Also runs and aborts jobs.
    Operator,
    /// Everything.
    Admin,
}
