//! The CLI's client side: every command talks to the REST API only.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use outpost_schemas::state::ExecutionStatus;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::contract::{
    AbortReply, AuditEntry, ConfigValue, CreatedToken, DeadLetters, DupeOption, EnrolRequest,
    EnrolledRunner, Enrolment, ErrorBody, Execution, ExecutionList, ImportResult, JobDetail,
    JobSummary, Node, NodesLoaded, OptionValues, OutputPage, ProjectConfig, RunAccepted,
    RunRequest, RunnerReplica, Token, TokenRequest, API_PREFIX,
};
use crate::formats::Format;

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
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| format!("HTTP {status}: {body}"));
        Err(CliError::User(message))
    }

    /// Sends, and reads the answer as the contract type `T`.
    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CliError> {
        let resp = self.send(req).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn import(
        &self,
        project: &str,
        text: String,
        format: Format,
        dupe: DupeOption,
    ) -> Result<ImportResult, CliError> {
        let dupe = serde_json::to_value(dupe).expect("dupe option serialises");
        self.json(
            self.http
                .post(self.url(&format!("/project/{project}/jobs/import")))
                .query(&[
                    ("dupeOption", dupe.as_str().unwrap_or_default()),
                    ("fileformat", format.name()),
                ])
                .header("content-type", format.media_type())
                .body(text),
        )
        .await
    }

    /// Every job of the project as one job file.
    pub async fn export_jobs(&self, project: &str, format: Format) -> Result<String, CliError> {
        self.text(
            self.http
                .get(self.url(&format!("/project/{project}/jobs/export")))
                .query(&[("format", format.name())]),
        )
        .await
    }

    async fn text(&self, req: reqwest::RequestBuilder) -> Result<String, CliError> {
        let resp = self.send(req).await?;
        resp.text()
            .await
            .map_err(|e| CliError::User(format!("unexpected API response: {e}")))
    }

    pub async fn jobs(&self, project: &str) -> Result<Vec<JobSummary>, CliError> {
        self.json(self.http.get(self.url(&format!("/project/{project}/jobs"))))
            .await
    }

    /// A job's uuid, from a uuid or a `group/name`.
    pub async fn resolve_job(&self, project: &str, job: &str) -> Result<Uuid, CliError> {
        if let Ok(id) = Uuid::parse_str(job) {
            return Ok(id);
        }
        let detail: JobDetail = self
            .json(
                self.http
                    .get(self.url(&format!("/project/{project}/job/{}", job.trim_matches('/')))),
            )
            .await?;
        Ok(detail.id)
    }

    pub async fn job(&self, id: Uuid) -> Result<JobDetail, CliError> {
        self.json(self.http.get(self.url(&format!("/job/{id}"))))
            .await
    }

    /// The job's definition as a one-job file.
    pub async fn job_file(&self, id: Uuid, format: Format) -> Result<String, CliError> {
        self.text(
            self.http
                .get(self.url(&format!("/job/{id}")))
                .query(&[("format", format.name())]),
        )
        .await
    }

    /// An option's remote values, with other options' values for its URL.
    pub async fn option_values(
        &self,
        id: Uuid,
        option: &str,
        given: &[(String, String)],
    ) -> Result<OptionValues, CliError> {
        self.json(
            self.http
                .get(self.url(&format!("/job/{id}/option/{option}/values")))
                .query(given),
        )
        .await
    }

    pub async fn delete_job(&self, id: Uuid) -> Result<(), CliError> {
        self.send(self.http.delete(self.url(&format!("/job/{id}"))))
            .await
            .map(drop)
    }

    pub async fn run(
        &self,
        id: Uuid,
        options: BTreeMap<String, String>,
    ) -> Result<RunAccepted, CliError> {
        self.json(
            self.http
                .post(self.url(&format!("/job/{id}/run")))
                .json(&RunRequest {
                    options,
                    arg_string: None,
                }),
        )
        .await
    }

    pub async fn execution(&self, id: Uuid) -> Result<Execution, CliError> {
        self.json(self.http.get(self.url(&format!("/execution/{id}"))))
            .await
    }

    pub async fn executions(&self, project: &str, max: usize) -> Result<Vec<Execution>, CliError> {
        let list: ExecutionList = self
            .json(
                self.http
                    .get(self.url(&format!("/project/{project}/executions")))
                    .query(&[("max", max)]),
            )
            .await?;
        Ok(list.executions)
    }

    pub async fn output(&self, id: Uuid, offset: &str) -> Result<OutputPage, CliError> {
        self.json(
            self.http
                .get(self.url(&format!("/execution/{id}/output")))
                .query(&[("offset", offset)]),
        )
        .await
    }

    pub async fn abort(&self, id: Uuid) -> Result<AbortReply, CliError> {
        self.json(self.http.post(self.url(&format!("/execution/{id}/abort"))))
            .await
    }

    pub async fn nodes(&self, project: &str, filter: Option<&str>) -> Result<Vec<Node>, CliError> {
        let mut req = self
            .http
            .get(self.url(&format!("/project/{project}/resources")));
        if let Some(f) = filter {
            req = req.query(&[("filter", f)]);
        }
        self.json(req).await
    }

    pub async fn put_nodes(&self, project: &str, yaml: String) -> Result<NodesLoaded, CliError> {
        self.json(
            self.http
                .put(self.url(&format!("/project/{project}/resources")))
                .header("content-type", "application/yaml")
                .body(yaml),
        )
        .await
    }

    pub async fn project_config(&self, project: &str) -> Result<ProjectConfig, CliError> {
        self.json(
            self.http
                .get(self.url(&format!("/project/{project}/config"))),
        )
        .await
    }

    pub async fn set_project_config(
        &self,
        project: &str,
        key: &str,
        value: &str,
    ) -> Result<ProjectConfig, CliError> {
        self.json(
            self.http
                .put(self.url(&format!("/project/{project}/config/{key}")))
                .json(&ConfigValue {
                    value: value.to_string(),
                }),
        )
        .await
    }

    pub async fn unset_project_config(
        &self,
        project: &str,
        key: &str,
    ) -> Result<ProjectConfig, CliError> {
        self.json(
            self.http
                .delete(self.url(&format!("/project/{project}/config/{key}"))),
        )
        .await
    }

    pub async fn audit(&self, after: Option<u64>, max: usize) -> Result<Vec<AuditEntry>, CliError> {
        let mut req = self.http.get(self.url("/audit")).query(&[("max", max)]);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        self.json(req).await
    }

    pub async fn enrol_runner(&self, name: &str, tags: &[String]) -> Result<Enrolment, CliError> {
        self.json(self.http.post(self.url("/runners")).json(&EnrolRequest {
            name: name.into(),
            tags: tags.to_vec(),
        }))
        .await
    }

    /// `POST /runners/{name}/{action}`: `revoke`, `rotate`, `drain` or `ping`,
    /// each answering its own contract type.
    pub async fn runner_action<T: DeserializeOwned>(
        &self,
        name: &str,
        action: &str,
    ) -> Result<T, CliError> {
        self.json(
            self.http
                .post(self.url(&format!("/runners/{name}/{action}"))),
        )
        .await
    }

    pub async fn enrolled_runners(&self) -> Result<Vec<EnrolledRunner>, CliError> {
        self.json(self.http.get(self.url("/runners/enrolled")))
            .await
    }

    pub async fn create_token(
        &self,
        name: &str,
        roles: &[String],
    ) -> Result<CreatedToken, CliError> {
        self.json(self.http.post(self.url("/tokens")).json(&TokenRequest {
            name: name.into(),
            roles: roles.to_vec(),
        }))
        .await
    }

    pub async fn tokens(&self) -> Result<Vec<Token>, CliError> {
        self.json(self.http.get(self.url("/tokens"))).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<Token, CliError> {
        self.json(self.http.delete(self.url(&format!("/tokens/{id}"))))
            .await
    }

    pub async fn dead_letters(&self) -> Result<DeadLetters, CliError> {
        self.json(self.http.get(self.url("/deadletters"))).await
    }

    pub async fn runners(&self) -> Result<Vec<RunnerReplica>, CliError> {
        self.json(self.http.get(self.url("/runners"))).await
    }

    /// Prints output live until the execution ends; returns its final state.
    /// Resumes from the last offset if the stream breaks (an API restart).
    pub async fn follow(
        &self,
        id: Uuid,
        out: &mut (dyn Write + Send),
    ) -> Result<Execution, CliError> {
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
    ) -> Result<Option<Execution>, CliError> {
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
pub fn describe(state: &Execution) -> String {
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
    if let (Some(parent), Some(step)) = (state.parent_execution_id, state.parent_step) {
        s.push_str(&format!(
            "  parent:  {parent} (step {step})
"
        ));
    }
    if let Some(r) = &state.retry {
        s.push_str(&format!(
            "  retry:   attempt {}, retrying {} (the first: {})\n",
            r.attempt + 1,
            r.previous_execution_id,
            r.original_execution_id
        ));
    }
    if let Some(next) = state.retry_execution_id {
        s.push_str(&format!("  retried: by {next}\n"));
    }
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
        if let Some(child) = st.child_execution_id {
            s.push_str(&format!(
                "           child execution {child}
"
            ));
        }
        if let Some(status) = st.errorhandler.as_ref().and_then(|h| h.status) {
            s.push_str(&format!(
                "           error handler {}
",
                format!("{status:?}").to_lowercase()
            ));
        }
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
