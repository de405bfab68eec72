//! Rundeck's Ansible workflow steps, run as the plugin runs them: one
//! `ansible-playbook` (or `ansible all -m`) process with the arguments of
//! the plugin's `AnsibleRunner` (see `docs/research/rundeck-ansible-plugin.md`
//! §4), in its own process group like any step, its output read line by
//! line as it comes.
//!
//! Credentials from the key store go into files of a private scratch
//! directory (0700, each file 0600) that is removed when the step ends.
//! Passwords reach Ansible as `!unsafe` extra vars, never as arguments,
//! which every local user can read in /proc.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use outpost_schemas::job::ansible::{
    AnsibleConfig, AnsibleMode, AnsibleRun, Inventory, SshAuth, Vault, DEFAULT_EXECUTABLE,
    EXECUTABLE_KEY, NODE_EXECUTOR, NODE_EXECUTOR_KEYS,
};
use outpost_schemas::job::NOT_SUPPORTED_YET;
use outpost_schemas::{LogEntry, StepCommand};
use tokio::sync::mpsc;

use crate::executor::{spawn_program, AfterExit, ExecError, RunningStep};
use crate::mask::Secrets;

/// The credentials a run needs, read from the key store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub private_key: Option<String>,
    pub ssh_password: Option<String>,
    pub become_password: Option<String>,
    pub vault_password: Option<String>,
}

/// The process to start and the files it reads, all named relative to the
/// scratch directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// (file name in the scratch directory, content).
    pub files: Vec<(String, String)>,
    /// Where it runs; the scratch directory when none is set.
    pub cwd: Option<PathBuf>,
}

/// The directory under the scratch directory where Ansible keeps its SSH
/// control sockets, so that the masters it leaves behind (they detach,
/// so a process-group kill misses them) are found and closed.
pub const CONTROL_DIR: &str = "cp";

