//! Rundeck's Copy File step (`copyfile`): files from the runner to a node,
//! over SFTP on the node's SSH session, or on the runner's own host for a
//! `node-executor: local` node (and a job without nodes). What is copied,
//! where, and what the step prints follow Rundeck's `CopyFileNodeStepPlugin`
//! (docs/research/rundeck-http-copyfile-allowlist.md §2): a trailing `/`
//! keeps the file's name, `recursive` copies the directory itself, a
//! `pattern` picks files under it (none matching is success). Files land
//! 0644 and directories 0755, as Rundeck's SSH copiers leave them.

use std::path::{Path, PathBuf};

use outpost_schemas::job::copyfile::{ant_pattern, CopyFile};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::executor::{Exit, PluginOutput};

const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// Where the files go.
pub enum Target {
    /// This host's file system.
    Local,
    /// A node's, through its SFTP subsystem.
    Sftp(russh_sftp::client::SftpSession),
}

/// One thing to create on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Dir(String),
    File {
        from: PathBuf,
        to: String,
        size: u64,
    },
}

/// What `copy` puts where, read from the runner's file system; an error
/// is the step's failure, in the plugin's words where it has them.
pub fn plan(copy: &CopyFile) -> Result<Vec<Item>, String> {
    let source = Path::new(&copy.source);
    let meta = std::fs::metadata(source).map_err(|e| format!("sourcePath {}: {e}", copy.source))?;
    let dest_dir = match copy.destination.ends_with('/') {
        true => copy.destination.clone(),
        false => format!("{}/", copy.destination),
    };
    let file = |from: PathBuf, to: String| -> Result<Item, String> {
        let size = std::fs::metadata(&from)
            .map_err(|e| format!("{}: {e}", from.display()))?
            .len();
        Ok(Item::File { from, to, size })
    };
    if copy.recursive || copy.pattern.is_some() {
        if !meta.is_dir() {
            return Err(format!("sourcePath has to be a directory: {}", copy.source));
        }
        let under = walk(source)?;
        let Some(pattern) = &copy.pattern else {
            // The directory itself, under the destination.
            let name = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let root = format!("{dest_dir}{name}");
            let mut items = vec![Item::Dir(root.clone())];
            for (rel, is_dir) in under {
                let to = format!("{root}/{rel}");
                items.push(match is_dir {
                    true => Item::Dir(to),
                    false => file(source.join(&rel), to)?,
                });
            }
            return Ok(items);
        };
        let matcher = ant_pattern(pattern)?;
        let mut items = Vec::new();
        for (rel, is_dir) in under {
            if !matcher.is_match(&rel) || (is_dir && !copy.recursive) {
                continue;
            }
            let to = format!("{dest_dir}{rel}");
            items.push(match is_dir {
                true => Item::Dir(to),
                false => file(source.join(&rel), to)?,
            });
        }
        return Ok(items);
    }
    if meta.is_dir() {
        return Err(format!(
            "sourcePath is a directory: {} (set recursive, or a pattern)",
            copy.source
        ));
    }
    let to = match copy.destination.ends_with('/') {
        true => format!(
            "{}{}",
            copy.destination,
            source.file_name().unwrap_or_default().to_string_lossy()
        ),
        false => copy.destination.clone(),
    };
    Ok(vec![file(source.to_path_buf(), to)?])
}

/// Every file and directory under `root`, relative and `/`-separated,
/// parents before children, in name order; symbolic links followed, as
/// Ant's scanner follows them.
fn walk(root: &Path) -> Result<Vec<(String, bool)>, String> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let path = rel.join(e.file_name());
            let is_dir = std::fs::metadata(e.path())
                .map(|m| m.is_dir())
                .unwrap_or(false);
            out.push((path.to_string_lossy().replace('\\', "/"), is_dir));
            if is_dir {
                subdirs.push(path);
            }
        }
        todo.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// Copies `copy` to `target` for `node`, printing as the plugin prints.
pub async fn run(
    copy: CopyFile,
    target: Target,
    node: String,
    mut out: PluginOutput,
    stop: CancellationToken,
) -> Exit {
    let exit = tokio::select! {
        exit = copy_all(&copy, &target, &node, &mut out) => exit,
        _ = stop.cancelled() => Exit::Killed,
    };
    if let Target::Sftp(sftp) = target {
        let _ = sftp.close().await;
    }
    exit
}

async fn copy_all(copy: &CopyFile, target: &Target, node: &str, out: &mut PluginOutput) -> Exit {
    let items = match plan(copy) {
        Ok(items) => items,
        Err(why) => return Exit::Failed(format!("CopyFileFailed: {why}")),
    };
    let files = items
        .iter()
        .filter(|i| matches!(i, Item::File { .. }))
        .count();
    let header = match &items[..] {
        _ if copy.pattern.is_some() && files == 0 => Some("No matching files".to_string()),
        _ if !copy.echo => None,
        _ if copy.pattern.is_some() || copy.recursive => {
            Some(format!("Begin copy {files} files to node {node}"))
        }
        [Item::File { size, to, .. }] => Some(format!(
            "Begin copy {size} bytes to node {node}: {} -> {to}",
            copy.source
        )),
        _ => None,
    };
    if let Some(line) = header {
        let _ = out.stdout.write_all(format!("{line}\n").as_bytes()).await;
    }
    for item in &items {
        let done = match item {
            Item::Dir(dir) => make_dirs(target, dir).await.map(|_| None),
            Item::File { from, to, .. } => put(target, from, to).await.map(|_| Some(to)),
        };
        match done {
            Ok(Some(to)) if copy.echo => {
                let _ = out
                    .stdout
                    .write_all(format!("Copied: {to}\n").as_bytes())
                    .await;
            }
            Ok(_) => {}
            Err(why) => {
                let _ = out
                    .stderr
                    .write_all(format!("failed: {why}\n").as_bytes())
                    .await;
                return Exit::Failed(format!("CopyFileFailed: {why}"));
            }
        }
    }
    Exit::Code(0)
}

