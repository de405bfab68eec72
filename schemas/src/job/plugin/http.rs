//! Rundeck's HTTP request step (`rundeck-plugins/http-step`,
//! `edu.ohio.ais.rundeck.HttpWorkflowStepPlugin` and its node-step
//! variant): its configuration keys, read once at import and again on the
//! runner once references are expanded. See
//! `docs/research/rundeck-http-copyfile-allowlist.md` §1.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::NOT_SUPPORTED_YET;

use super::config::{deferred, flag, from_map, text};

/// The step's configuration as a job export holds it: every value text.
/// The committed JSON Schema (`plugin_http_request.v1.json`) is this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRequestConfig {
    /// The URL; required.
    pub remote_url: Option<String>,
    /// `GET` (the default), `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`,
    /// `OPTIONS`.
    pub method: Option<String>,
    /// A JSON object or a YAML mapping of header names to values.
    pub headers: Option<String>,
    /// Sent as UTF-8, with whatever method; its type comes from `headers`.
    pub body: Option<String>,
    /// Milliseconds, for the connection and for each read (default 30000;
    /// 0: none, as the plugin's HTTP client reads it).
    pub timeout: Option<String>,
    /// `false`: any certificate and host name is accepted.
    pub ssl_verify: Option<String>,
    /// `None` (the default), `Basic`; `OAuth 2.0` is not supported yet.
    pub authentication: Option<String>,
    pub username: Option<String>,
    /// A key storage path (`keys/...`) in the runner's key store, or a
    /// secure option's `${option.NAME}`.
    pub password: Option<String>,
    pub oauth_token_endpoint: Option<String>,
    pub oauth_validate_endpoint: Option<String>,
    /// The codes that succeed: `200`, `200-206`, `2xx`, comma-joined.
    /// Without it any code under 400 succeeds.
    pub response_code: Option<String>,
    pub print_response: Option<String>,
    pub print_response_to_file: Option<String>,
    /// Where `printResponseToFile` writes, on the runner.
    pub file: Option<String>,
    pub proxy_settings: Option<String>,
    #[serde(rename = "proxyIP")]
    pub proxy_ip: Option<String>,
    pub proxy_port: Option<String>,
    pub print_response_code: Option<String>,
    pub use_system_proxy_settings: Option<String>,
    /// The plugin's old key (before 1.1.8), which it now ignores.
    pub check_response_code: Option<String>,
}

/// The step types that take this configuration: (type, node step).
pub const TYPES: &[(&str, bool)] = &[
    ("edu.ohio.ais.rundeck.HttpWorkflowStepPlugin", false),
    ("edu.ohio.ais.rundeck.HttpWorkflowNodeStepPlugin", true),
];

pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A checked request, as the runner makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub timeout_ms: u64,
    pub ssl_verify: bool,
    /// Basic authentication: the user and where the password comes from.
    pub basic: Option<(String, String)>,
    pub response_codes: Option<Vec<CodeRule>>,
    pub print_response: bool,
    pub print_response_code: bool,
    pub response_file: Option<String>,
}

/// One entry of `responseCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRule {
    Exact(u16),
    Range(u16, u16),
    /// `2xx`: the hundreds.
    Class(u16),
}

impl CodeRule {
    pub fn matches(self, code: u16) -> bool {
        match self {
            CodeRule::Exact(c) => code == c,
            CodeRule::Range(a, b) => (a..=b).contains(&code),
            CodeRule::Class(h) => code / 100 == h,
        }
    }
}

/// Whether `code` succeeds: one of the rules, or with none any code under
/// 400, as the plugin decides.
pub fn succeeds(rules: Option<&[CodeRule]>, code: u16) -> bool {
    match rules {
        Some(rules) => rules.iter().any(|r| r.matches(code)),
        None => code < 400,
    }
}

