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
    stored: &[String],
    key_store: &Path,
    lines: mpsc::Sender<LogEntry>,
    secrets: &Secrets,
) -> Result<RunningStep, ExecError> {
    // A configuration error quotes what the references expanded to.
    let refuse = |why: String| ExecError::Plugin(secrets.mask_str(&why));
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
