//! Rundeck's HTTP request step, as `rundeck-plugins/http-step` makes the
//! request: its timeout for the connection and for each read, Basic
//! authentication with a password from the runner's key store, the
//! response's code and body printed on request, and the expected codes
//! deciding the step.

use std::time::Duration;

use outpost_schemas::job::http::{succeeds, HttpRequest};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::executor::{Exit, PluginOutput};
use crate::mask::Secrets;

/// The most of a response body the step reads.
const MAX_BODY: usize = 8 * 1024 * 1024;
/// The most of a body a failure's reason quotes.
const REASON_BODY: usize = 1024;

pub async fn run(
    req: HttpRequest,
    secrets: Secrets,
    mut out: PluginOutput,
    stop: CancellationToken,
) -> Exit {
    // An abort drops the request: its connection closes.
    let exit = tokio::select! {
        exit = request(&req, &mut out) => exit,
        _ = stop.cancelled() => Exit::Killed,
    };
    match exit {
        Exit::Failed(why) => Exit::Failed(secrets.mask_str(&why)),
        other => other,
    }
}

async fn request(req: &HttpRequest, out: &mut PluginOutput) -> Exit {
    let fail = |why: String| Exit::Failed(why);
    let mut client = reqwest::Client::builder().danger_accept_invalid_certs(!req.ssl_verify);
    // 0 is no timeout, as the plugin's client reads it.
    if req.timeout_ms > 0 {
        let timeout = Duration::from_millis(req.timeout_ms);
        client = client.connect_timeout(timeout).read_timeout(timeout);
    }
    // The plugin's client follows redirects for GET and HEAD only.
    client = match req.method.as_str() {
        "GET" | "HEAD" => client.redirect(reqwest::redirect::Policy::limited(10)),
        _ => client.redirect(reqwest::redirect::Policy::none()),
    };
    let client = match client.build() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot make an HTTP client: {e}")),
    };
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("checked method");
    let mut builder = client.request(method, &req.url);
    if let Some((user, password)) = &req.basic {
        builder = builder.basic_auth(user, Some(password));
    }
    // After authentication and replacing, so a header of the job's own
    // wins, as the plugin's `setHeader` does.
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &req.headers {
        let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) else {
            return fail(format!("header `{k}` is not a valid HTTP header"));
        };
        headers.insert(name, value);
    }
    builder = builder.headers(headers);
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let mut resp = match builder.send().await {
        Ok(r) => r,
        // Without the URL, whose query may hold a secure value encoded
        // past the mask's reach.
        Err(e) => {
            return fail(format!(
                "Error when sending request: {}",
                chain(&e.without_url())
            ))
        }
    };
    let status = resp.status();
    if req.print_response_code {
        let line = format!("Response Code: {:?} {status}\n", resp.version());
        let _ = out.stdout.write_all(line.as_bytes()).await;
    }
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return fail(format!(
                        "the response body passed {} MiB",
                        MAX_BODY / 1024 / 1024
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return fail(format!(
                    "Error when reading the response: {}",
                    chain(&e.without_url())
                ))
            }
        }
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let shown = match json {
        true => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| text.clone()),
        false => text.clone(),
    };
    if req.print_response && !shown.is_empty() {
        let _ = out.stdout.write_all(shown.as_bytes()).await;
        if !shown.ends_with('\n') {
            let _ = out.stdout.write_all(b"\n").await;
        }
    }
    if let Some(file) = &req.response_file {
        if let Err(e) = tokio::fs::write(file, shown.as_bytes()).await {
            return fail(format!("cannot write the response to {file}: {e}"));
        }
    }
    let code = status.as_u16();
    if succeeds(req.response_codes.as_deref(), code) {
        return Exit::Code(0);
    }
    // The plugin's own words, with the start of the body.
    let lead = match req.response_codes {
        Some(_) => format!("Unexpected response code: {code}"),
        None => format!("HTTP request failed with status code: {code}"),
    };
    let quoted: String = text.chars().take(REASON_BODY).collect();
    fail(match quoted.trim() {
        "" => lead,
        q => format!("{lead}: {q}"),
    })
}

/// An error with its causes, which name what failed (refused, timed out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