/// Reads `responseCode` as the plugin matches it: each comma-separated
/// entry `\d{3}`, `\d{3}-\d{3}` or `\dxx`. The plugin skips an entry it
/// cannot read with a warning; here it is an error, so that a typo does not
/// widen what succeeds.
pub fn code_rules(spec: &str) -> Result<Vec<CodeRule>, String> {
    let three = |s: &str| -> Option<u16> {
        (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            if let Some(c) = three(e) {
                return Ok(CodeRule::Exact(c));
            }
            if let Some((a, b)) = e.split_once('-') {
                if let (Some(a), Some(b)) = (three(a.trim()), three(b.trim())) {
                    if a <= b {
                        return Ok(CodeRule::Range(a, b));
                    }
                }
            }
            let b = e.as_bytes();
            if b.len() == 3 && b[0].is_ascii_digit() && &b[1..] == b"xx" {
                return Ok(CodeRule::Class(u16::from(b[0] - b'0')));
            }
            Err(format!(
                "configuration.responseCode: `{e}` is not a code (`200`), a range (`200-206`) or a class (`2xx`)"
            ))
        })
        .collect()
}

/// Reads `headers`: a JSON object, else a YAML mapping, of names to
/// values (numbers and flags as written). The plugin logs an error and
/// sends none for anything else; here it is an error.
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_yaml_ng::from_str(text).map_err(|e| {
            format!("configuration.headers: neither a JSON object nor a YAML mapping ({e})")
        })?,
    };
    let serde_json::Value::Object(map) = value else {
        return Err(
            "configuration.headers: a JSON object or a YAML mapping of names to values, such as `{\"Accept\": \"application/json\"}`".into(),
        );
    };
    map.into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(format!("configuration.headers: `{k}` is {other}, not text")),
            };
            Ok((k, v))
        })
        .collect()
}

/// A password as the job writes a key storage path: read from the runner's
/// key store. Judged on the job's own text, never on what an option
/// expanded to, so that a run cannot point the step at another key.
pub fn stored_path(password: &str) -> bool {
    password.starts_with("keys/") && !deferred(password)
}

/// The secure option a password names, when it is exactly
/// `${option.NAME}`.
pub fn password_option(password: &str) -> Option<&str> {
    let name = password.strip_prefix("${option.")?.strip_suffix('}')?;
    (!name.is_empty() && !name.contains(['{', '}', '$'])).then_some(name)
}

/// The configuration keys whose value, as the job writes it, is a key
/// storage path the runner reads (`StepCommand::Plugin::stored`).
pub fn stored_keys(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .get("password")
        .filter(|p| stored_path(p))
        .map(|_| vec!["password".to_string()])
        .unwrap_or_default()
}

impl HttpRequestConfig {
    /// Reads the configuration map (unknown keys are errors).
    pub fn from_map(config: &BTreeMap<String, String>) -> Result<Self, String> {
        from_map("the HTTP request step", config)
    }