/// Builds the command line in the plugin's order. `scratch` is where the
/// files of [`Invocation::files`] will be; `from_nodes` is the inventory
/// written from a node step's nodes ([`inventory_of`]).
pub fn invocation(
    run: &AnsibleRun,
    creds: &Credentials,
    from_nodes: Option<&str>,
    scratch: &Path,
) -> Invocation {
    let mut files = Vec::new();
    let mut file = |name: &str, content: String| {
        files.push((name.to_string(), content));
        scratch.join(name).to_string_lossy().into_owned()
    };
    let bin = |name: &str| match &run.binaries_dir {
        Some(dir) => Path::new(dir).join(name),
        None => PathBuf::from(name),
    };
    let mut args = Vec::new();
    let program = match &run.mode {
        AnsibleMode::Playbook(path) => {
            args.push(path.clone());
            bin("ansible-playbook")
        }
        AnsibleMode::Inline(text) => {
            args.push(file("playbook.yml", text.clone()));
            bin("ansible-playbook")
        }
        AnsibleMode::Module { module, args: a } => {
            args.extend(["all".into(), "-m".into(), module.clone()]);
            if let Some(a) = a {
                args.extend(["-a".into(), a.clone()]);
            }
            bin("ansible")
        }
        AnsibleMode::Shell {
            script,
            args: a,
            executable,
        } => {
            let vars = [
                unsafe_var(
                    "outpost_cmd",
                    &shell_wrapper(script, a.as_deref(), executable),
                ),
                unsafe_var("outpost_stdin", script),
                // Modules log their arguments to the node's syslog, and
                // the script holds the step's values.
                "ansible_no_target_syslog: true\n".to_string(),
            ]
            .concat();
            let vars = file("command-vars.yml", vars);
            // `-a` that starts with `{` is read as JSON. Ends are kept, so
            // that Ansible's failure message does not run on from the
            // command's last line.
            args.extend([
                "all".into(),
                "-m".into(),
                "shell".into(),
                "-a".into(),
                r#"{"cmd": "{{ outpost_cmd }}", "stdin": "{{ outpost_stdin }}", "stdin_add_newline": false, "strip_empty_ends": false}"#.into(),
                format!("--extra-vars=@{vars}"),
            ]);
            bin("ansible")
        }
    };
    match &run.inventory {
        Some(Inventory::Path(p)) => args.extend(["-i".into(), p.clone()]),
        Some(Inventory::Inline(text)) => {
            let path = file("inventory", text.clone());
            args.extend(["-i".into(), path]);
        }
        // Ansible's yaml inventory plugin reads JSON by its extension.
        Some(Inventory::FromNodes) => {
            let path = file("inventory.json", from_nodes.unwrap_or("{}").to_string());
            args.extend(["-i".into(), path]);
        }
        None => {}
    }
    if let Some(limit) = &run.limit {
        args.extend(["-l".into(), limit.clone()]);
    }
    if run.debug {
        args.push("-vvv".into());
    }
    if let Some(vars) = &run.extra_vars {
        args.push(format!(
            "--extra-vars=@{}",
            file("extra-vars.yml", vars.clone())
        ));
    }
    let key_file = match (&run.auth, &creds.private_key) {
        (SshAuth::StoredKey(_), Some(key)) => {
            // ssh refuses a key with CRLF line ends or without a final one.
            let mut key = key.replace("\r\n", "\n");
            if !key.ends_with('\n') {
                key.push('\n');
            }
            Some(file("id", key))
        }
        (SshAuth::KeyFile(path), _) => Some(path.clone()),
        _ => None,
    };
    if let Some(k) = key_file {
        args.push(format!("--private-key={k}"));
    }
    if let Some(user) = &run.user {
        args.push(format!("--user={user}"));
    }
    if let (SshAuth::StoredPassword(_), Some(pw)) = (&run.auth, &creds.ssh_password) {
        let vars = unsafe_var("ansible_password", pw);
        args.push(format!(
            "--extra-vars=@{}",
            file("ssh-extra-vars.yml", vars)
        ));
    }
    if let Some(t) = run.timeout {
        args.push(format!("--timeout={t}"));
    }
    if let Some(b) = &run.become_ {
        args.push("--become".into());
        if let (Some(_), Some(pw)) = (&b.password, &creds.become_password) {
            let vars = unsafe_var("ansible_become_password", pw);
            args.push(format!(
                "--extra-vars=@{}",
                file("become-extra-vars.yml", vars)
            ));
        }
        if let Some(m) = &b.method {
            args.push(format!("--become-method={m}"));
        }
        if let Some(u) = &b.user {
            args.push(format!("--become-user={u}"));
        }
    }
    args.extend(run.extra_params.iter().cloned());
    match (&run.vault, &creds.vault_password) {
        (Some(Vault::Stored(_)), Some(pw)) => {
            let path = file("vault-password", format!("{pw}\n"));
            args.push(format!("--vault-password-file={path}"));
        }
        (Some(Vault::File(path)), _) => args.push(format!("--vault-password-file={path}")),
        _ => {}
    }
    let mut env = BTreeMap::new();
    // Python buffers a pipe; unbuffered, each line is read as it is written.
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.insert(
        "ANSIBLE_SSH_CONTROL_PATH_DIR".into(),
        scratch.join(CONTROL_DIR).to_string_lossy().into_owned(),
    );
    if let Some(c) = &run.config_file {
        env.insert("ANSIBLE_CONFIG".into(), c.clone());
    }
    Invocation {
        program,
        args,
        env,
        files,
        cwd: run.base_dir.as_ref().map(PathBuf::from),
    }
}

/// The node executor's command, in POSIX sh (the shell module's
/// default): it writes the script, which comes on its stdin, to a file
/// only the login (or become) user reads, runs it with `args`, and removes
/// it when it ends (by a signal too, but for SIGKILL). The script runs by its `#!` line, or without one
/// under `executable` (`ansible-executable`), as the plugin's
/// `executable=` runs it. Its stderr goes with its stdout, in order:
/// Ansible prints both as one block anyway.
fn shell_wrapper(script: &str, args: Option<&str>, executable: &str) -> String {
    use crate::executor::shell_quote;
    let run = match script.starts_with("#!") {
        true => "\"$f\"".to_string(),
        false => format!("{} \"$f\"", shell_quote(executable)),
    };
    // After the traps: whatever the args hold (a `#`, a `;`), the file is
    // removed.
    let args = args.map(|a| format!(" {a}")).unwrap_or_default();
    format!(
        "f=$(mktemp \"${{HOME:-/tmp}}/.outpost-script.XXXXXX\" 2>/dev/null || mktemp) || exit 127\n\
         trap 'rm -f \"$f\"' EXIT\n\
         trap 'exit 129' HUP\n\
         trap 'exit 130' INT\n\
         trap 'exit 143' TERM\n\
         cat >\"$f\" && chmod 700 \"$f\" || exit 126\n\
         exec 2>&1\n\
         {run}{args}\n"
    )
}

