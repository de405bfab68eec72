//! Integration plugins the runner runs in-process, with Rundeck's type
//! names: each reads its configuration again here, once references are
//! expanded, writes its output as a process would, and ends what it
//! started when the step is aborted or times out.

use std::collections::BTreeMap;
use std::path::Path;

use outpost_schemas::job::ansible::{AnsibleConfig, SshAuth, Vault, TYPES as ANSIBLE_TYPES};
use outpost_schemas::job::http::{HttpRequestConfig, TYPES as HTTP_TYPES};
use outpost_schemas::{LogEntry, PluginVersion};
use tokio::sync::mpsc;

use crate::executor::{spawn_task, ExecError, RunningStep};
use crate::mask::Secrets;

mod allow;
mod ansible;
mod http;

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
    HTTP_TYPES
        .iter()
        .chain(ansible)
        .map(|(t, node_step)| Built {
            plugin_type: t,
            service: if *node_step {
                "WorkflowNodeStep"
            } else {
                "WorkflowStep"
            },
            version: env!("CARGO_PKG_VERSION"),
        })
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

/// Where a plugin step runs on this runner.
pub struct Place<'a> {
    pub key_store: &'a Path,
    pub work_dir: &'a Path,
    /// The step's environment (`RD_*`), as a command's.
    pub env: &'a BTreeMap<String, String>,
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
    if ANSIBLE_TYPES.iter().any(|(t, _)| *t == plugin) {
        let run = AnsibleConfig::from_map(config)
            .and_then(|c| c.run(false))
            .map_err(refuse)?;
        let read = |key: &str, path: &str| {
            if !stored.iter().any(|k| k == key) {
                return Err(refuse(format!(
                    "configuration.{key}: not a storage path as the job wrote it"
                )));
            }
            crate::node_run::read_stored(key_store, path)
                .map_err(|why| refuse(format!("configuration.{key} {path}: {why}")))
        };
        let mut creds = ansible::Credentials::default();
        match &run.auth {
            SshAuth::StoredKey(p) => {
                creds.private_key = Some(read("ansible-ssh-key-storage-path", p)?)
            }
            SshAuth::StoredPassword(p) => {
                creds.ssh_password = Some(read("ansible-ssh-password-storage-path", p)?)
            }
            SshAuth::Default | SshAuth::KeyFile(_) => {}
        }
        if let Some(p) = run.become_.as_ref().and_then(|b| b.password.as_ref()) {
            creds.become_password = Some(read("ansible-become-password-storage-path", p)?);
        }
        if let Some(Vault::Stored(p)) = &run.vault {
            creds.vault_password = Some(read("ansible-vault-storage-path", p)?);
        }
        let mut secrets = secrets.clone();
        for pw in [
            &creds.ssh_password,
            &creds.become_password,
            &creds.vault_password,
        ]
        .into_iter()
        .flatten()
        {
            secrets = secrets.with(pw);
        }
        return ansible::start(&run, &creds, place, lines, &secrets);
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
