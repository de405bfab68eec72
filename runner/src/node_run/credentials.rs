//! Where a node's credentials come from: the runner's key store (storage
//! paths below it, never outside) and the run's secure options.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use outpost_schemas::node::Node;

use crate::ssh::{self, SshAuth};

/// Resolves a node's SSH credentials from the runner's key store and the
/// run's authentication options, as Rundeck's SSH executor does: a
/// storage path wins; else the option the node names
/// (`ssh-password-option`, default `option.sshPassword`;
/// `ssh-key-passphrase-option`, default `option.sshKeyPassphrase`).
pub(super) fn credentials(
    node: &Node,
    key_store: &Path,
    auth: &BTreeMap<String, String>,
) -> Result<SshAuth, String> {
    let attr = |k: &str| node.attributes.get(k).map(String::as_str);
    // `option.NAME`, as Rundeck writes the reference.
    let option = |k: &str, default: &str| {
        let reference = attr(k).unwrap_or(default);
        let name = reference.strip_prefix("option.").unwrap_or(reference);
        auth.get(name).filter(|v| !v.is_empty()).cloned()
    };
    let stored = |path: &str, what: &str| -> Result<String, String> {
        read_stored(key_store, path)
            .map_err(|why| format!("cannot read the {what} at storage path `{path}`: {why}"))
    };
    let want_password = attr("ssh-authentication") == Some("password");
    match (
        want_password,
        attr("ssh-key-storage-path"),
        attr("ssh-password-storage-path"),
    ) {
        (false, Some(path), _) => {
            let passphrase = match attr("ssh-key-passphrase-storage-path") {
                Some(p) => Some(stored(p, "key passphrase")?),
                None => option("ssh-key-passphrase-option", "option.sshKeyPassphrase"),
            };
            let file = store_path(key_store, path)?;
            ssh::load_key(&file, passphrase.as_deref())
                .map(|k| SshAuth::Key(Arc::new(k)))
                .map_err(|_| format!("cannot load the key at storage path `{path}`"))
        }
        (_, _, Some(path)) => Ok(SshAuth::Password(stored(path, "password")?)),
        (true, _, None) => match option("ssh-password-option", "option.sshPassword") {
            Some(pw) => Ok(SshAuth::Password(pw)),
            // Rundeck's words.
            None => Err("SSH Password was not set: ssh-authentication is password, but neither ssh-password-storage-path nor the option ssh-password-option names (default option.sshPassword) gives one".into()),
        },
        (false, None, None) => {
            Err("no credentials: set ssh-key-storage-path or ssh-password-storage-path".into())
        }
    }
}

/// A key's text from the key store (a final newline dropped, as files
/// written with `echo` end); `path not found` when it is not there, as
/// Rundeck says.
pub(crate) fn read_stored(key_store: &Path, path: &str) -> Result<String, String> {
    let file = store_path(key_store, path)?;
    std::fs::read_to_string(&file)
        .map(|v| v.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "path not found".to_string(),
            _ => format!("cannot read it: {e}"),
        })
}

/// A storage path below the key store; `..` and absolute paths are refused.
pub(super) fn store_path(key_store: &Path, path: &str) -> Result<PathBuf, String> {
    let rel = Path::new(path.trim_start_matches("keys/"));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("storage path `{path}` leaves the key store"));
    }
    Ok(key_store.join(rel))
}
