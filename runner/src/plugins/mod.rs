//! Integration plugins the runner runs in-process, with Rundeck's type
//! names: each reads its configuration again here, once references are
//! expanded, writes its output as a process would, and ends what it
//! started when the step is aborted or times out.

use std::collections::BTreeMap;
use std::path::Path;

use outpost_schemas::job::ansible::{AnsibleConfig, Inventory, TYPES as ANSIBLE_TYPES};
use outpost_schemas::job::copyfile::{CopyFileConfig, TYPES as COPYFILE_TYPES};
use outpost_schemas::job::http::{HttpRequestConfig, TYPES as HTTP_TYPES};
use outpost_schemas::job::kubernetes::{KubeConnection, NODE_CONTAINER, TYPES as KUBE_TYPES};
use outpost_schemas::node::Node;
use outpost_schemas::{LogEntry, PluginVersion};
use tokio::sync::mpsc;

use crate::executor::{spawn_task, ExecError, RunningStep};
use crate::mask::Secrets;

mod allow;
pub mod ansible;
pub mod copyfile;
mod http;
pub(crate) mod kubernetes;
pub mod winrm;

pub use allow::{AllowList, AllowListError};

/// A plugin this runner has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// Its Rundeck type.
    pub plugin_type: &'static str,
    /// The Rundeck service it is listed under in an allow-list.
    pub service: &'static str,
    /// The version of what runs it (the runner's own, for the ones built in).
    pub version: &'static str,
}

/// The plugins this runner has.
pub fn built() -> Vec<Built> {
    let ansible: &[(&str, bool)] = if ansible::installed() {
        ANSIBLE_TYPES
    } else {
        &[]
    };
    let step = |(t, node_step): &(&'static str, bool)| Built {
        plugin_type: t,
        service: if *node_step {
            "WorkflowNodeStep"
        } else {
            "WorkflowStep"
        },
        version: env!("CARGO_PKG_VERSION"),
    };
    let executors = ansible::installed().then_some(Built {
        plugin_type: outpost_schemas::job::ansible::NODE_EXECUTOR,
        service: "NodeExecutor",
        version: env!("CARGO_PKG_VERSION"),
    });
    // Built in: WinRM and Kubernetes need nothing on the runner's host.
    let built_in = [
        outpost_schemas::job::winrm::NODE_EXECUTOR,
        outpost_schemas::job::kubernetes::NODE_EXECUTOR,
    ]
    .map(|plugin_type| Built {
        plugin_type,
        service: "NodeExecutor",
        version: env!("CARGO_PKG_VERSION"),
    });
    HTTP_TYPES
        .iter()
        .chain(COPYFILE_TYPES)
        .chain(KUBE_TYPES)
        .chain(ansible)
        .map(step)
        .chain(executors)
        .chain(built_in)
        .collect()
}

/// What this runner runs: the plugins it has that `allowed` lets it
/// (all of them without a list), and those it leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    pub plugins: Vec<PluginVersion>,
    pub not_allowed: Vec<String>,
}

impl Usable {
    pub fn new(allowed: Option<&AllowList>) -> Usable {
        let (plugins, refused): (Vec<Built>, Vec<Built>) = built()
            .into_iter()
            .partition(|b| allowed.is_none_or(|a| a.allows(b.plugin_type)));
        Usable {
            plugins: plugins
                .into_iter()
                .map(|b| PluginVersion {
                    plugin_type: b.plugin_type.into(),
                    version: b.version.into(),
                })
                .collect(),
            not_allowed: refused.into_iter().map(|b| b.plugin_type.into()).collect(),
        }
    }

    /// What a runner whose credential cannot reach the lanes offers:
    /// nothing, which its heartbeat shows as such (see
    /// [`credential_reaches_lanes`]).
    pub fn none() -> Usable {
        Usable {
            plugins: Vec::new(),
            not_allowed: Vec::new(),
        }
    }

    pub fn runs(&self, plugin: &str) -> bool {
        self.plugins.iter().any(|p| p.plugin_type == plugin)
    }

    /// Runs every one of `plugins`.
    pub fn runs_all<'a>(&self, mut plugins: impl Iterator<Item = &'a String>) -> bool {
        plugins.all(|p| self.runs(p))
    }

    /// The allow-list's `known` argument: each plugin with its service.
    pub fn services() -> Vec<(&'static str, &'static str)> {
        built()
            .into_iter()
            .map(|b| (b.plugin_type, b.service))
            .collect()
    }
}

