//! Node inventory in Rundeck's `resources.yaml` format.
//!
//! Both of Rundeck's shapes are accepted: a map keyed by node name, or a list
//! of node entries. Standard keys become fields; any other scalar key is a
//! custom attribute, usable in node filters. Errors carry the line.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

pub use crate::node::Node;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct InventoryError {
    pub line: Option<usize>,
    pub message: String,
}

/// A scalar YAML value; Rundeck attributes are all text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

/// `tags` is a comma string in Rundeck, or a YAML list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tags {
    List(Vec<String>),
    Text(String),
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    nodename: Option<String>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    tags: Option<Tags>,
    #[serde(flatten)]
    rest: BTreeMap<String, Scalar>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawInventory {
    Map(BTreeMap<String, RawNode>),
    List(Vec<RawNode>),
}

/// Parses `resources.yaml`. Node names must be unique.
pub fn parse_resources(text: &str) -> Result<Vec<Node>, InventoryError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    // Parse to a YAML value first for a precise syntax error; the untagged
    // shapes below would otherwise only say "did not match any variant".
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| InventoryError {
            line: e.location().map(|l| l.line()),
            message: e
                .to_string()
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
    let raw: RawInventory = serde_yaml_ng::from_value(value).map_err(|_| InventoryError {
        line: None,
        message: "expected a map of nodes keyed by name, or a list of nodes, each a map of scalar attributes (`tags` may be a list)".into(),
    })?;
    let entries: Vec<(Option<String>, RawNode)> = match raw {
        RawInventory::Map(m) => m.into_iter().map(|(k, v)| (Some(k), v)).collect(),
        RawInventory::List(l) => l.into_iter().map(|v| (None, v)).collect(),
    };
    let mut nodes = Vec::with_capacity(entries.len());
    let mut names = BTreeSet::new();
    for (i, (key, raw)) in entries.into_iter().enumerate() {
        let node = node_from(key, raw).map_err(|message| InventoryError {
            line: None,
            message: format!("node #{}: {message}", i + 1),
        })?;
        if !names.insert(node.nodename.clone()) {
            return Err(InventoryError {
                line: None,
                message: format!("node `{}` is defined twice", node.nodename),
            });
        }
        nodes.push(node);
    }
    Ok(nodes)
}

fn node_from(key: Option<String>, raw: RawNode) -> Result<Node, String> {
    // As in Rundeck, a map key is the node's name, whatever `nodename` says.
    let nodename = match (key, raw.nodename) {
        (Some(k), _) => k,
        (None, Some(n)) => n,
        (None, None) => return Err("has no `nodename`".into()),
    };
    if nodename.trim().is_empty() {
        return Err("`nodename` is empty".into());
    }
    let attributes: BTreeMap<String, String> =
        raw.rest.into_iter().map(|(k, v)| (k, v.text())).collect();
    let local = attributes.get("node-executor").map(String::as_str) == Some("local");
    let hostname = match raw.hostname {
        Some(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ if local => "localhost".to_string(),
        _ => return Err(format!("`{nodename}` has no `hostname`")),
    };
    // `user@host` supplies the user when `username` is not set.
    let (user_in_host, hostname) = match hostname.split_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h.to_string()),
        _ => (None, hostname),
    };
    let (hostname, port) = split_port(&hostname).map_err(|e| format!("`{nodename}`: {e}"))?;
    let tags = match raw.tags {
        None => BTreeSet::new(),
        Some(Tags::List(l)) => l
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        Some(Tags::Text(t)) => t
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
    };
    Ok(Node {
        nodename,
        hostname,
        port,
        username: raw.username.filter(|u| !u.is_empty()).or(user_in_host),
        tags,
        attributes,
    })
}

/// `host:port`, `[v6]:port`, or a bare host (a bare IPv6 address has no port).
fn split_port(h: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = h.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed `[` in hostname")?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_string(), Some(parse_port(p)?))),
            None if after.is_empty() => Ok((host.to_string(), None)),
            None => Err(format!("unexpected `{after}` after `]` in hostname")),
        };
    }
    match h.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host.to_string(), Some(parse_port(p)?))),
        _ => Ok((h.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|&n| n != 0)
        .ok_or_else(|| format!("port `{p}` is not a number from 1 to 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        match parse_resources(text) {
            Ok(nodes) => serde_json::to_string(&nodes).unwrap(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn rundeck_shapes_and_errors() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "map keyed by name, tags as a comma string, port in hostname",
                "web1:\n  hostname: 10.1.0.5:2222\n  username: deploy\n  tags: 'web, prod'\n  osFamily: unix\n  ssh-key-storage-path: keys/web\n  rack: 7\n",
                r#"[{"nodename":"web1","hostname":"10.1.0.5","port":2222,"username":"deploy","tags":["prod","web"],"attributes":{"osFamily":"unix","rack":"7","ssh-key-storage-path":"keys/web"}}]"#,
            ),
            (
                "list with tags as a list, IPv6 with port, local executor without hostname",
                "- nodename: db1\n  hostname: '[fd00::5]:22'\n  tags: [db]\n- nodename: here\n  node-executor: local\n",
                r#"[{"nodename":"db1","hostname":"fd00::5","port":22,"tags":["db"]},{"nodename":"here","hostname":"localhost","attributes":{"node-executor":"local"}}]"#,
            ),
            ("empty file", "\n", "[]"),
            (
                "the map key wins over nodename; user@host gives the user",
                "a:\n  nodename: b\n  hostname: ops@h:2022\n",
                r#"[{"nodename":"a","hostname":"h","port":2022,"username":"ops"}]"#,
            ),
            ("no hostname", "- nodename: x\n", "error: node #1: `x` has no `hostname`"),
            (
                "bad port",
                "x:\n  hostname: h:99999\n",
                "error: node #1: `x`: port `99999` is not a number from 1 to 65535",
            ),
            (
                "duplicate name",
                "- {nodename: x, hostname: a}\n- {nodename: x, hostname: b}\n",
                "error: node `x` is defined twice",
            ),
            ("syntax error has a line", "a:\n  hostname: [unclosed\n", "error: line 3: "),
            (
                "nested value",
                "a:\n  hostname: h\n  extra: {deep: 1}\n",
                "error: expected a map of nodes keyed by name, or a list of nodes, each a map of scalar attributes (`tags` may be a list)",
            ),
        ];
        for (name, input, expected) in cases {
            let got = render(input);
            assert!(
                got.starts_with(expected),
                "{name}:\n  got      {got}\n  expected {expected}"
            );
        }
    }

    #[test]
    fn attributes_as_filters_see_them() {
        let n =
            &parse_resources("w:\n  hostname: h:2200\n  tags: b,a\n  osFamily: unix\n").unwrap()[0];
        assert_eq!(n.attribute("name").as_deref(), Some("w"));
        assert_eq!(n.attribute("hostname").as_deref(), Some("h:2200"));
        assert_eq!(n.attribute("tags").as_deref(), Some("a,b"));
        assert_eq!(n.attribute("osFamily").as_deref(), Some("unix"));
        assert_eq!(n.attribute("missing"), None);
        assert_eq!(n.executor(), "ssh");
    }
}