/// Reads the run's credentials from the key store, and `secrets` with
/// each password read added (masked in the output). `may_read(key)` says
/// whether the storage path under `key` is one to trust: a job's, as it
/// wrote it; a node's, from the runner's own node source.
pub fn credentials(
    run: &AnsibleRun,
    key_store: &Path,
    may_read: impl Fn(&str) -> bool,
    secrets: &Secrets,
) -> Result<(Credentials, Secrets), String> {
    let read = |key: &str, path: &str| {
        if !may_read(key) {
            return Err(format!(
                "configuration.{key}: not a storage path as the job wrote it"
            ));
        }
        crate::node_run::read_stored(key_store, path)
            .map_err(|why| format!("configuration.{key} {path}: {why}"))
    };
    let mut creds = Credentials::default();
    match &run.auth {
        SshAuth::StoredKey(p) => creds.private_key = Some(read("ansible-ssh-key-storage-path", p)?),
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
    Ok((creds, secrets))
}

/// Runs an exec or script step on `scope.node` through Rundeck's Ansible
/// node executor (its `node-executor`): `ansible all -m shell -l
/// <nodename>` over the run's nodes, its configuration from the node's
/// `ansible-*` attributes ([`NODE_EXECUTOR_KEYS`]), as the plugin runs it.
/// An exec step becomes a script of `ansible-executable` with the step's
/// `RD_*` exported first; a script step's body goes as it is, with its
/// args. Its output is what Ansible prints for a shell task: a
/// `node | CHANGED | rc=0 >>` line, then the command's stdout and stderr,
/// once the command has ended.
pub fn start_executor(
    command: &StepCommand,
    scope: super::NodeScope<'_>,
    place: &super::Place<'_>,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let node = scope.node;
    let refuse = |why: String| {
        ExecError::Plugin(secrets.mask_str(&format!(
            "node {} (node-executor {NODE_EXECUTOR}): {why}",
            node.nodename
        )))
    };
    let mut config: BTreeMap<String, String> = node
        .attributes
        .iter()
        .filter(|(k, _)| NODE_EXECUTOR_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if node
        .attributes
        .get("osFamily")
        .is_some_and(|os| os.to_lowercase().contains("windows"))
    {
        return Err(refuse(format!(
            "{NOT_SUPPORTED_YET}: Windows nodes through Ansible (win_shell)"
        )));
    }
    let executable = node
        .attributes
        .get(EXECUTABLE_KEY)
        .filter(|e| !e.trim().is_empty())
        .map_or(DEFAULT_EXECUTABLE, |e| e.as_str())
        .to_string();
    // A mode, which the command replaces below.
    config.insert("ansible-module".into(), "shell".into());
    let mut run = AnsibleConfig::from_map(&config)
        .and_then(|c| c.run_for(false, true))
        .map_err(refuse)?;
    run.mode = match command {
        StepCommand::Exec { command } => {
            let exports: String = place
                .env
                .iter()
                .map(|(k, v)| format!("export {k}={}\n", crate::executor::shell_quote(v)))
                .collect();
            AnsibleMode::Shell {
                script: format!("#!{executable}\n{exports}{command}\n"),
                args: None,
                executable,
            }
        }
        StepCommand::Script {
            script,
            args,
            interpreter: None,
            ..
        } => AnsibleMode::Shell {
            script: script.clone(),
            args: args.clone().filter(|a| !a.trim().is_empty()),
            executable,
        },
        StepCommand::Script { .. } => {
            return Err(refuse(format!(
                "{NOT_SUPPORTED_YET}: a script step with scriptInterpreter through Ansible (give the script a #! line instead)"
            )))
        }
        // They run on the runner, before a node executor is chosen.
        StepCommand::LocalExec { .. } | StepCommand::Plugin { .. } => {
            return Err(refuse("only exec and script steps go through a node executor".into()))
        }
    };
    run.inventory = Some(Inventory::FromNodes);
    run.limit = Some(node.nodename.clone());
    // The node's storage paths come from the runner's own node source.
    let (creds, secrets) = credentials(&run, place.key_store, |_| true, secrets).map_err(refuse)?;
    let inventory = inventory_of(scope.nodes);
    start(&run, &creds, Some(&inventory), place, lines, &secrets)
}

/// Writes the run's files into a fresh private directory under the work
/// dir and starts Ansible there.
pub fn start(
    run: &AnsibleRun,
    creds: &Credentials,
    from_nodes: Option<&str>,
    place: &super::Place<'_>,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    let fail = |what: &str, e: std::io::Error| ExecError::Plugin(format!("{what}: {e}"));
    // tempfile makes it 0700.
    let scratch = tempfile::Builder::new()
        .prefix("ansible-")
        .tempdir_in(place.work_dir)
        .map_err(|e| fail("cannot make the Ansible scratch directory", e))?;
    let inv = invocation(run, creds, from_nodes, scratch.path());
    std::fs::create_dir(scratch.path().join(CONTROL_DIR))
        .map_err(|e| fail("cannot make the SSH control directory", e))?;
    for (name, content) in &inv.files {
        write_private(&scratch.path().join(name), content)
            .map_err(|e| fail(&format!("cannot write {name}"), e))?;
    }
    let mut env = place.env.clone();
    env.extend(inv.env.clone());
    let cwd = inv
        .cwd
        .clone()
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let control = scratch.path().join(CONTROL_DIR);
    let after: AfterExit = Box::new(move || {
        close_masters(&control);
        drop(scratch);
    });
    spawn_program(&inv.program, &inv.args, &env, &cwd, after, lines, secrets)
}

/// The inventory Rundeck's plugin generates from nodes
/// (`AnsibleInventoryBuilder`): every node under `all.hosts` by its
/// nodename, with `ansible_host` (and `ansible_port`) from its address and
/// its attributes as host vars; a group per tag and per `osFamily`,
/// lowercased, anything outside `[a-z0-9_-]` made `_`. Ansible's reserved
/// names and the attributes that locate credentials are left out. The
/// node's `username` is a host var, not `ansible_user`, as in the plugin:
/// the step's `ansible-ssh-user` says whom Ansible logs in as.
pub fn inventory_of(nodes: &[outpost_schemas::node::Node]) -> String {
    use serde_json::{json, Map, Value};
    const RESERVED: &[&str] = &["hostvars", "group_names", "groups", "environment", "tags"];
    let group = |name: &str| -> String {
        name.to_lowercase()
            .chars()
            .map(|c| match c {
                'a'..='z' | '0'..='9' | '_' | '-' => c,
                _ => '_',
            })
            .collect()
    };
    let mut hosts = Map::new();
    let mut children: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for node in nodes {
        let mut vars = Map::new();
        for (k, v) in &node.attributes {
            if RESERVED.contains(&k.as_str()) || outpost_schemas::node::is_credential_attribute(k) {
                continue;
            }
            // JSON-looking values are read as JSON, as the plugin does.
            let value = match v.trim_start().chars().next() {
                Some('{' | '[') => serde_json::from_str(v).unwrap_or(Value::String(v.clone())),
                _ => Value::String(v.clone()),
            };
            vars.insert(k.clone(), value);
        }
        if let Some(u) = &node.username {
            vars.insert("username".into(), json!(u));
        }
        vars.insert("ansible_host".into(), json!(node.hostname));
        if node.executor() == "local" {
            // The runner's own host, as for any step on such a node.
            vars.insert("ansible_connection".into(), json!("local"));
        }
        if let Some(port) = node.port {
            vars.insert("ansible_port".into(), json!(port));
        }
        hosts.insert(node.nodename.clone(), Value::Object(vars));
        let os = node.attributes.get("osFamily").into_iter();
        for g in node.tags.iter().chain(os) {
            children
                .entry(group(g))
                .or_default()
                .insert(node.nodename.clone(), json!({}));
        }
    }
    let children: Map<String, Value> = children
        .into_iter()
        .map(|(g, members)| (g, json!({ "hosts": members })))
        .collect();
    serde_json::to_string_pretty(&json!({"all": {"hosts": hosts, "children": children}}))
        .expect("json")
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

/// SSH control masters detach into their own session, so neither the
/// process-group kill nor Ansible's exit ends them; each is told to exit
/// through its socket.
fn close_masters(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let _ = std::process::Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", entry.path().display()))
            .args(["-O", "exit", "outpost-cleanup"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether `ansible-playbook` is on the runner's PATH: without it the
/// runner does not offer the Ansible steps.
pub fn installed() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join("ansible-playbook"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// `name: !unsafe "value"`: YAML that Ansible neither templates (a
/// password may hold `{{`) nor reads as anything but text.
fn unsafe_var(name: &str, value: &str) -> String {
    format!(
        "{name}: !unsafe {}\n",
        serde_json::to_string(value).expect("text serialises")
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use outpost_schemas::job::ansible::AnsibleConfig;

    use super::*;

    fn run(pairs: &[(&str, &str)]) -> AnsibleRun {
        let config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AnsibleConfig::from_map(&config)
            .unwrap()
            .run(false)
            .unwrap()
    }

    /// Each configuration beside the command line, environment and files
    /// it makes.
    #[test]
    fn command_lines_follow_the_plugins_order() {
        let creds = Credentials {
            private_key: Some("-----BEGIN KEY-----\r\nabc\r\n-----END KEY-----".into()),
            ssh_password: Some("p\"w {{ x }}".into()),
            become_password: Some("sudo-pw".into()),
            vault_password: Some("vault-pw".into()),
        };
        let cases: &[&[(&str, &str)]] = &[
            &[("ansible-playbook", "/srv/site.yml")],
            &[
                ("ansible-playbook-inline", "- hosts: all\n  tasks: []\n"),
                ("ansible-inventory-inline", "web1 ansible_host=10.0.0.1\n"),
                ("ansible-limit", "web1"),
                ("ansible-extra-vars", "version: '1.2'\n"),
                ("ansible-ssh-user", "deploy"),
                ("ansible-ssh-key-storage-path", "keys/ansible/id"),
                ("ansible-ssh-timeout", "15"),
                ("ansible-become", "true"),
                ("ansible-become-method", "sudo"),
                ("ansible-become-user", "root"),
                ("ansible-become-password-storage-path", "keys/ansible/sudo"),
                ("ansible-extra-param", "--forks 5 -e 'a=b c'"),
                ("ansible-vault-storage-path", "keys/ansible/vault"),
                ("ansible-binaries-dir-path", "/opt/ansible/bin"),
                ("ansible-base-dir-path", "/srv/ansible"),
                ("ansible-config-file-path", "/srv/ansible/ansible.cfg"),
                ("ansible-debug", "true"),
            ],
            &[
                ("ansible-module", "shell"),
                ("ansible-module-args", "uptime"),
                ("ansible-inventory", "/etc/ansible/hosts"),
                ("ansible-ssh-auth-type", "password"),
                ("ansible-ssh-password-storage-path", "keys/ansible/pw"),
                ("ansible-limit", "web*"),
                ("ansible-disable-limit", "true"),
                ("ansible-vault-path", "/etc/vault-pass"),
            ],
        ];
        let mut got: Vec<String> = cases
            .iter()
            .map(|pairs| {
                let inv = invocation(&run(pairs), &creds, None, Path::new("/scratch"));
                format!("{pairs:?}\n=> {inv:#?}")
            })
            .collect();
        // The node executor's command, on a generated inventory.
        let mut shell = run(&[("ansible-module", "shell"), ("ansible-ssh-user", "deploy")]);
        shell.mode = AnsibleMode::Shell {
            script: "#!/bin/bash\necho \"{{ not templated }}\" $RD_NODE_NAME\n".into(),
            args: Some("'a b' c".into()),
            executable: "/bin/bash".into(),
        };
        shell.inventory = Some(Inventory::FromNodes);
        shell.limit = Some("web1".into());
        let inv = invocation(&shell, &creds, Some("{}"), Path::new("/scratch"));
        got.push(format!("node executor\n=> {inv:#?}"));
        insta::assert_snapshot!(got.join("\n\n"));
    }
}