/// Whether the NATS user JWT `jwt` lets its runner fetch from plugin
/// lanes. Credentials issued before lanes name the one stream,
/// `…CONSUMER.MSG.NEXT.OUTPOST_DISPATCH.dispatch_<token>`; current ones
/// name any stream. A runner with an old one would bind lanes and have
/// every fetch refused, so it offers no plugins instead. A JWT that does
/// not read, or grants everything (no permissions), is left to the server.
pub fn credential_reaches_lanes(jwt: &str) -> bool {
    let claims = jwt
        .split('.')
        .nth(1)
        .and_then(|b| data_encoding::BASE64URL_NOPAD.decode(b.as_bytes()).ok())
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok());
    let Some(allow) = claims
        .as_ref()
        .and_then(|c| c.pointer("/nats/pub/allow"))
        .and_then(|a| a.as_array())
    else {
        return true;
    };
    let fetches: Vec<&str> = allow
        .iter()
        .filter_map(|s| s.as_str())
        .filter(|s| s.contains(".CONSUMER.MSG.NEXT."))
        .collect();
    fetches.is_empty() || fetches.iter().any(|s| s.contains(".CONSUMER.MSG.NEXT.*."))
}

/// Where a plugin step runs on this runner.
pub struct Place<'a> {
    pub key_store: &'a Path,
    pub work_dir: &'a Path,
    /// The step's environment (`RD_*`), as a command's.
    pub env: &'a BTreeMap<String, String>,
    /// For a node step of a node run: the node it runs for, and every
    /// node of the run.
    pub node: Option<NodeScope<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct NodeScope<'a> {
    pub node: &'a Node,
    pub nodes: &'a [Node],
}