/// `mkdir -p`, each new directory 0755.
async fn make_dirs(target: &Target, dir: &str) -> Result<(), String> {
    match target {
        Target::Local => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            set_mode_local(dir, DIR_MODE)
        }
        Target::Sftp(sftp) => {
            let mut path = String::new();
            for part in dir.split('/') {
                if part.is_empty() {
                    if path.is_empty() {
                        path.push('/');
                    }
                    continue;
                }
                if !path.is_empty() && !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(part);
                match sftp.metadata(path.clone()).await {
                    Ok(m) if m.is_dir() => continue,
                    Ok(_) => return Err(format!("{path}: exists and is not a directory")),
                    Err(_) => {}
                }
                sftp.create_dir(path.clone())
                    .await
                    .map_err(|e| format!("cannot create {path}: {e}"))?;
                set_mode_sftp(sftp, &path, DIR_MODE).await?;
            }
            Ok(())
        }
    }
}

async fn put(target: &Target, from: &Path, to: &str) -> Result<(), String> {
    if let Some((parent, _)) = to.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
        make_dirs(target, parent).await?;
    }
    match target {
        Target::Local => {
            std::fs::copy(from, to).map_err(|e| format!("{} -> {to}: {e}", from.display()))?;
            set_mode_local(to, FILE_MODE)
        }
        Target::Sftp(sftp) => {
            let mut src = tokio::fs::File::open(from)
                .await
                .map_err(|e| format!("{}: {e}", from.display()))?;
            let mut dst = sftp
                .create(to.to_string())
                .await
                .map_err(|e| format!("cannot create {to}: {e}"))?;
            tokio::io::copy(&mut src, &mut dst)
                .await
                .map_err(|e| format!("{to}: {e}"))?;
            dst.shutdown().await.map_err(|e| format!("{to}: {e}"))?;
            set_mode_sftp(sftp, to, FILE_MODE).await
        }
    }
}

fn set_mode_local(path: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{path}: {e}"))
}

async fn set_mode_sftp(
    sftp: &russh_sftp::client::SftpSession,
    path: &str,
    mode: u32,
) -> Result<(), String> {
    let attrs = russh_sftp::protocol::FileAttributes {
        permissions: Some(mode),
        ..russh_sftp::protocol::FileAttributes::empty()
    };
    sftp.set_metadata(path.to_string(), attrs)
        .await
        .map_err(|e| format!("cannot set the mode of {path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each configuration, over one source tree, beside what it copies
    /// where (or why not), as the plugin decides it.
    #[test]
    fn what_is_copied_where_follows_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("app");
        std::fs::create_dir_all(src.join("conf/extra")).unwrap();
        std::fs::write(src.join("run.sh"), "echo").unwrap();
        std::fs::write(src.join("conf/a.conf"), "a=1").unwrap();
        std::fs::write(src.join("conf/extra/b.conf"), "b").unwrap();
        std::fs::write(src.join("conf/readme.txt"), "r").unwrap();
        let root = dir.path().to_string_lossy().into_owned();
        let copy = |source: &str, dest: &str, pattern: Option<&str>, recursive: bool| CopyFile {
            source: format!("{root}/{source}"),
            destination: dest.into(),
            pattern: pattern.map(str::to_string),
            recursive,
            echo: true,
        };
        let cases = [
            copy("app/run.sh", "/opt/bin/", None, false),
            copy("app/run.sh", "/opt/bin/start.sh", None, false),
            copy("app", "/opt", None, true),
            copy("app", "/etc/app/", Some("**/*.conf"), false),
            copy("app", "/etc/app", Some("conf/*"), true),
            copy("app", "/etc/app", Some("*.none"), false),
            copy("app/run.sh", "/opt", Some("*"), false),
            copy("app", "/opt", None, false),
            copy("nothere", "/opt", None, false),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| {
                let what = match plan(c) {
                    Ok(items) => items
                        .iter()
                        .map(|i| match i {
                            Item::Dir(d) => format!("  dir {d}"),
                            Item::File { from, to, size } => format!(
                                "  file {} -> {to} ({size} bytes)",
                                from.strip_prefix(&root).unwrap().display()
                            ),
                        })
                        .collect::<Vec<_>>()
                        .join("\n"),
                    Err(e) => format!("  error: {}", e.replace(&root, "<tmp>")),
                };
                format!(
                    "{} -> {} pattern={:?} recursive={}\n{what}",
                    c.source.replace(&root, "<tmp>"),
                    c.destination,
                    c.pattern,
                    c.recursive
                )
            })
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }
}
