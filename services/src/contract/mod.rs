//! The HTTP API's contract: every request and response body, the one
//! definition that the API serves, the CLI and the tests read, and
//! `docs/openapi.json` describes.
//!
//! Only serde and schemars here, no HTTP: the API turns these into
//! responses, the CLI into requests. A storage record is never a body; each
//! has its counterpart here, converted where it is served, so that a change
//! to what is stored is not a change to the API. Value types shared with the
//! wire contract (statuses, a job definition, a node) are used as they are:
//! they have one meaning everywhere.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod executions;
mod jobs;
mod records;
mod runners;
mod tokens;

pub use executions::*;
pub use jobs::*;
pub use records::*;
pub use runners::*;
pub use tokens::*;

/// The word an enum is on the wire (`healthy`, `node-first`, `TAGS`), for
/// text that shows or writes it.
pub fn wire_word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Every Outpost route is under this prefix.
pub const API_PREFIX: &str = "/api/v1";

/// Every error: Rundeck's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Always `true`.
    pub error: bool,
    /// A stable code, as Rundeck's (`api.error.item.doesnotexist`, …).
    #[serde(rename = "errorCode")]
    pub error_code: String,
    /// For people: what went wrong and, where it helps, what to do.
    pub message: String,
}

/// `GET /health`: answered by the API process alone, without NATS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthReply {
    /// `ok`.
    pub status: String,
    /// The control plane's version.
    pub version: String,
}

/// A project: the namespace of jobs, nodes and executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Project {
    /// A subject token: `[A-Za-z0-9][A-Za-z0-9_-]*`.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A project's configuration, key by key (Rundeck's keys:
/// `project.globals.NAME`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ProjectConfig(pub std::collections::BTreeMap<String, String>);

/// One configuration value (`PUT /project/{p}/config/{key}`), as Rundeck's
/// API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigValue {
    pub value: String,
}

impl From<crate::store::Project> for Project {
    fn from(p: crate::store::Project) -> Self {
        Project {
            name: p.name,
            description: p.description,
        }
    }
}
