//! Script steps' bodies: read from a file on the runner (`scriptfile`) or
//! fetched from a URL (`scripturl`), and their `@key@` tokens replaced, as
//! Rundeck does for inline scripts always and for the others with
//! `expandTokenInScriptFile`.
//!
//! Both happen on the runner: the file is in its network, the URL is
//! reached from it, and only it knows the secure values and the node.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::job::replace_tokens_with;
use outpost_schemas::{ScriptSource, StepCommand};

/// Largest script a step may read or fetch.
pub const MAX_SCRIPT_BYTES: usize = 4 << 20;
/// How long fetching a `scripturl` may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads or fetches the body of a script whose `source` names it. An
/// inline script, or an `exec` command, is returned as it is. The error is
/// one line for the step's log and reason.
pub async fn load(cmd: &StepCommand) -> Result<StepCommand, String> {
    let StepCommand::Script {
        source: Some(source),
        ..
    } = cmd
    else {
        return Ok(cmd.clone());
    };
    let body = match source {
        ScriptSource::File { path } => read_file(path).await?,
        ScriptSource::Url { url } => fetch(url).await?,
    };
    let mut loaded = cmd.clone();
    if let StepCommand::Script { script, .. } = &mut loaded {
        *script = body;
    }
    Ok(loaded)
}

async fn read_file(path: &str) -> Result<String, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read scriptfile {path}: {e}"))?;
    if meta.len() > MAX_SCRIPT_BYTES as u64 {
        return Err(format!(
            "scriptfile {path} is {} bytes; the most a script may be is {MAX_SCRIPT_BYTES}",
            meta.len()
        ));
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read scriptfile {path}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| format!("scriptfile {path} is not UTF-8 text"))
}

async fn fetch(url: &str) -> Result<String, String> {
    let fail = |why: String| format!("cannot fetch scripturl {url}: {why}");
    let client = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_SCRIPT_BYTES as u64)
    {
        return Err(fail(format!(
            "it is larger than the most a script may be, {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| fail(e.without_url().to_string()))?;
        if body.len() + chunk.len() > MAX_SCRIPT_BYTES {
            return Err(fail(format!(
                "it is larger than the most a script may be, {MAX_SCRIPT_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| fail("it is not UTF-8 text".into()))
}

/// Replaces the script's `@key@` tokens with `vars`: always in an inline
/// script, and in a loaded one when the step asks. Unknown tokens become
/// nothing, as in Rundeck. Data tokens resolve as Rundeck's
/// `ScriptVarExpander` does, seen from `node` in a node step:
/// `@data.KEY@` (the node's own first), `@data.KEY/NODE@`, `@data.KEY*@`.
pub fn with_tokens(
    cmd: &StepCommand,
    vars: &BTreeMap<String, String>,
    node: Option<&str>,
) -> StepCommand {
    let mut out = cmd.clone();
    if let StepCommand::Script {
        script,
        source,
        expand_tokens,
        ..
    } = &mut out
    {
        if source.is_none() || *expand_tokens {
            *script = replace_tokens_with(script, |key| {
                outpost_schemas::job::data_refs::resolve(key, vars, node, '/')
            });
        }
    }
    out
}

/// A node's context as `node.KEY` variables and `RD_NODE_*` environment
/// variables.
pub fn node_context(
    node: &outpost_schemas::node::Node,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut vars = BTreeMap::new();
    let mut env = BTreeMap::new();
    for (k, v) in node.context() {
        env.insert(
            format!("RD_NODE_{}", outpost_schemas::job::env_suffix(&k)),
            v.clone(),
        );
        vars.insert(format!("node.{k}"), v);
    }
    (vars, env)
}
