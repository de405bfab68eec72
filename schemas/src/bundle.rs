//! The runner credentials bundle: the one file `outpost runner create`
//! returns and `outpost-runner --creds FILE` reads (TOML).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The runner's identity; its NATS permissions are built on it.
    pub runner_id: String,
    /// The tags it was enrolled with; it serves tag sets within them.
    pub tags: Vec<String>,
    /// The gateway to connect to (`wss://…`).
    pub url: String,
    /// JetStream domain of the hub.
    pub domain: String,
    /// PEM of the CA that signed the gateway's certificate, when private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// The JetStream API prefix to use instead of the domain's (runners
    /// reach the consumers through an import under this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_prefix: Option<String>,
    /// The NATS user JWT and seed, in `.creds` format.
    pub creds: String,
}
