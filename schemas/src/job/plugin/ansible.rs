//! Rundeck's Ansible plugin (`rundeck-plugins/ansible-plugin` 5.x,
//! `com.batix.rundeck.plugins.*`): the workflow steps' configuration keys,
//! read at import and again on the runner once references are expanded,
//! into the `ansible-playbook` or `ansible` run the plugin makes. See
//! `docs/research/rundeck-ansible-plugin.md` (§3 the keys, §4 the command
//! line).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::NOT_SUPPORTED_YET;

use super::config::{deferred, flag, from_map, text};

/// The steps' configuration as a job export holds it: every value text.
/// The committed JSON Schema (`plugin_ansible.v1.json`) is this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AnsibleConfig {
    /// A playbook file on the runner.
    pub ansible_playbook: Option<String>,
    /// A playbook's text.
    pub ansible_playbook_inline: Option<String>,
    /// A module, run with `ansible all -m`.
    pub ansible_module: Option<String>,
    pub ansible_module_args: Option<String>,
    /// An inventory file (or directory, or `host,` list) on the runner.
    pub ansible_inventory: Option<String>,
    /// An inventory's text; wins over `ansible-inventory`.
    pub ansible_inventory_inline: Option<String>,
    /// Building the inventory from Rundeck's nodes: not supported yet.
    pub ansible_generate_inventory: Option<String>,
    pub ansible_generate_inventory_nodes_auth: Option<String>,
    /// YAML, passed as `--extra-vars=@FILE`.
    pub ansible_extra_vars: Option<String>,
    /// Accepted; the extra vars are written to a private file either way.
    pub ansible_encrypt_extra_vars: Option<String>,
    /// More arguments, split as a shell splits words.
    pub ansible_extra_param: Option<String>,
    /// `-l`, for a job without nodes.
    pub ansible_limit: Option<String>,
    pub ansible_disable_limit: Option<String>,
    /// The vault password's file on the runner.
    pub ansible_vault_path: Option<String>,
    /// The vault password in the runner's key store.
    pub ansible_vault_storage_path: Option<String>,
    /// `privateKey` (the default) or `password`.
    pub ansible_ssh_auth_type: Option<String>,
    pub ansible_ssh_user: Option<String>,
    pub ansible_ssh_keypath: Option<String>,
    pub ansible_ssh_key_storage_path: Option<String>,
    pub ansible_ssh_password_storage_path: Option<String>,
    pub ansible_ssh_password_option: Option<String>,
    pub ansible_ssh_timeout: Option<String>,
    /// An ssh-agent for the key: not supported yet.
    pub ansible_ssh_use_agent: Option<String>,
    pub ansible_ssh_passphrase_storage_path: Option<String>,
    pub ansible_ssh_passphrase_option: Option<String>,
    pub ansible_become: Option<String>,
    pub ansible_become_method: Option<String>,
    pub ansible_become_user: Option<String>,
    pub ansible_become_password_storage_path: Option<String>,
    pub ansible_become_password_option: Option<String>,
    /// The directory Ansible runs in.
    pub ansible_base_dir_path: Option<String>,
    /// Where `ansible` and `ansible-playbook` are.
    pub ansible_binaries_dir_path: Option<String>,
    /// `ANSIBLE_CONFIG`.
    pub ansible_config_file_path: Option<String>,
    /// `-vvv`.
    pub ansible_debug: Option<String>,
}

/// The step types that take this configuration: (type, node step).
pub const TYPES: &[(&str, bool)] = &[
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookWorkflowStep",
        false,
    ),
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowStep",
        false,
    ),
    ("com.batix.rundeck.plugins.AnsibleModuleWorkflowStep", false),
    // Misspelled in the plugin, and so in every export.
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookWorflowNodeStep",
        true,
    ),
    (
        "com.batix.rundeck.plugins.AnsiblePlaybookInlineWorkflowNodeStep",
        true,
    ),
];

/// Rundeck's become methods.
pub const BECOME_METHODS: &[&str] = &[
    "doas",
    "dzdo",
    "ksu",
    "machinectl",
    "runas",
    "pbrun",
    "pfexec",
    "sudo",
    "su",
];

