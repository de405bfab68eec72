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

use outpost_schemas::job::ansible::{AnsibleMode, AnsibleRun, Inventory, SshAuth, Vault};
use outpost_schemas::LogEntry;
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
/// files of [`Invocation::files`] will be.
pub fn invocation(run: &AnsibleRun, creds: &Credentials, scratch: &Path) -> Invocation {
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
    };
    match &run.inventory {
        Some(Inventory::Path(p)) => args.extend(["-i".into(), p.clone()]),
        Some(Inventory::Inline(text)) => {
            let path = file("inventory", text.clone());
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

/// Writes the run's files into a fresh private directory under the work
/// dir and starts Ansible there.
pub fn start(
    run: &AnsibleRun,
    creds: &Credentials,
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
    let inv = invocation(run, creds, scratch.path());
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
        let got: Vec<String> = cases
            .iter()
            .map(|pairs| {
                let inv = invocation(&run(pairs), &creds, Path::new("/scratch"));
                format!("{pairs:?}\n=> {inv:#?}")
            })
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }
}
