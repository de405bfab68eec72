//! Remote option values (an option's `valuesUrl`): fetched by the control
//! plane, bounded in time and size, read in Rundeck's JSON forms.
//!
//! Trust: whoever may edit a project's jobs may make the control plane send
//! GET requests to any http(s) URL it can reach. What comes back is only
//! ever read as a list of values and shown to those who may read the job;
//! a body that is not such a list is refused with a short reason, never
//! echoed. No credential is sent: the control plane holds no key store, so
//! Rundeck's `configRemoteUrl` authentication is refused at import. Secure
//! option values are never expanded into a URL.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost_schemas::job::{parse_remote_values, Job, RemoteValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// At most this much of a body is read.
pub const MAX_BODY: usize = 1 << 20;
/// Each attempt's whole time, as Rundeck's default `remoteUrlTimeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum RemoteValuesError {
    #[error("the URL `{0}` is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("{0}")]
    Request(String),
    #[error("the server answered {0}")]
    Status(String),
    #[error("the answer is `{0}`, not application/json (set the project's `project.jobs.disableRemoteOptionJsonCheck` to true to read it anyway)")]
    NotJson(String),
    #[error("the answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("the answer is not JSON: {0}")]
    BadJson(String),
    #[error("the answer holds no values Outpost can read: {0}")]
    NoValues(String),
}

/// What a `valuesUrl` may refer to.
pub struct UrlContext<'a> {
    pub job: &'a Job,
    pub project: &'a str,
    pub user: &'a str,
    pub globals: &'a BTreeMap<String, String>,
    /// The run's (or the form's) plain values so far, by option name.
    pub given: &'a BTreeMap<String, String>,
}

/// Characters left as they are in a path or query component (RFC 3986's
/// unreserved ones).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The option's URL with Rundeck's references expanded, each value
/// percent-encoded: `${job.name|group|description|project}`,
/// `${job.user.name}`, `${globals.X}`, `${option.name}` (the option's own
/// name) and `${option.OTHER.value}` (another option's value, blank when
/// unset; a secure option's is always blank). Other references stay as
/// written, as Rundeck leaves them.
pub fn expand(url: &str, option: &str, ctx: &UrlContext) -> String {
    let job = ctx.job;
    let mut vars = BTreeMap::from([
        ("job.name".to_string(), job.name.clone()),
        ("job.group".into(), job.group.clone().unwrap_or_default()),
        ("job.description".into(), job.description.clone()),
        ("job.project".into(), ctx.project.to_string()),
        ("job.user.name".into(), ctx.user.to_string()),
        ("option.name".into(), option.to_string()),
    ]);
    for (k, v) in ctx.globals {
        vars.insert(format!("globals.{k}"), v.clone());
    }
    for o in &job.options {
        let value = match o.secure {
            true => String::new(),
            false => ctx.given.get(&o.name).cloned().unwrap_or_default(),
        };
        vars.insert(format!("option.{}.value", o.name), value);
    }
    for v in vars.values_mut() {
        *v = utf8_percent_encode(v, COMPONENT).to_string();
    }
    outpost_schemas::job::substitute(url, &vars)
}

/// Rundeck's per-URL settings, in the fragment: `#timeout=60;retry=2`
/// (seconds, attempts); `contimeout` bounds the connection (where Rundeck
/// uses it as the pause between attempts).
struct Settings {
    timeout: Duration,
    connect: Option<Duration>,
    attempts: u32,
}

fn settings(fragment: Option<&str>) -> Settings {
    let mut s = Settings {
        timeout: DEFAULT_TIMEOUT,
        connect: None,
        attempts: 1,
    };
    for part in fragment.unwrap_or_default().split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let Ok(n) = v.trim().parse::<u64>() else {
            continue;
        };
        match k.trim() {
            "timeout" if n > 0 => s.timeout = Duration::from_secs(n.min(60)),
            "contimeout" if n > 0 => s.connect = Some(Duration::from_secs(n.min(60))),
            "retry" => s.attempts = (n as u32).clamp(1, MAX_ATTEMPTS),
            _ => {}
        }
    }
    s
}

/// Fetches and reads the values at `url` (already expanded). With
/// `json_check`, the answer must say it is `application/json`, as Rundeck
/// requires unless told otherwise.
pub async fn fetch(url: &str, json_check: bool) -> Result<Vec<RemoteValue>, RemoteValuesError> {
    let parsed =
        reqwest::Url::parse(url.trim()).map_err(|_| RemoteValuesError::NotHttp(url.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(RemoteValuesError::NotHttp(url.to_string()));
    }
    let s = settings(parsed.fragment());
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            // A redirect may not leave http(s), and not loop.
            if attempt.previous().len() >= 5 || !matches!(attempt.url().scheme(), "http" | "https")
            {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .timeout(s.timeout);
    if let Some(c) = s.connect {
        builder = builder.connect_timeout(c);
    }
    let client = builder
        .build()
        .map_err(|e| RemoteValuesError::Request(e.to_string()))?;
    let mut last = None;
    for _ in 0..s.attempts {
        match attempt(&client, parsed.clone(), json_check).await {
            Ok(values) => return Ok(values),
            // Only an answer that is not a success is worth asking again.
            Err(e @ RemoteValuesError::Status(_)) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

async fn attempt(
    client: &reqwest::Client,
    url: reqwest::Url,
    json_check: bool,
) -> Result<Vec<RemoteValue>, RemoteValuesError> {
    let mut resp = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| RemoteValuesError::Request(describe(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(RemoteValuesError::Status(status.to_string()));
    }
    if json_check {
        let kind = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = kind.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(RemoteValuesError::NotJson(essence.to_string()));
        }
    }
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(RemoteValuesError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| RemoteValuesError::Request(describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(RemoteValuesError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| RemoteValuesError::BadJson(e.to_string()))?;
    parse_remote_values(&json).map_err(RemoteValuesError::NoValues)
}

/// reqwest's error with its cause, which says what went wrong (`connection
/// refused`, `operation timed out`).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_in_a_url_are_expanded_and_encoded() {
        let job: Job = serde_yaml_ng::from_str(
            "name: deploy app\ngroup: ops/web\noptions:\n- name: env\n- name: pw\n  secure: true\n  valueExposed: true\n- name: version\nsequence:\n  commands:\n  - exec: 'true'\n",
        )
        .unwrap();
        let globals = BTreeMap::from([("region".to_string(), "eu west".to_string())]);
        let given = BTreeMap::from([
            ("env".to_string(), "prod&qa".to_string()),
            ("pw".to_string(), "hunter2".to_string()),
        ]);
        let ctx = UrlContext {
            job: &job,
            project: "web",
            user: "alice",
            globals: &globals,
            given: &given,
        };
        assert_eq!(
            expand(
                "http://h/${job.group}/${option.name}?env=${option.env.value}&pw=${option.pw.value}&r=${globals.region}&j=${job.name}&u=${job.user.name}&p=${job.project}&v=${option.version.value}&x=${node.name}",
                "version",
                &ctx
            ),
            "http://h/ops%2Fweb/version?env=prod%26qa&pw=&r=eu%20west&j=deploy%20app&u=alice&p=web&v=&x=${node.name}"
        );
    }

    #[test]
    fn fragment_settings_are_bounded() {
        let s = settings(Some("timeout=600;contimeout=5;retry=9"));
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.connect, Some(Duration::from_secs(5)));
        assert_eq!(s.attempts, MAX_ATTEMPTS);
        let s = settings(None);
        assert_eq!(
            (s.timeout, s.connect, s.attempts),
            (DEFAULT_TIMEOUT, None, 1)
        );
    }
}
