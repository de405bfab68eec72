//! The CLI's client side: every command talks to the REST API only.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::{ExecutionState, ExecutionStatus};
use serde_json::Value;
use uuid::Uuid;

use crate::api::{OutputPage, API_PREFIX};

/// A failure the user can act on, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    User(String),
    #[error("cannot reach the Outpost API at {url}: {message} (is `outpost up` or `outpost serve` running? set --api-url or OUTPOST_API_URL)")]
    Unreachable { url: String, message: String },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `token` goes in every request's `Authorization` header; `ca_file`
    /// is a private CA to trust for an https API (as `outpost up` makes).
    pub fn new(
        api_url: &str,
        token: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, CliError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| {
                    CliError::User("the API token has characters a header cannot carry".into())
                })?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers);
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                CliError::User(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| CliError::User(format!("CA file {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Client {
            http: builder.build().expect("http client builds"),
            base: api_url.trim_end_matches('/').to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API_PREFIX}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, CliError> {
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            message: e.without_url().to_string(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {status}: {body}"));
        Err(CliError::User(message))
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let resp = self.send(req).await?;
        resp.json()
            .await
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn import(&self, project: &str, yaml: String, dupe: &str) -> Result<Value, CliError> {
        self.json(
            self.http
                .post(self.url(&format!("/project/{project}/jobs/import")))
                .query(&[("dupeOption", dupe)])
                .header("content-type", "application/yaml")
                .body(yaml),
        )
        .await
    }

    pub async fn jobs(&self, project: &str) -> Result<Value, CliError> {
        self.json(self.http.get(self.url(&format!("/project/{project}/jobs"))))
            .await
    }

    /// A job's uuid, from a uuid or a `group/name`.
    pub async fn resolve_job(&self, project: &str, job: &str) -> Result<Uuid, CliError> {
        if let Ok(id) = Uuid::parse_str(job) {
            return Ok(id);
        }
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/project/{project}/job/{}", job.trim_matches('/')))),
            )
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| CliError::User("unexpected API response: job without id".into()))
    }

    pub async fn job(&self, id: Uuid, yaml: bool) -> Result<String, CliError> {
        let mut req = self.http.get(self.url(&format!("/job/{id}")));
        if yaml {
            req = req.query(&[("format", "yaml")]);
        }
        let resp = self.send(req).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| CliError::User(e.to_string()))?;
        Ok(if yaml {
            text
        } else {
            serde_json::from_str::<Value>(&text)
                .map(|v| serde_json::to_string_pretty(&v).expect("json"))
                .unwrap_or(text)
        })
    }

    pub async fn delete_job(&self, id: Uuid) -> Result<(), CliError> {
        self.send(self.http.delete(self.url(&format!("/job/{id}"))))
            .await
            .map(drop)
    }

    pub async fn run(&self, id: Uuid, options: BTreeMap<String, String>) -> Result<Uuid, CliError> {
        let v = self
            .json(
                self.http
                    .post(self.url(&format!("/job/{id}/run")))
                    .json(&serde_json::json!({ "options": options })),
            )
            .await?;
        v.get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| {
                CliError::User("unexpected API response: run without execution id".into())
            })
    }

    pub async fn execution(&self, id: Uuid) -> Result<ExecutionState, CliError> {
        let v = self
            .json(self.http.get(self.url(&format!("/execution/{id}"))))
            .await?;
        serde_json::from_value(v)
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn executions(
        &self,
        project: &str,
        max: usize,
    ) -> Result<Vec<ExecutionState>, CliError> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/project/{project}/executions")))
                    .query(&[("max", max)]),
            )
            .await?;
        serde_json::from_value(v["executions"].clone())
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn output(&self, id: Uuid, offset: &str) -> Result<OutputPage, CliError> {
        let v = self
            .json(
                self.http
                    .get(self.url(&format!("/execution/{id}/output")))
                    .query(&[("offset", offset)]),
            )
            .await?;
        serde_json::from_value(v)
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn abort(&self, id: Uuid) -> Result<Value, CliError> {
        self.json(self.http.post(self.url(&format!("/execution/{id}/abort"))))
            .await
    }

    pub async fn nodes(&self, project: &str, filter: Option<&str>) -> Result<Value, CliError> {
        let mut req = self
            .http
            .get(self.url(&format!("/project/{project}/resources")));
        if let Some(f) = filter {
            req = req.query(&[("filter", f)]);
        }
        self.json(req).await
    }

    pub async fn put_nodes(&self, project: &str, yaml: String) -> Result<Value, CliError> {
        self.json(
            self.http
                .put(self.url(&format!("/project/{project}/resources")))
                .header("content-type", "application/yaml")
                .body(yaml),
        )
        .await
    }

    pub async fn audit(&self, after: Option<u64>, max: usize) -> Result<Value, CliError> {
        let mut req = self.http.get(self.url("/audit")).query(&[("max", max)]);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.json(req).await
    }

    pub async fn enrol_runner(&self, name: &str, tags: &[String]) -> Result<Value, CliError> {
        self.json(
            self.http
                .post(self.url("/runners"))
                .json(&serde_json::json!({"name": name, "tags": tags})),
        )
        .await
    }

    pub async fn runner_action(&self, name: &str, action: &str) -> Result<Value, CliError> {
        self.json(
            self.http
                .post(self.url(&format!("/runners/{name}/{action}"))),
        )
        .await
    }

    pub async fn enrolled_runners(&self) -> Result<Value, CliError> {
        self.json(self.http.get(self.url("/runners/enrolled")))
            .await
    }

    pub async fn create_token(&self, name: &str, roles: &[String]) -> Result<Value, CliError> {
        self.json(
            self.http
                .post(self.url("/tokens"))
                .json(&serde_json::json!({"name": name, "roles": roles})),
        )
        .await
    }

    pub async fn tokens(&self) -> Result<Value, CliError> {
        self.json(self.http.get(self.url("/tokens"))).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<Value, CliError> {
        self.json(self.http.delete(self.url(&format!("/tokens/{id}"))))
            .await
    }

    pub async fn dead_letters(&self) -> Result<Value, CliError> {
        self.json(self.http.get(self.url("/deadletters"))).await
    }

    pub async fn runners(&self) -> Result<Value, CliError> {
        self.json(self.http.get(self.url("/runners"))).await
    }

    /// Prints output live until the execution ends; returns its final state.
    /// Resumes from the last offset if the stream breaks (an API restart).
    pub async fn follow(
        &self,
        id: Uuid,
        out: &mut (dyn Write + Send),
    ) -> Result<ExecutionState, CliError> {
        let mut offset = String::from("0");
        let mut failures = 0u32;
        loop {
            match self.follow_once(id, &mut offset, out).await {
                Ok(Some(state)) => return Ok(state),
                Ok(None) => {}
                Err(CliError::User(m)) => return Err(CliError::User(m)),
                Err(e) => {
                    failures += 1;
                    if failures > 30 {
                        return Err(e);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn follow_once(
        &self,
        id: Uuid,
        offset: &mut String,
        out: &mut (dyn Write + Send),
    ) -> Result<Option<ExecutionState>, CliError> {
        let resp = self
            .send(
                self.http
                    .get(self.url(&format!("/execution/{id}/output/stream")))
                    .query(&[("offset", offset.as_str())]),
            )
            .await?;
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let (mut event, mut data) = (String::new(), String::new());
        while let Some(bytes) = body.next().await {
            let bytes = bytes.map_err(|e| CliError::Unreachable {
                url: self.base.clone(),
                message: e.to_string(),
            })?;
            buf.extend_from_slice(&bytes);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                if line.is_empty() {
                    match event.as_str() {
                        "output" => {
                            if let Ok(page) = serde_json::from_str::<OutputPage>(&data) {
                                for e in &page.entries {
                                    let _ = writeln!(out, "{}", e.log);
                                }
                                let _ = out.flush();
                                *offset = page.offset;
                            }
                        }
                        "end" => {
                            return serde_json::from_str(&data).map(Some).map_err(|e| {
                                CliError::User(format!("unexpected API response: {e}"))
                            });
                        }
                        "error" => return Err(CliError::User(data)),
                        _ => {}
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
        }
        Ok(None)
    }
}

/// One line per step, for `outpost exec show`.
pub fn describe(state: &ExecutionState) -> String {
    let mut s = format!(
        "execution {}\n  job:     {}{}\n  project: {}\n  status:  {}\n",
        state.id,
        state
            .job_group
            .as_ref()
            .map(|g| format!("{g}/"))
            .unwrap_or_default(),
        state.job_name,
        state.project,
        status_word(state.status),
    );
    for st in &state.steps {
        s.push_str(&format!(
            "  step {:>2}  {:<10} {:<14} exit={:<4} {}{}\n",
            st.step,
            format!("{:?}", st.status).to_lowercase(),
            st.runner_id.as_deref().unwrap_or("-"),
            st.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            st.label,
            st.reason
                .as_ref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default(),
        ));
    }
    s
}

pub fn status_word(s: ExecutionStatus) -> String {
    format!("{s:?}").to_lowercase()
}

/// Parses `-o name=value`.
pub fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not name=value")),
    }
}