/// The keys whose value is a key storage path.
const STORED: &[&str] = &[
    "ansible-ssh-key-storage-path",
    "ansible-ssh-password-storage-path",
    "ansible-become-password-storage-path",
    "ansible-vault-storage-path",
];

/// What runs: the plugin's order is a playbook path, then inline, then a
/// module, whatever the step's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnsibleMode {
    Playbook(String),
    Inline(String),
    Module {
        module: String,
        args: Option<String>,
    },
    /// The node executor's command or script: `ansible all -m shell`,
    /// whose command writes `script` (given on its stdin) to a private
    /// file on the node and runs it with `args` under `executable`.
    Shell {
        script: String,
        args: Option<String>,
        executable: String,
    },
}

/// Why the Ansible node step `plugin` cannot run in a job without nodes,
/// if it is one and cannot. It runs once per node, limited to the node
/// (`-l`): without nodes there is no inventory to write, and a step's own
/// inventory would run whole, where Rundeck limits it to its server node.
pub fn refused_without_nodes(plugin: &str, config: &BTreeMap<String, String>) -> Option<String> {
    if !TYPES.contains(&(plugin, true)) {
        return None;
    }
    let run = AnsibleConfig::from_map(config)
        .and_then(|a| a.run_for(true, true))
        .ok()?;
    match run.inventory {
        Some(Inventory::FromNodes) | None => Some(format!(
            "`{plugin}` runs on the job's nodes, and the job has no nodefilters: give it nodefilters, or the step ansible-inventory"
        )),
        Some(_) if !run.disable_limit => Some(format!(
            "`{plugin}` runs once per node of the job, limited to it, and the job has no nodefilters: give it nodefilters, or `ansible-disable-limit: true` to run the step's inventory whole"
        )),
        Some(_) => None,
    }
}

/// Rundeck's Ansible node executor (`node-executor` of a node).
pub const NODE_EXECUTOR: &str = "com.batix.rundeck.plugins.AnsibleNodeExecutor";

/// The node attributes the node executor reads as its configuration, as
/// the plugin reads them from the node (the others are host vars only).
pub const NODE_EXECUTOR_KEYS: &[&str] = &[
    "ansible-ssh-user",
    "ansible-ssh-auth-type",
    "ansible-ssh-keypath",
    "ansible-ssh-key-storage-path",
    "ansible-ssh-password-storage-path",
    "ansible-ssh-timeout",
    "ansible-become",
    "ansible-become-method",
    "ansible-become-user",
    "ansible-become-password-storage-path",
    "ansible-vault-path",
    "ansible-vault-storage-path",
    "ansible-extra-param",
    "ansible-binaries-dir-path",
    "ansible-base-dir-path",
    "ansible-config-file-path",
    "ansible-debug",
];

/// The shell the node executor runs commands with (`executable=` of
/// Ansible's `shell` module), from the node's `ansible-executable`.
pub const EXECUTABLE_KEY: &str = "ansible-executable";
/// The plugin's default for [`EXECUTABLE_KEY`].
pub const DEFAULT_EXECUTABLE: &str = "/bin/sh";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inventory {
    Path(String),
    Inline(String),
    /// For a node step: the runner writes one from the run's nodes.
    FromNodes,
}

