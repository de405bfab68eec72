//! Rundeck's Copy File node step (`copyfile`, in Rundeck's core): a file,
//! or a directory's files, from the host that runs the step (here the
//! runner) to each node. Its keys are the plugin's fields; see
//! `docs/research/rundeck-http-copyfile-allowlist.md` §2.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::config::{deferred, flag, from_map, text};

/// The step's configuration as a job export holds it: every value text.
/// The committed JSON Schema (`plugin_copyfile.v1.json`) is this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CopyFileConfig {
    /// A file or directory on the runner; required.
    pub source_path: Option<String>,
    /// Where on the node; required. A trailing `/` keeps the source's file
    /// name.
    pub destination_path: Option<String>,
    /// An Ant pattern (`**/*.txt`) of the files under `sourcePath` to copy.
    pub pattern: Option<String>,
    /// Copy the directory `sourcePath` with everything under it.
    pub recursive: Option<String>,
    /// Print what is copied (default true).
    pub echo: Option<String>,
}

/// The step type: (type, node step).
pub const TYPES: &[(&str, bool)] = &[("copyfile", true)];

/// What to copy, as the plugin decides it once the runner sees the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFile {
    pub source: String,
    pub destination: String,
    pub pattern: Option<String>,
    pub recursive: bool,
    pub echo: bool,
}

impl CopyFileConfig {
    /// Reads the configuration map (unknown keys are errors).
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map("the copyfile step", config)
    }

    /// Checks what can be checked before references expand (`at_import`),
    /// or everything (on the runner).
    pub fn copy(&self, at_import: bool) -> Result<CopyFile, String> {
        let source = text(&self.source_path)
            .ok_or("the copyfile step needs configuration.sourcePath")?
            .to_string();
        let destination = text(&self.destination_path)
            .ok_or("the copyfile step needs configuration.destinationPath")?
            .to_string();
        let pattern = text(&self.pattern).map(str::to_string);
        if let Some(p) = pattern.as_deref().filter(|p| !(at_import && deferred(p))) {
            ant_pattern(p)?;
        }
        Ok(CopyFile {
            source,
            destination,
            pattern,
            recursive: flag("recursive", &self.recursive, false, at_import)?,
            echo: flag("echo", &self.echo, true, at_import)?,
        })
    }
}

/// An Ant pattern as a glob: `*` and `?` within one path segment, `**`
/// any number of segments, and a pattern ending in `/` meaning `/**`, as
/// Ant's `DirectoryScanner` reads it.
pub fn ant_pattern(pattern: &str) -> Result<globset::GlobMatcher, String> {
    let mut p = pattern.trim().replace('\\', "/");
    if p.ends_with('/') {
        p.push_str("**");
    }
    globset::GlobBuilder::new(&p)
        .literal_separator(true)
        .backslash_escape(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("configuration.pattern: `{pattern}` is not an Ant pattern: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> String {
        let config: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match CopyFileConfig::from_map(&config).and_then(|c| c.copy(true)) {
            Ok(c) => format!("{c:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn configurations_read_as_the_plugin_reads_them() {
        let cases: &[&[(&str, &str)]] = &[
            &[("sourcePath", "/srv/app.tgz"), ("destinationPath", "/tmp/")],
            &[
                ("sourcePath", "/srv/conf"),
                ("destinationPath", "/etc/app"),
                ("pattern", "**/*.conf"),
                ("recursive", "true"),
                ("echo", "false"),
            ],
            &[("sourcePath", "/srv/a")],
            &[("destinationPath", "/tmp/")],
            &[
                ("sourcePath", "/a"),
                ("destinationPath", "/b"),
                ("mode", "0600"),
            ],
            &[
                ("sourcePath", "/a"),
                ("destinationPath", "/b"),
                ("pattern", "["),
            ],
            &[
                ("sourcePath", "${option.src}"),
                ("destinationPath", "/b"),
                ("recursive", "${option.r}"),
            ],
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| format!("{c:?}\n=> {}", read(c)))
            .collect();
        insta::assert_snapshot!(got.join("\n\n"));
    }

    #[test]
    fn ant_patterns_match_within_and_across_directories() {
        let m = |p: &str, path: &str| ant_pattern(p).unwrap().is_match(path);
        assert!(m("**/*.txt", "a.txt"));
        assert!(m("**/*.txt", "x/y/a.txt"));
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "x/a.txt"));
        assert!(m("conf/", "conf/a/b"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
    }
}
