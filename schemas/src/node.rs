//! Nodes: the endpoints node steps run on, as Rundeck's resource model
//! describes them. Parsing `resources.yaml` lives in the runner crate
//! (`outpost_runner::inventory`); this is the shape that crosses the wire.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One node: an endpoint a node step can run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Node {
    pub nodename: String,
    /// Host name or address, without the port.
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tags: BTreeSet<String>,
    /// Every other attribute, standard (`osFamily`, `node-executor`,
    /// `ssh-key-storage-path`, …) or custom, as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Node {
    /// An attribute's value as node filters see it: `name`/`nodename`,
    /// `hostname`, `username`, `tags` (comma-joined), or any other attribute.
    pub fn attribute(&self, name: &str) -> Option<String> {
        match name {
            "name" | "nodename" => Some(self.nodename.clone()),
            "hostname" => Some(match self.port {
                Some(p) => format!("{}:{p}", self.hostname),
                None => self.hostname.clone(),
            }),
            "username" => self.username.clone(),
            "tags" => Some(self.tags.iter().cloned().collect::<Vec<_>>().join(",")),
            other => self.attributes.get(other).cloned(),
        }
    }

    /// The node's data as a step sees it, by Rundeck's context names
    /// (`name`, `hostname`, `username`, `tags`, `os-family`, …, and each
    /// custom attribute): `${node.KEY}`, `@node.KEY@` and `RD_NODE_*`.
    pub fn context(&self) -> BTreeMap<String, String> {
        let mut ctx: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.attributes {
            let key = match k.as_str() {
                "osFamily" => "os-family",
                "osName" => "os-name",
                "osArch" => "os-arch",
                "osVersion" => "os-version",
                other => other,
            };
            ctx.insert(key.to_string(), v.clone());
        }
        ctx.insert("name".into(), self.nodename.clone());
        ctx.insert("hostname".into(), self.hostname.clone());
        if let Some(u) = &self.username {
            ctx.insert("username".into(), u.clone());
        }
        ctx.insert(
            "tags".into(),
            self.tags.iter().cloned().collect::<Vec<_>>().join(","),
        );
        ctx
    }

    /// `node-executor`, defaulting to SSH (`local` runs on the runner's host).
    pub fn executor(&self) -> &str {
        self.attributes
            .get("node-executor")
            .map(String::as_str)
            .unwrap_or("ssh")
    }
}

/// Attributes that locate or hold credentials. They stay on the runner
/// that owns the node: a runner reports its nodes without them. Besides
/// Rundeck's storage paths, any name that reads as a secret (an Ansible
/// inventory's `ansible_password`, `ansible_become_pass`, a vault blob
/// under any name that says so, a token) is kept home too.
pub fn is_credential_attribute(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.ends_with("-storage-path")
        || name.starts_with("ssh-key")
        || ["pass", "secret", "token", "vault", "private_key"]
            .iter()
            .any(|w| lower.contains(w))
}

impl Node {
    /// This node as its runner reports it: without credential attributes.
    pub fn redacted(&self) -> Node {
        let mut n = self.clone();
        n.attributes.retain(|k, _| !is_credential_attribute(k));
        n
    }
}