/// Starts the plugin step `plugin`; a configuration that does not hold
/// once expanded, or a plugin this runner lacks, is an error naming it.
pub fn start(
    plugin: &str,
    config: &BTreeMap<String, String>,
    stored: &[String],
    place: &Place<'_>,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let key_store = place.key_store;
    // A configuration error quotes what the references expanded to.
    let refuse = |why: String| ExecError::Plugin(secrets.mask_str(&why));
    if let Some((_, node_step)) = ANSIBLE_TYPES.iter().find(|(t, _)| *t == plugin) {
        let mut run = AnsibleConfig::from_map(config)
            .and_then(|c| c.run_for(false, *node_step))
            .map_err(refuse)?;
        // A node step runs for its node: limited to it, as the plugin's
        // node steps are, with an inventory of the run's nodes.
        let from_nodes = match (place.node, *node_step) {
            (Some(scope), true) => {
                run.limit = (!run.disable_limit).then(|| scope.node.nodename.clone());
                Some(ansible::inventory_of(scope.nodes))
            }
            (None, true) if run.inventory == Some(Inventory::FromNodes) => {
                return Err(refuse(format!(
                    "`{plugin}` runs on a job's nodes and this job has none: give it ansible-inventory, or the job nodefilters"
                )))
            }
            _ => None,
        };
        let (creds, secrets) =
            ansible::credentials(&run, key_store, |k| stored.iter().any(|s| s == k), secrets)
                .map_err(refuse)?;
        return ansible::start(&run, &creds, from_nodes.as_deref(), place, lines, &secrets);
    }
    if COPYFILE_TYPES.iter().any(|(t, _)| *t == plugin) {
        // On the runner's host: a job without nodes, or a local node (a
        // node run sends the others to the node, see `node_run`).
        let copy = CopyFileConfig::from_map(config)
            .and_then(|c| c.copy(false))
            .map_err(refuse)?;
        let node = place
            .node
            .map(|s| s.node.nodename.clone())
            .unwrap_or_else(|| "localhost".into());
        return Ok(spawn_task(lines, secrets, move |out, stop| {
            copyfile::run(copy, copyfile::Target::Local, node, out, stop)
        }));
    }
    if KUBE_TYPES.iter().any(|(t, _)| *t == plugin) {
        let step = outpost_schemas::job::kubernetes::read(plugin, config, false).map_err(refuse)?;
        let none = BTreeMap::new();
        let attributes = place.node.map_or(&none, |s| &s.node.attributes);
        let (name, namespace) = step.object.resolve(attributes).map_err(refuse)?;
        let connection = step.connection.for_node(attributes);
        let mut secrets = secrets.clone();
        let token = match &connection {
            KubeConnection::Url { token: Some(p), .. } => {
                if !stored.iter().any(|k| k == "token") {
                    return Err(refuse(
                        "configuration.token: not a storage path as the job wrote it".into(),
                    ));
                }
                let t = crate::node_run::read_stored(key_store, p)
                    .map_err(|why| refuse(format!("configuration.token {p}: {why}")))?;
                secrets = secrets.with(t.trim());
                Some(t)
            }
            _ => None,
        };
        let execution = place.env.get("RD_JOB_EXECID").cloned().ok_or_else(|| {
            refuse("the step has no RD_JOB_EXECID to label what it creates".into())
        })?;
        let target = kubernetes::Target {
            name,
            namespace,
            node_container: attributes
                .get(NODE_CONTAINER)
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty()),
            connection,
            token,
            execution,
        };
        let masked = secrets.clone();
        return Ok(spawn_task(lines, &secrets, move |out, stop| {
            kubernetes::run(step, target, masked, out, stop)
        }));
    }
    if HTTP_TYPES.iter().any(|(t, _)| *t == plugin) {
        let mut request = HttpRequestConfig::from_map(config)
            .and_then(|c| c.request(false))
            .map_err(refuse)?;
        let mut secrets = secrets.clone();
        if let Some((_, password)) = request.basic.as_mut() {
            if stored.iter().any(|k| k == "password") {
                let read = crate::node_run::read_stored(key_store, password)
                    .map_err(|why| refuse(format!("password {password}: {why}")))?;
                *password = read;
            }
            // Masked too where the server echoes it back.
            secrets = secrets.with(password);
        }
        let masked = secrets.clone();
        return Ok(spawn_task(lines, &secrets, move |out, stop| {
            http::run(request, masked, out, stop)
        }));
    }
    Err(ExecError::Plugin(format!(
        "this runner has no plugin `{plugin}`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP: &str = "edu.ohio.ais.rundeck.HttpWorkflowStepPlugin";
    const HTTP_NODE: &str = "edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin";

    /// A list splits what the runner has into what it offers and what it
    /// names as refused; a lane is bound only when every plugin is offered.
    #[test]
    fn a_list_splits_the_plugins_into_offered_and_refused() {
        let (list, _) = AllowList::parse(
            &format!("allowedPlugins:\n  WorkflowStep: [{HTTP}]\n"),
            &Usable::services(),
        )
        .unwrap();
        let usable = Usable::new(Some(&list));
        assert!(usable.runs(HTTP));
        assert!(!usable.runs(HTTP_NODE));
        assert!(usable.not_allowed.iter().any(|p| p == HTTP_NODE));
        assert!(!usable.not_allowed.iter().any(|p| p == HTTP));
        let (one, both) = (
            [HTTP.to_string()],
            [HTTP.to_string(), HTTP_NODE.to_string()],
        );
        assert!(usable.runs_all(one.iter()));
        assert!(!usable.runs_all(both.iter()));
        // Without a list, everything it has.
        let all = Usable::new(None);
        assert!(all.runs_all(both.iter()));
        assert!(all.not_allowed.is_empty());
        assert!(!Usable::none().runs_all(one.iter()));
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        format!(
            "{}.{}.sig",
            b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn a_credential_from_before_lanes_is_told_apart() {
        let allow = |subjects: &[&str]| {
            jwt(serde_json::json!({"nats": {"pub": {"allow": subjects}, "type": "user"}}))
        };
        let cases = [
            (
                allow(&[
                    "outpost.ev.*.*.dc",
                    "JS.outpost.API.CONSUMER.MSG.NEXT.OUTPOST_DISPATCH.dispatch_dc",
                ]),
                false,
            ),
            (
                allow(&[
                    "outpost.ev.*.*.dc",
                    "JS.outpost.API.CONSUMER.MSG.NEXT.*.dispatch_dc",
                ]),
                true,
            ),
            // No permissions at all: everything is allowed.
            (jwt(serde_json::json!({"nats": {"type": "user"}})), true),
            ("not a jwt".to_string(), true),
        ];
        for (jwt, want) in cases {
            assert_eq!(credential_reaches_lanes(&jwt), want, "{jwt}");
        }
    }
}
