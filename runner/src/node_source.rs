//! The nodes a runner serves, read from its own host when it starts: a
//! Rundeck `resources.yaml` (`--nodes-file`) and an Ansible inventory
//! (`--ansible-inventory`, read with `ansible-inventory --list`, as
//! Rundeck's Ansible resource model source reads one without gathering
//! facts). Both may be given; a node name in both is an error, since the
//! two would disagree on where it is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use outpost_schemas::node::Node;
use serde_json::Value;

/// A source that does not read, with the file it came from.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct NodeSourceError {
    pub path: PathBuf,
    pub message: String,
}

/// The runner's nodes; none when it has no source.
pub fn load(
    nodes_file: Option<&Path>,
    ansible_inventory: Option<&Path>,
) -> Result<Option<Vec<Node>>, NodeSourceError> {
    let err = |path: &Path, message: String| NodeSourceError {
        path: path.to_path_buf(),
        message,
    };
    let mut nodes = Vec::new();
    if let Some(path) = nodes_file {
        let text = std::fs::read_to_string(path).map_err(|e| err(path, e.to_string()))?;
        nodes = outpost_schemas::resources::parse_resources(&text)
            .map_err(|e| err(path, e.to_string()))?;
    }
    if let Some(path) = ansible_inventory {
        let listed = list_inventory(path).map_err(|m| err(path, m))?;
        let seen: BTreeSet<String> = nodes.iter().map(|n| n.nodename.clone()).collect();
        for node in from_inventory(&listed).map_err(|m| err(path, m))? {
            if seen.contains(&node.nodename) {
                return Err(err(
                    path,
                    format!(
                        "host `{}` is also in the nodes file; a node comes from one source",
                        node.nodename
                    ),
                ));
            }
            nodes.push(node);
        }
    }
    Ok((nodes_file.is_some() || ansible_inventory.is_some()).then_some(nodes))
}

/// `ansible-inventory -i PATH --list`: the inventory as JSON, whatever
/// its format (INI, YAML, a directory, a script).
fn list_inventory(path: &Path) -> Result<String, String> {
    let out = std::process::Command::new("ansible-inventory")
        .arg("-i")
        .arg(path)
        .arg("--list")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ansible-inventory (is ansible-core installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ansible-inventory failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| "ansible-inventory wrote no UTF-8".into())
}

/// The host vars that set a node's fields, first match wins, as the
/// plugin's `AnsibleInventoryList.NodeTag` reads them.
const HOSTNAME: &[&str] = &["hostname", "ansible_host", "ansible_ssh_host"];
const USERNAME: &[&str] = &[
    "username",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_user_id",
];
const PORT: &[&str] = &["ansible_port", "ansible_ssh_port"];
const OS: &[(&str, &[&str])] = &[
    ("osFamily", &["osFamily", "ansible_os_family"]),
    ("osName", &["osName", "ansible_os_name"]),
    ("osArch", &["osArch", "ansible_architecture"]),
    ("osVersion", &["osVersion", "ansible_kernel"]),
];

/// Nodes from `ansible-inventory --list`'s JSON: each host by its name,
/// tagged with every group it is in, directly or through a child group
/// (not `all`); its address, port, user and OS from its vars; every var
/// an attribute (text as it is, anything else as JSON), so that the
/// inventory the node steps write carries them back to Ansible.
pub fn from_inventory(listed: &str) -> Result<Vec<Node>, String> {
    let inv: BTreeMap<String, Value> =
        serde_json::from_str(listed).map_err(|e| format!("ansible-inventory's list: {e}"))?;
    let names = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Each group's parents, to tag a host with the groups above its own.
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut members: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (group, body) in inv.iter().filter(|(g, _)| *g != "_meta") {
        for child in names(body.get("children")) {
            parents.entry(child).or_default().insert(group.clone());
        }
        for host in names(body.get("hosts")) {
            members.entry(host).or_default().insert(group.clone());
        }
    }
    let hostvars = inv
        .get("_meta")
        .and_then(|m| m.get("hostvars"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut hosts: BTreeSet<String> = members.keys().cloned().collect();
    hosts.extend(hostvars.keys().cloned());
    let mut nodes = Vec::new();
    for host in hosts {
        let vars = hostvars
            .get(&host)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let first = |keys: &[&str]| keys.iter().find_map(|k| vars.get(*k)).map(text);
        let mut tags = BTreeSet::new();
        let mut todo: Vec<String> = members.get(&host).into_iter().flatten().cloned().collect();
        while let Some(g) = todo.pop() {
            if g != "all" && tags.insert(g.clone()) {
                todo.extend(parents.get(&g).into_iter().flatten().cloned());
            }
        }
        let port = match first(PORT) {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("host `{host}`: ansible_port `{p}` is not a port"))?,
            ),
            None => None,
        };
        // A vault-encrypted value (`{"__ansible_vault": …}`) is a secret
        // whatever its name: it is not read at all.
        let vaulted = |v: &Value| v.get("__ansible_vault").is_some();
        let mut attributes: BTreeMap<String, String> = vars
            .iter()
            .filter(|(k, v)| k.as_str() != "tags" && !vaulted(v))
            .map(|(k, v)| (k.clone(), text(v)))
            .collect();
        for (attr, keys) in OS {
            if let Some(v) = first(keys) {
                attributes.insert(attr.to_string(), v);
            }
        }
        nodes.push(Node {
            hostname: first(HOSTNAME).unwrap_or_else(|| host.clone()),
            port,
            username: first(USERNAME),
            tags,
            attributes,
            nodename: host,
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ansible-inventory --list` prints for an inventory with nested
    /// groups, beside the nodes read from it.
    #[test]
    fn an_inventory_list_reads_as_nodes() {
        let listed = r#"{
            "_meta": {"hostvars": {
                "web1": {"ansible_host": "10.0.0.5", "ansible_port": 2222, "ansible_user": "deploy",
                         "ansible_os_family": "Debian", "tier": "front", "weights": [1, 2]},
                "db1": {"ansible_ssh_host": "db.internal", "username": "dba", "tags": "ignored"},
                "lone": {}
            }},
            "all": {"children": ["ungrouped", "prod"]},
            "prod": {"children": ["web", "db"]},
            "web": {"hosts": ["web1"]},
            "db": {"hosts": ["db1"]},
            "ungrouped": {"hosts": ["lone"]}
        }"#;
        insta::assert_yaml_snapshot!(from_inventory(listed).unwrap());
        for (bad, why) in [
            (
                "{\"all\": ",
                "ansible-inventory's list: EOF while parsing a value at line 1 column 8",
            ),
            (
                r#"{"_meta": {"hostvars": {"a": {"ansible_port": "ssh"}}}}"#,
                "host `a`: ansible_port `ssh` is not a port",
            ),
        ] {
            assert_eq!(from_inventory(bad).unwrap_err(), why);
        }
    }
}
