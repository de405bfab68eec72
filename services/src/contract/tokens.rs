//! API tokens.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::security::auth::Role;

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenRequest {
    pub name: String,
    /// `admin`, `ops=operator`, `*=viewer`…: a role for every project, or
    /// `project=role`.
    pub roles: Vec<String>,
}

/// A token's record, without the secret (which is stored only as a hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    /// The role per project; `*` stands for every project.
    pub roles: BTreeMap<String, Role>,
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
}

/// The answer to a create: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: Token,
    /// The secret, for `Authorization: Bearer …`.
    pub token: String,
}

impl From<crate::security::auth::TokenRecord> for Token {
    fn from(r: crate::security::auth::TokenRecord) -> Self {
        Token {
            id: r.id,
            name: r.name,
            roles: r.roles,
            created: r.created,
            created_by: r.created_by,
            revoked: r.revoked,
        }
    }
}