/// Where the SSH credential comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshAuth {
    /// No key given: Ansible's own (the runner user's `~/.ssh`, an agent).
    Default,
    /// A private key in the runner's key store.
    StoredKey(String),
    /// A private key file on the runner.
    KeyFile(String),
    /// A password in the runner's key store, given to Ansible as
    /// `ansible_password` in a private extra-vars file.
    StoredPassword(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Become {
    pub method: Option<String>,
    pub user: Option<String>,
    /// A storage path.
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vault {
    File(String),
    Stored(String),
}

/// A checked run, as the runner makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsibleRun {
    pub mode: AnsibleMode,
    pub inventory: Option<Inventory>,
    pub extra_vars: Option<String>,
    pub extra_params: Vec<String>,
    pub limit: Option<String>,
    /// `ansible-disable-limit`: a node step passes no `-l` either.
    pub disable_limit: bool,
    pub user: Option<String>,
    pub auth: SshAuth,
    pub timeout: Option<u32>,
    pub become_: Option<Become>,
    pub vault: Option<Vault>,
    pub base_dir: Option<String>,
    pub binaries_dir: Option<String>,
    pub config_file: Option<String>,
    pub debug: bool,
}

/// The configuration keys that hold key storage paths
/// (`StepCommand::Plugin::stored`). A path with a reference is refused at
/// import, so the job's text alone decides which key the runner reads.
pub fn stored_keys(config: &BTreeMap<String, String>) -> Vec<String> {
    STORED
        .iter()
        .filter(|k| config.get(**k).is_some_and(|v| !v.trim().is_empty()))
        .map(|k| k.to_string())
        .collect()
}

impl AnsibleConfig {
    /// Reads the configuration map (unknown keys are errors).
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map("the Ansible step", config)
    }

    /// Checks what can be checked before references expand (`at_import`),
    /// or everything (on the runner), into the run a workflow step makes.
    pub fn run(&self, at_import: bool) -> Result<AnsibleRun, String> {
        self.run_for(at_import, false)
    }

    /// As [`AnsibleConfig::run`], for a workflow step or a node step. A
    /// node step runs on one node of the run at a time: the runner sets
    /// `-l` to its name, and with no inventory given (or
    /// `ansible-generate-inventory`) writes one from the run's nodes.
    pub fn run_for(&self, at_import: bool, node_step: bool) -> Result<AnsibleRun, String> {
        let skip = |v: &str| at_import && deferred(v);
        let owned = |v: &Option<String>| text(v).map(str::to_string);
        let mode = match (
            text(&self.ansible_playbook),
            self.ansible_playbook_inline
                .as_deref()
                .filter(|v| !v.trim().is_empty()),
            text(&self.ansible_module),
        ) {
            (Some(p), _, _) => AnsibleMode::Playbook(p.to_string()),
            (None, Some(i), _) => AnsibleMode::Inline(i.to_string()),
            (None, None, Some(m)) => AnsibleMode::Module {
                module: m.to_string(),
                args: owned(&self.ansible_module_args),
            },
            // The plugin's words.
            (None, None, None) => {
                return Err("Missing module or playbook job arguments: set configuration.ansible-playbook, ansible-playbook-inline or ansible-module".into())
            }
        };
        let generate = flag(
            "ansible-generate-inventory",
            &self.ansible_generate_inventory,
            false,
            at_import,
        )?;
        if generate && !node_step {
            return Err(format!(
                "{NOT_SUPPORTED_YET}: configuration.ansible-generate-inventory in a workflow step (an inventory from Rundeck's nodes, which a job with nodes would give; the node steps write one from the run's nodes)"
            ));
        }
        for (key, v, instead) in [
            (
                "ansible-generate-inventory-nodes-auth",
                &self.ansible_generate_inventory_nodes_auth,
                "the nodes' own credentials; give one with ansible-ssh-key-storage-path",
            ),
            (
                "ansible-ssh-use-agent",
                &self.ansible_ssh_use_agent,
                "an ssh-agent for the key; give the key with ansible-ssh-key-storage-path",
            ),
        ] {
            if flag(key, v, false, at_import)? {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: configuration.{key} ({instead})"
                ));
            }
        }
        for (key, v) in [
            (
                "ansible-ssh-password-option",
                &self.ansible_ssh_password_option,
            ),
            (
                "ansible-become-password-option",
                &self.ansible_become_password_option,
            ),
        ] {
            if text(v).is_some() {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: configuration.{key} (a password from a secure option; use the key store's {})",
                    key.replace("-option", "-storage-path")
                ));
            }
        }
        for key in STORED {
            let v = match *key {
                "ansible-ssh-key-storage-path" => &self.ansible_ssh_key_storage_path,
                "ansible-ssh-password-storage-path" => &self.ansible_ssh_password_storage_path,
                "ansible-become-password-storage-path" => {
                    &self.ansible_become_password_storage_path
                }
                _ => &self.ansible_vault_storage_path,
            };
            if let Some(v) = text(v) {
                if deferred(v) {
                    return Err(format!(
                        "configuration.{key}: `{v}` has a reference; a storage path is read as the job writes it, so that a run's values cannot choose another key"
                    ));
                }
            }
        }
        let inventory = match (
            self.ansible_inventory_inline
                .as_deref()
                .filter(|v| !v.trim().is_empty()),
            text(&self.ansible_inventory),
        ) {
            _ if generate => Some(Inventory::FromNodes),
            (Some(i), _) => Some(Inventory::Inline(i.to_string())),
            (None, Some(p)) => Some(Inventory::Path(p.to_string())),
            (None, None) if node_step => Some(Inventory::FromNodes),
            (None, None) => None,
        };
        let extra_params = match text(&self.ansible_extra_param) {
            Some(p) if skip(p) => Vec::new(),
            Some(p) => shlex::split(p).ok_or_else(|| {
                format!("configuration.ansible-extra-param: `{p}` has an unclosed quote")
            })?,
            None => Vec::new(),
        };
        let disable_limit = flag(
            "ansible-disable-limit",
            &self.ansible_disable_limit,
            false,
            at_import,
        )?;
        let limit = owned(&self.ansible_limit).filter(|_| !disable_limit);
        let auth_type = text(&self.ansible_ssh_auth_type).unwrap_or("privateKey");
        let auth = match auth_type {
            a if skip(a) => SshAuth::Default,
            "privateKey" => match (
                owned(&self.ansible_ssh_key_storage_path),
                owned(&self.ansible_ssh_keypath),
            ) {
                // The plugin's order: the key store wins.
                (Some(k), _) => SshAuth::StoredKey(k),
                (None, Some(f)) => SshAuth::KeyFile(f),
                (None, None) => SshAuth::Default,
            },
            "password" => match owned(&self.ansible_ssh_password_storage_path) {
                Some(p) => SshAuth::StoredPassword(p),
                None => return Err("configuration.ansible-ssh-auth-type is password: set ansible-ssh-password-storage-path".into()),
            },
            other => {
                return Err(format!(
                    "configuration.ansible-ssh-auth-type: `{other}` is not one of privateKey, password"
                ))
            }
        };
        let timeout = match text(&self.ansible_ssh_timeout) {
            Some(t) if skip(t) => None,
            Some(t) => Some(t.parse::<u32>().map_err(|_| {
                format!("configuration.ansible-ssh-timeout: `{t}` is not a number of seconds")
            })?),
            None => None,
        }
        .filter(|t| *t > 0);
        let become_ = if flag("ansible-become", &self.ansible_become, false, at_import)? {
            let method = owned(&self.ansible_become_method);
            if let Some(m) = method.as_deref().filter(|m| !skip(m)) {
                if !BECOME_METHODS.contains(&m) {
                    return Err(format!(
                        "configuration.ansible-become-method: `{m}` is not one of {}",
                        BECOME_METHODS.join(", ")
                    ));
                }
            }
            Some(Become {
                method,
                user: owned(&self.ansible_become_user),
                password: owned(&self.ansible_become_password_storage_path),
            })
        } else {
            None
        };
        let vault = match (
            owned(&self.ansible_vault_storage_path),
            owned(&self.ansible_vault_path),
        ) {
            (Some(s), _) => Some(Vault::Stored(s)),
            (None, Some(f)) => Some(Vault::File(f)),
            (None, None) => None,
        };
        flag(
            "ansible-encrypt-extra-vars",
            &self.ansible_encrypt_extra_vars,
            false,
            at_import,
        )?;
        Ok(AnsibleRun {
            mode,
            inventory,
            extra_vars: self
                .ansible_extra_vars
                .clone()
                .filter(|v| !v.trim().is_empty()),
            extra_params,
            limit,
            disable_limit,
            user: owned(&self.ansible_ssh_user),
            auth,
            timeout,
            become_,
            vault,
            base_dir: owned(&self.ansible_base_dir_path),
            binaries_dir: owned(&self.ansible_binaries_dir_path),
            config_file: owned(&self.ansible_config_file_path),
            debug: flag("ansible-debug", &self.ansible_debug, false, at_import)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], at_import: bool) -> String {
        let config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match AnsibleConfig::from_map(&config).and_then(|c| c.run(at_import)) {
            Ok(run) => format!("{run:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// A node step takes its inventory from the run's nodes unless it
    /// gives one; `ansible-generate-inventory` asks for them either way.
    #[test]
    fn a_node_step_reads_its_inventory_from_the_nodes_by_default() {
        let inventory = |pairs: &[(&str, &str)]| {
            let config: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            AnsibleConfig::from_map(&config)
                .and_then(|c| c.run_for(true, true))
                .map(|r| r.inventory)
        };
        let book = ("ansible-playbook", "/srv/site.yml");
        assert_eq!(inventory(&[book]), Ok(Some(Inventory::FromNodes)));
        assert_eq!(
            inventory(&[book, ("ansible-inventory", "/etc/hosts.ini")]),
            Ok(Some(Inventory::Path("/etc/hosts.ini".into())))
        );
        assert_eq!(
            inventory(&[
                book,
                ("ansible-inventory", "/etc/hosts.ini"),
                ("ansible-generate-inventory", "true")
            ]),
            Ok(Some(Inventory::FromNodes))
        );
    }

    /// Each configuration beside what it runs, or why it is refused.
    #[test]
    fn configurations_read_as_the_plugin_reads_them() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("ansible-playbook", "/srv/site.yml")], false),
            // A path wins over inline, as the plugin's order has it.
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-playbook-inline", "- hosts: all"),
                    ("ansible-module", "ping"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-module", "shell"),
                    ("ansible-module-args", "uptime"),
                    ("ansible-inventory", "/etc/ansible/hosts"),
                    ("ansible-inventory-inline", "web1 ansible_host=10.0.0.1"),
                    ("ansible-limit", "web*"),
                    ("ansible-ssh-user", "deploy"),
                    ("ansible-ssh-key-storage-path", "keys/ansible/id"),
                    ("ansible-ssh-keypath", "/home/r/.ssh/id"),
                    ("ansible-ssh-timeout", "15"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook-inline", "- hosts: all\n  tasks: []\n"),
                    ("ansible-extra-vars", "version: ${option.version}\n"),
                    ("ansible-extra-param", "--forks 5 -e 'a=b c'"),
                    ("ansible-limit", "web1"),
                    ("ansible-disable-limit", "true"),
                    ("ansible-ssh-auth-type", "password"),
                    ("ansible-ssh-password-storage-path", "keys/ansible/pw"),
                    ("ansible-become", "true"),
                    ("ansible-become-method", "sudo"),
                    ("ansible-become-user", "root"),
                    ("ansible-become-password-storage-path", "keys/ansible/sudo"),
                    ("ansible-vault-storage-path", "keys/ansible/vault"),
                    ("ansible-vault-path", "/etc/vault-pass"),
                    ("ansible-encrypt-extra-vars", "true"),
                    ("ansible-debug", "true"),
                ],
                false,
            ),
            // A reference is checked once expanded, not at import.
            (
                &[
                    ("ansible-playbook", "${option.book}"),
                    ("ansible-become", "${option.become}"),
                    ("ansible-ssh-timeout", "${option.t}"),
                ],
                true,
            ),
            (&[], false),
            (&[("ansible-playbok", "/srv/site.yml")], false),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-generate-inventory", "true"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-use-agent", "true"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-password-option", "option.pw"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-key-storage-path", "keys/${option.who}/id"),
                ],
                true,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-auth-type", "password"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-auth-type", "kerberos"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-become", "yes"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-become", "true"),
                    ("ansible-become-method", "sudoo"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-extra-param", "-e 'open"),
                ],
                false,
            ),
            (
                &[
                    ("ansible-playbook", "/srv/site.yml"),
                    ("ansible-ssh-timeout", "soon"),
                ],
                false,
            ),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(pairs, at_import)| {
                format!(
                    "{pairs:?} (at import: {at_import})\n=> {}",
                    read(pairs, *at_import)
                )
            })
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }

    #[test]
    fn storage_path_keys_are_listed_for_the_runner() {
        let config: BTreeMap<String, String> = [
            ("ansible-playbook", "/srv/site.yml"),
            ("ansible-ssh-key-storage-path", "keys/a/id"),
            ("ansible-vault-storage-path", " "),
            ("ansible-become-password-storage-path", "keys/a/sudo"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            stored_keys(&config),
            [
                "ansible-ssh-key-storage-path",
                "ansible-become-password-storage-path"
            ]
        );
    }
}
