//! Integration plugins the runner runs in-process, with Rundeck's type
//! names: each reads its configuration again here, once references are
//! expanded, writes its output as a process would, and ends what it
//! started when the step is aborted or times out.

use std::collections::BTreeMap;
use std::path::Path;

use outpost_schemas::job::http::{HttpRequestConfig, TYPES as HTTP_TYPES};
use outpost_schemas::LogEntry;
use tokio::sync::mpsc;

use crate::executor::{spawn_task, ExecError, RunningStep};
use crate::mask::Secrets;

mod http;

/// The plugin step types this runner can run, with the version of what
/// runs them (the runner's own, for the ones built in).
pub fn built() -> Vec<(&'static str, &'static str)> {
    HTTP_TYPES
        .iter()
        .map(|(t, _)| (*t, env!("CARGO_PKG_VERSION")))
        .collect()
}

/// Starts the plugin step `plugin`; a configuration that does not hold
/// once expanded, or a plugin this runner lacks, is an error naming it.
pub fn start(
    plugin: &str,
    config: &BTreeMap<String, String>,
    key_store: &Path,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    if HTTP_TYPES.iter().any(|(t, _)| *t == plugin) {
        let request = HttpRequestConfig::from_map(config)
            .and_then(|c| c.request(false))
            .map_err(ExecError::Plugin)?;
        let (key_store, masked) = (key_store.to_path_buf(), secrets.clone());
        return Ok(spawn_task(lines, secrets, move |out, stop| {
            http::run(request, key_store, masked, out, stop)
        }));
    }
    Err(ExecError::Plugin(format!(
        "this runner has no plugin `{plugin}`"
    )))
}
