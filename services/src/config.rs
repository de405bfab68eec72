//! Layered configuration for the `outpost` binary: defaults, then a TOML file
//! (`--config` / `OUTPOST_CONFIG`), then `OUTPOST_*` environment variables,
//! then flags. clap resolves flag-over-env; this module slots the file and
//! the defaults underneath.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_DOMAIN: &str = "hub";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4440";
pub const DEFAULT_DATA_DIR: &str = ".outpost";
/// The client config `outpost up` writes in its data dir; the CLI reads it
/// when no `--config` is given and it exists.
pub const CLIENT_CONFIG: &str = "outpost.toml";

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub nats_url: Option<String>,
    pub domain: Option<String>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub api_url: Option<String>,
    pub project: Option<String>,
    pub token: Option<String>,
    pub api_ca_file: Option<PathBuf>,
    pub nats_creds: Option<PathBuf>,
    pub nats_ca_file: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub gateway_url: Option<String>,
    pub gateway_ca_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub local_runner_work_dir: Option<PathBuf>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }
}

/// First of: flag-or-env (already merged by clap), file, default.
pub fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: impl FnOnce() -> T) -> T {
    flag_or_env.or(file).unwrap_or_else(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        assert_eq!(pick(Some(1), Some(2), || 3), 1);
        assert_eq!(pick(None, Some(2), || 3), 2);
        assert_eq!(pick(None::<i32>, None, || 3), 3);
    }

    #[test]
    fn unknown_file_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "nats_ur = 'x'\n").unwrap();
        let err = FileConfig::load(Some(&p)).unwrap_err().to_string();
        assert!(err.contains("nats_ur"), "{err}");
    }
}