    /// Checks what can be checked before references expand (`at_import`),
    /// or everything (on the runner), into the request to make.
    pub fn request(&self, at_import: bool) -> Result<HttpRequest, String> {
        let skip = |v: &str| at_import && deferred(v);
        let url = text(&self.remote_url)
            .ok_or("the HTTP request step needs configuration.remoteUrl")?
            .to_string();
        if !(skip(&url) || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "configuration.remoteUrl: `{url}` is not an http:// or https:// URL"
            ));
        }
        let method = text(&self.method).unwrap_or("GET").to_string();
        if !skip(&method) && !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "configuration.method: `{method}` is not one of {}",
                METHODS.join(", ")
            ));
        }
        let headers = match text(&self.headers) {
            Some(h) if !skip(h) => parse_headers(h)?,
            _ => Vec::new(),
        };
        let timeout_ms = match text(&self.timeout) {
            Some(t) if skip(t) => 30_000,
            Some(t) => t.parse::<u64>().map_err(|_| {
                format!("configuration.timeout: `{t}` is not a number of milliseconds")
            })?,
            None => 30_000,
        };
        let basic = match text(&self.authentication).unwrap_or("None") {
            "None" => None,
            "Basic" => {
                let (Some(_), Some(_)) = (text(&self.username), text(&self.password)) else {
                    return Err(
                        "Basic authentication needs configuration.username and configuration.password"
                            .into(),
                    );
                };
                // As written: a password's spaces are its own.
                let (user, password) = (
                    self.username.clone().unwrap_or_default(),
                    self.password.clone().unwrap_or_default(),
                );
                if at_import && !(stored_path(&password) || password_option(&password).is_some()) {
                    return Err(
                        "configuration.password: a key storage path (`keys/...`, read from the runner's key store) or a secure option (`${option.NAME}`); a password written in the job would be stored with it".into(),
                    );
                }
                if !at_import && deferred(&password) {
                    return Err("configuration.password: its reference did not resolve".into());
                }
                Some((user, password))
            }
            "OAuth 2.0" => {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: HTTP request step authentication `OAuth 2.0`"
                ))
            }
            a if skip(a) => None,
            other => {
                return Err(format!(
                    "configuration.authentication: `{other}` is not one of None, Basic, OAuth 2.0"
                ))
            }
        };
        let response_codes = match text(&self.response_code) {
            Some(c) if skip(c) => None,
            Some(c) => Some(code_rules(c)?),
            None => None,
        };
        for (key, v) in [
            ("proxySettings", &self.proxy_settings),
            ("useSystemProxySettings", &self.use_system_proxy_settings),
        ] {
            if flag(key, v, false, at_import)? {
                return Err(format!(
                    "{NOT_SUPPORTED_YET}: HTTP request step {key} (a proxy)"
                ));
            }
        }
        let to_file = flag(
            "printResponseToFile",
            &self.print_response_to_file,
            false,
            at_import,
        )?;
        let response_file = match (to_file, text(&self.file)) {
            (true, Some(f)) => Some(f.to_string()),
            (true, None) => {
                return Err("printResponseToFile needs configuration.file".into());
            }
            (false, _) => None,
        };
        Ok(HttpRequest {
            url,
            method,
            headers,
            body: self.body.clone().filter(|b| !b.is_empty()),
            timeout_ms,
            ssl_verify: flag("sslVerify", &self.ssl_verify, true, at_import)?,
            basic,
            response_codes,
            print_response: flag("printResponse", &self.print_response, false, at_import)?,
            print_response_code: flag(
                "printResponseCode",
                &self.print_response_code,
                false,
                at_import,
            )?,
            response_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], at_import: bool) -> Result<HttpRequest, String> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpRequestConfig::from_map(&map)?.request(at_import)
    }

    #[test]
    fn response_codes_match_as_the_plugin_matches_them() {
        let rules = code_rules("200, 204-206,3xx").unwrap();
        let ok: Vec<u16> = [200, 201, 204, 206, 207, 302, 399, 404]
            .into_iter()
            .filter(|c| succeeds(Some(&rules), *c))
            .collect();
        assert_eq!(ok, [200, 204, 206, 302, 399]);
        assert!(succeeds(None, 399) && !succeeds(None, 400));
        // A 4xx that is asked for succeeds.
        assert!(succeeds(Some(&code_rules("404").unwrap()), 404));
        for bad in ["20", "2XX", "300-200", "ok"] {
            assert!(code_rules(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_are_a_json_object_or_a_yaml_mapping() {
        assert_eq!(
            parse_headers(r#"{"Accept": "application/json", "X-N": 5}"#).unwrap(),
            [
                ("Accept".to_string(), "application/json".to_string()),
                ("X-N".to_string(), "5".to_string())
            ]
        );
        assert_eq!(
            parse_headers("Content-Type: text/plain").unwrap(),
            [("Content-Type".to_string(), "text/plain".to_string())]
        );
        // The list the plugin's docs show is dropped by the plugin itself.
        assert!(parse_headers("- name: Accept\n  value: x")
            .unwrap_err()
            .contains("a JSON object or a YAML mapping"));
    }

    /// A configuration, and the error it gives (or none).
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    /// One row each: configuration, the error (or none).
    #[test]
    fn configurations_are_checked_with_the_key_named() {
        let cases: &[Case] = &[
            (&[("remoteUrl", "https://x/y"), ("method", "POST")], None),
            (&[("method", "GET")], Some("needs configuration.remoteUrl")),
            (
                &[("remoteUrl", "ftp://x")],
                Some("not an http:// or https:// URL"),
            ),
            (
                &[("remoteUrl", "http://x"), ("method", "FETCH")],
                Some("`FETCH` is not one of GET"),
            ),
            (
                &[("remoteUrl", "http://x"), ("timeout", "30s")],
                Some("configuration.timeout"),
            ),
            (
                &[("remoteUrl", "http://x"), ("timeout", "${option.t}")],
                None,
            ),
            (
                &[("remoteUrl", "http://x"), ("remotUrl", "http://y")],
                Some("has no configuration key `remotUrl`; its keys are"),
            ),
            (
                &[
                    ("remoteUrl", "http://x"),
                    ("authentication", "Basic"),
                    ("username", "u"),
                    ("password", "hunter2"),
                ],
                Some("a key storage path"),
            ),
            (
                &[
                    ("remoteUrl", "http://x"),
                    ("authentication", "Basic"),
                    ("username", "u"),
                    ("password", "keys/api/pw"),
                ],
                None,
            ),
            (
                &[
                    ("remoteUrl", "http://x"),
                    ("authentication", "Basic"),
                    ("username", "u"),
                    ("password", "${option.pw}"),
                ],
                None,
            ),
            (
                &[("remoteUrl", "http://x"), ("authentication", "OAuth 2.0")],
                Some("not supported yet: HTTP request step authentication `OAuth 2.0`"),
            ),
            (
                &[("remoteUrl", "http://x"), ("proxySettings", "true")],
                Some("not supported yet: HTTP request step proxySettings"),
            ),
            (
                &[("remoteUrl", "http://x"), ("printResponseToFile", "true")],
                Some("needs configuration.file"),
            ),
            (
                &[("remoteUrl", "http://x"), ("printResponse", "yes")],
                Some("configuration.printResponse: `yes` is not a flag"),
            ),
            (
                &[
                    ("remoteUrl", "http://x"),
                    ("checkResponseCode", "false"),
                    ("responseCode", "200"),
                ],
                None,
            ),
        ];
        for (pairs, want) in cases {
            let got = read(pairs, true);
            match (want, &got) {
                (None, Ok(_)) => {}
                (Some(w), Err(e)) if e.contains(w) => {}
                _ => panic!("{pairs:?}: want {want:?}, got {got:?}"),
            }
        }
        // On the runner nothing is left to expand: a reference that did
        // not resolve is an error there.
        assert!(read(
            &[("remoteUrl", "http://x"), ("timeout", "${option.t}")],
            false
        )
        .is_err());
    }

    #[test]
    fn a_password_is_a_stored_key_or_a_secure_option_never_written_in() {
        let basic = |pw: &str, at_import: bool| {
            read(
                &[
                    ("remoteUrl", "http://x"),
                    ("authentication", "Basic"),
                    ("username", "u"),
                    ("password", pw),
                ],
                at_import,
            )
        };
        assert!(basic("keys/api/pw", true).is_ok());
        assert!(basic("${option.pw}", true).is_ok());
        for written in [
            "hunter2",
            "${job.name}",
            "keys/${option.p}",
            "x${option.pw}",
        ] {
            assert!(
                basic(written, true)
                    .unwrap_err()
                    .contains("a key storage path"),
                "{written}"
            );
        }
        // On the runner the password is what the option gave, spaces and
        // all; a reference left is an error, not a password.
        assert_eq!(
            basic(" spaced secret ", false).unwrap().basic,
            Some(("u".to_string(), " spaced secret ".to_string()))
        );
        assert!(basic("${option.pw}", false)
            .unwrap_err()
            .contains("did not resolve"));
        let map = |pw: &str| [("password".to_string(), pw.to_string())].into();
        assert_eq!(stored_keys(&map("keys/a/b")), ["password"]);
        assert!(stored_keys(&map("${option.pw}")).is_empty());
        // A flag that only a run decides is checked on the runner.
        assert!(read(
            &[("remoteUrl", "http://x"), ("sslVerify", "${option.v}")],
            true
        )
        .is_ok());
    }
}
