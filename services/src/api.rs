//! The REST API (axum), shaped after Rundeck's: `/api/v1/project/{p}/jobs`,
//! `/api/v1/job/{id}/run`, `/api/v1/execution/{id}/output`, …
//!
//! Stateless: reads come from KV and streams, and a run is one event publish.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use outpost_runner::bus;
use outpost_schemas::state::ExecutionState;
use outpost_schemas::{
    subjects, AbortRequested, AuditEvent, AuditResult, Event, ExecutionRequested, Header, LogChunk,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{self, Need, Principal, ProjectOf, Role, Tokens};
use crate::job_yaml;
use crate::registry::{Registry, RegistryError};
use crate::store::{DupeOption, JobRecord, Project, Store, StoreError};
use crate::{fleet, ServiceError};

pub const API_PREFIX: &str = "/api/v1";
const DEFAULT_MAX_ENTRIES: usize = 5000;
/// A larger `maxlines` is served as this many: one page is held in memory.
const MAX_ENTRIES_PER_PAGE: usize = 10_000;

#[derive(Clone)]
struct AppState {
    js: jetstream::Context,
    client: async_nats::Client,
    store: Store,
    tokens: Tokens,
    registry: Registry,
    /// Who may have published a step's log: its claim's holder.
    grants: std::sync::Arc<crate::provenance::Grants>,
    health: fleet::HealthThresholds,
    /// Ends live streams, so that graceful shutdown does not wait on them.
    shutdown: CancellationToken,
    /// Outcome records on their way to the audit stream.
    audit_tasks: tokio_util::task::TaskTracker,
}

pub struct Api {
    listener: TcpListener,
    client: async_nats::Client,
    js: jetstream::Context,
    registry: Registry,
    tls: Option<TlsFiles>,
    health: fleet::HealthThresholds,
}

/// The API's certificate chain and key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl Api {
    /// Binds now, so that the caller learns the address (port 0 in tests).
    pub async fn bind(
        addr: &str,
        client: async_nats::Client,
        js: jetstream::Context,
        registry: Registry,
        tls: Option<TlsFiles>,
    ) -> Result<Self, ServiceError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: addr.into(),
                source,
            })?;
        Ok(Api {
            listener,
            client,
            js,
            registry,
            tls,
            health: fleet::HealthThresholds::default(),
        })
    }

    /// When silent replicas count as unknown, then down.
    pub fn with_health(mut self, th: fleet::HealthThresholds) -> Self {
        self.health = th;
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let store = Store::open(&self.js).await?;
        let addr = self.local_addr();
        let state = AppState {
            tokens: Tokens::open(&self.js).await?,
            grants: std::sync::Arc::new(crate::provenance::Grants::open(&self.js).await?),
            registry: self.registry,
            health: self.health,
            js: self.js,
            client: self.client,
            store,
            shutdown: shutdown.clone(),
            audit_tasks: tokio_util::task::TaskTracker::new(),
        };
        let audit_tasks = state.audit_tasks.clone();
        let served = serve(self.listener, self.tls, router(state), addr, shutdown).await;
        // The calls are answered; their outcomes still go on record.
        audit_tasks.close();
        if tokio::time::timeout(AUDIT_DRAIN, audit_tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                pending = audit_tasks.len(),
                "audit outcomes not recorded at shutdown; their attempts are"
            );
        }
        served
    }
}

/// How long a stopping API waits for outcome records still being written.
const AUDIT_DRAIN: Duration = Duration::from_secs(10);

async fn serve(
    listener: TcpListener,
    tls: Option<TlsFiles>,
    router: Router,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let Some(tls) = tls else {
        tracing::info!(addr = %addr, "api listening (plain http)");
        return axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .map_err(|e| ServiceError::Nats(format!("http server: {e}")));
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .map_err(|e| {
            ServiceError::Invalid(format!("api certificate {}: {e}", tls.cert.display()))
        })?;
    tracing::info!(addr = %addr, "api listening (https)");
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let listener = listener
        .into_std()
        .map_err(|e| ServiceError::Invalid(format!("api listener: {e}")))?;
    axum_server::from_tcp_rustls(listener, config)
        .map_err(|e| ServiceError::Invalid(format!("api listener: {e}")))?
        .handle(handle)
        .serve(app)
        .await
        .map_err(|e| ServiceError::Nats(format!("https server: {e}")))
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/projects", get(list_projects).post(create_project))
        .route("/project/{project}/jobs", get(list_jobs))
        .route("/project/{project}/jobs/import", post(import_jobs))
        .route("/project/{project}/job/{*name}", get(job_by_name))
        .route("/project/{project}/executions", get(list_executions))
        .route("/job/{id}", get(get_job).put(put_job).delete(delete_job))
        .route("/job/{id}/run", post(run_job))
        .route("/execution/{id}", get(get_execution))
        .route("/execution/{id}/output", get(get_output))
        .route("/execution/{id}/output/stream", get(stream_output))
        .route("/execution/{id}/abort", post(abort_execution))
        .route("/runners", get(list_runners).post(enrol_runner))
        .route("/runners/enrolled", get(list_enrolled))
        .route("/runners/{name}/revoke", post(revoke_runner))
        .route("/runners/{name}/rotate", post(rotate_runner))
        .route("/runners/{name}/drain", post(drain_runner))
        .route("/runners/{name}/ping", post(ping_runner))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", axum::routing::delete(revoke_token))
        .route(
            "/project/{project}/resources",
            get(list_nodes).put(put_nodes),
        )
        .route("/audit", get(list_audit))
        .route("/deadletters", get(list_dead_letters))
        // Audit wraps authentication, so that refused calls are audited too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit));
    Router::new()
        .route("/", get(index))
        .nest(API_PREFIX, api)
        .with_state(state)
}

/// Rundeck-style error body: `{"error": true, "errorCode": …, "message": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "api.error.item.doesnotexist", what)
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "api.error.invalid.request",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(error = %self.message, "api error");
        }
        let body = json!({"error": true, "errorCode": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoProject(p) => {
                ApiError::not_found(format!("project `{p}` does not exist"))
            }
            StoreError::Conflict(m) => {
                ApiError::new(StatusCode::CONFLICT, "api.error.item.conflict", m)
            }
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Service(s) => s.into(),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api.error.unavailable",
            e.to_string(),
        )
    }
}

impl From<bus::BusError> for ApiError {
    fn from(e: bus::BusError) -> Self {
        ServiceError::from(e).into()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The execution's projected state. Right after a run is accepted the
/// projector may not have folded the request yet; then the request event
/// itself is folded here, so a client reads its own write.
async fn execution_state(s: &AppState, id: Uuid) -> ApiResult<ExecutionState> {
    if let Some(st) = s.store.execution(id).await? {
        return Ok(st);
    }
    let stream =
        s.js.get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let subject = subjects::event("execution_requested", id, "*");
    let not_found = || ApiError::not_found(format!("no execution {id}"));
    let msg = match stream
        .direct_get_next_for_subject(subject.as_str(), None)
        .await
    {
        Ok(m) => m,
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::DirectGetErrorKind::NotFound
            ) =>
        {
            return Err(not_found())
        }
        Err(e) => return Err(ServiceError::Nats(e.to_string()).into()),
    };
    let event: Event = serde_json::from_slice(&msg.payload)
        .map_err(|e| ServiceError::Corrupt(format!("request of {id}: {e}")))?;
    match crate::projection::fold(None, &event) {
        crate::projection::Folded::Changed(st) => Ok(*st),
        _ => Err(not_found()),
    }
}

async fn job_or_404(s: &AppState, id: Uuid) -> ApiResult<JobRecord> {
    s.store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::invalid(format!("`{id}` is not a UUID")))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("ui/index.html"),
    )
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn list_projects(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
) -> ApiResult<Json<Vec<Project>>> {
    let mut projects = s.store.projects().await?;
    projects.retain(|p| who.sees(&p.name));
    Ok(Json(projects))
}

async fn create_project(
    State(s): State<AppState>,
    Json(p): Json<Project>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    s.store.create_project(&p).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

#[derive(Serialize)]
struct JobSummary {
    id: Uuid,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    project: String,
    description: String,
    href: String,
}

impl From<&JobRecord> for JobSummary {
    fn from(r: &JobRecord) -> Self {
        JobSummary {
            id: r.id,
            name: r.job.name.clone(),
            group: r.job.group.clone(),
            project: r.project.clone(),
            description: r.job.description.clone(),
            href: format!("{API_PREFIX}/job/{}", r.id),
        }
    }
}

async fn list_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<JobSummary>>> {
    s.store.require_project(&project).await?;
    let jobs = s.store.jobs(&project).await?;
    Ok(Json(jobs.iter().map(JobSummary::from).collect()))
}

#[derive(Deserialize)]
struct ImportQuery {
    #[serde(rename = "dupeOption", default)]
    dupe_option: DupeOption,
}

async fn import_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<ImportQuery>,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    s.store.require_project(&project).await?;
    let jobs = job_yaml::parse_jobs(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "api.error.jobs.import.invalid",
            e.to_string(),
        )
    })?;
    let imported = s.store.import(&project, jobs, q.dupe_option).await?;
    tracing::info!(project, count = imported.len(), "jobs imported");
    Ok(Json(json!({ "succeeded": imported })))
}

async fn job_by_name(
    State(s): State<AppState>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<JobRecord>> {
    s.store.require_project(&project).await?;
    s.store
        .job_by_name(&project, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job `{name}` in project `{project}`")))
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let rec = job_or_404(&s, id).await?;
    Ok(match q.format.as_deref() {
        Some("yaml") => (
            [(header::CONTENT_TYPE, "application/yaml")],
            job_yaml::to_yaml(std::slice::from_ref(&rec.job)),
        )
            .into_response(),
        _ => Json(rec).into_response(),
    })
}

async fn put_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let rec = job_or_404(&s, id).await?;
    let mut jobs = job_yaml::parse_jobs(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "api.error.jobs.import.invalid",
            e.to_string(),
        )
    })?;
    if jobs.len() != 1 {
        return Err(ApiError::invalid("PUT /job/{id} takes exactly one job"));
    }
    let mut job = jobs.remove(0);
    match job.uuid {
        Some(u) if u != id => {
            return Err(ApiError::invalid(format!(
                "the body's uuid {u} is not {id}"
            )))
        }
        _ => job.uuid = Some(id),
    }
    let imported = s
        .store
        .import(&rec.project, vec![job], DupeOption::Update)
        .await?;
    Ok(Json(json!({ "succeeded": imported })))
}

async fn delete_job(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    match s.store.delete_job(id).await? {
        Some(rec) => {
            tracing::info!(job_id = %id, project = rec.project, "job deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

#[derive(Deserialize, Default)]
struct RunRequest {
    #[serde(default)]
    options: BTreeMap<String, String>,
}

async fn run_job(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<RunRequest>>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let rec = job_or_404(&s, id).await?;
    if !rec.job.execution_enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "api.error.execution.disabled",
            format!("job `{}` has executionEnabled: false", rec.job.full_name()),
        ));
    }
    let (options, secure) = resolve_options(&rec, req.options)?;
    let execution_id = Uuid::now_v7();
    if rec.job.options.iter().any(|o| o.secure) {
        // Sealed before the request exists, so that a runner that claims a
        // step always finds them; stored even when no secure value was
        // given (an optional one left empty), since every step of the job
        // asks.
        s.registry
            .store_secrets(execution_id, &secure)
            .await
            .map_err(registry_error)?;
    }
    let event = Event::ExecutionRequested(ExecutionRequested {
        header: Header::now(),
        execution_id,
        project: rec.project.clone(),
        job_id: rec.id,
        job: rec.job.clone(),
        options,
        requested_by: who.name.clone(),
    });
    bus::publish_event(&s.js, &event).await?;
    tracing::info!(execution_id = %execution_id, job = %rec.job.full_name(), "run accepted");
    Ok(Json(json!({
        "id": execution_id,
        "href": format!("{API_PREFIX}/execution/{execution_id}"),
        "status": "queued",
        "project": rec.project,
        "job": {"id": rec.id, "name": rec.job.name, "group": rec.job.group},
    })))
}

/// Applies defaults and checks the given values against the job's options.
/// Returns the plain values and, apart, the secure ones.
#[allow(clippy::type_complexity)]
fn resolve_options(
    rec: &JobRecord,
    mut given: BTreeMap<String, String>,
) -> ApiResult<(BTreeMap<String, String>, BTreeMap<String, String>)> {
    let job = &rec.job;
    if let Some(unknown) = given
        .keys()
        .find(|k| !job.options.iter().any(|o| &&o.name == k))
    {
        return Err(ApiError::invalid(format!(
            "job `{}` has no option `{unknown}`",
            job.full_name()
        )));
    }
    let mut out = BTreeMap::new();
    let mut secure = BTreeMap::new();
    for opt in &job.options {
        let value = given.remove(&opt.name).or_else(|| opt.value.clone());
        match value {
            None if opt.required => {
                return Err(ApiError::invalid(format!(
                    "option `{}` is required and has no default",
                    opt.name
                )))
            }
            None => {}
            Some(v) => {
                if opt.enforced && !opt.values.contains(&v) {
                    return Err(ApiError::invalid(format!(
                        "option `{}` must be one of {:?}, not `{v}`",
                        opt.name, opt.values
                    )));
                }
                if opt.secure {
                    secure.insert(opt.name.clone(), v);
                } else {
                    out.insert(opt.name.clone(), v);
                }
            }
        }
    }
    Ok((out, secure))
}

#[derive(Deserialize)]
struct ListQuery {
    max: Option<usize>,
}

async fn list_executions(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    s.store.require_project(&project).await?;
    let max = q.max.unwrap_or(20).clamp(1, 1000);
    let executions = s.store.executions(&project, max).await?;
    Ok(Json(json!({"executions": executions})))
}

async fn get_execution(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExecutionState>> {
    let id = parse_id(&id)?;
    execution_state(&s, id).await.map(Json)
}

/// One output line, in Rundeck's `/execution/{id}/output` shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputEntry {
    pub time: String,
    pub absolute_time: DateTime<Utc>,
    pub level: String,
    pub log: String,
    /// 1-based step number, as a string like Rundeck's.
    pub stepctx: String,
    pub runner: String,
    pub stream: String,
    /// The node, for node steps (Rundeck's `node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputPage {
    pub id: Uuid,
    /// Pass back as `offset` to continue after the last entry returned.
    pub offset: String,
    /// The execution is over and every entry has been returned.
    pub completed: bool,
    #[serde(rename = "execCompleted")]
    pub exec_completed: bool,
    #[serde(rename = "execState")]
    pub exec_state: String,
    pub entries: Vec<OutputEntry>,
}

#[derive(Deserialize)]
struct OutputQuery {
    offset: Option<String>,
    maxlines: Option<usize>,
}

fn parse_offset(offset: Option<&str>) -> ApiResult<u64> {
    match offset {
        None | Some("") => Ok(0),
        Some(o) => o
            .parse()
            .map_err(|_| ApiError::invalid(format!("offset `{o}` is not a number"))),
    }
}

async fn get_output(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<Json<OutputPage>> {
    let id = parse_id(&id)?;
    let offset = parse_offset(q.offset.as_deref())?;
    let max = q
        .maxlines
        .unwrap_or(DEFAULT_MAX_ENTRIES)
        .clamp(1, MAX_ENTRIES_PER_PAGE);
    Ok(Json(output_page(&s, id, offset, max).await?))
}

/// Reads whole chunks after stream sequence `offset` until `max` entries or
/// the end of the execution's log.
async fn output_page(s: &AppState, id: Uuid, mut offset: u64, max: usize) -> ApiResult<OutputPage> {
    // State first: if it is terminal now, every chunk is already stored,
    // because runners publish a step's finished event after its last chunk.
    let state = execution_state(s, id).await?;
    let stream =
        s.js.get_stream_no_info(subjects::LOGS_STREAM)
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
    let filter = subjects::logs_of(id);
    let mut entries = Vec::new();
    let mut at_end = false;
    // A chunk a runner sent again after the streams' dedup window (its ack
    // was lost in a long outage) is stored twice, the copy after the
    // original. Chunks are numbered per step and runner: show each number
    // once, remembering across pages through the chunk at `offset`.
    let mut shown: BTreeMap<(u32, String), u64> = BTreeMap::new();
    if offset > 0 {
        if let Ok(prev) = stream.direct_get(offset).await {
            if let Ok(c) = serde_json::from_slice::<LogChunk>(&prev.payload) {
                if c.execution_id == id {
                    shown.insert((c.step, c.runner_id), c.seq);
                }
            }
        }
    }
    while entries.len() < max {
        match stream
            .direct_get_next_for_subject(filter.as_str(), Some(offset.saturating_add(1)))
            .await
        {
            Ok(msg) => {
                offset = msg.sequence;
                match serde_json::from_slice::<LogChunk>(&msg.payload) {
                    Ok(chunk) if !from_claimant(s, &state, &chunk, &msg.subject).await? => {
                        tracing::warn!(execution_id = %id, step = chunk.step, subject = %msg.subject, "ignoring log chunk from a runner that does not hold the step's claim");
                    }
                    Ok(chunk)
                        if shown
                            .get(&(chunk.step, chunk.runner_id.clone()))
                            .is_some_and(|&seen| chunk.seq <= seen) =>
                    {
                        tracing::debug!(execution_id = %id, step = chunk.step, seq = chunk.seq, "skipping a repeated log chunk");
                    }
                    Ok(chunk) => {
                        shown.insert((chunk.step, chunk.runner_id.clone()), chunk.seq);
                        entries.extend(chunk.entries.into_iter().map(|e| OutputEntry {
                            time: e.time.format("%H:%M:%S").to_string(),
                            absolute_time: e.time,
                            level: e.level,
                            log: e.log,
                            stepctx: chunk.step.to_string(),
                            runner: chunk.runner_id.clone(),
                            stream: format!("{:?}", e.stream).to_lowercase(),
                            node: e.node,
                        }));
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, execution_id = %id, seq = offset, "skipping malformed log chunk")
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::stream::DirectGetErrorKind::NotFound
                ) =>
            {
                at_end = true;
                break;
            }
            Err(e) => return Err(ServiceError::Nats(e.to_string()).into()),
        }
    }
    let exec_completed = state.status.is_terminal();
    Ok(OutputPage {
        id,
        offset: offset.to_string(),
        completed: exec_completed && at_end,
        exec_completed,
        exec_state: format!("{:?}", state.status).to_lowercase(),
        entries,
    })
}

/// Whether a log chunk was published by the runner holding its step's
/// claim: NATS permissions fix the runner id in the subject, and any runner
/// may publish logs under its own id for any execution.
async fn from_claimant(
    s: &AppState,
    state: &ExecutionState,
    chunk: &LogChunk,
    subject: &str,
) -> ApiResult<bool> {
    let sender = subject.rsplit('.').next().unwrap_or_default();
    // A node job's whole workflow runs under the claim of its one dispatch.
    let step = if state.node_dispatch { 1 } else { chunk.step };
    // Cannot check now (the read already rode out transient errors): the
    // page fails, rather than show output nobody vouched for.
    let holder = s
        .grants
        .holder(state.id, step)
        .await
        .map_err(ApiError::from)?;
    Ok(holder.is_some_and(|h| h == sender))
}

/// Server-sent events: `output` events carry [`OutputPage`]s as they come,
/// then one `end` event carries the final execution state.
async fn stream_output(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id)?;
    let offset = parse_offset(q.offset.as_deref())?;
    // Fail fast on an unknown execution rather than streaming nothing.
    output_page(&s, id, offset, 1).await?;
    let (tx, rx) = mpsc::channel::<SseEvent>(16);
    tokio::spawn(follow(s, id, offset, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn follow(s: AppState, id: Uuid, mut offset: u64, tx: mpsc::Sender<SseEvent>) {
    // Subscribe before reading, so nothing published in between is missed:
    // every log chunk and every state change wakes us.
    let mut logs = match s.client.subscribe(subjects::logs_of(id)).await {
        Ok(sub) => sub,
        Err(_) => return,
    };
    let mut changes = match s
        .store
        .executions_bucket()
        .watch(subjects::execution_key(id))
        .await
    {
        Ok(w) => w,
        Err(_) => return,
    };
    loop {
        let page = match output_page(&s, id, offset, DEFAULT_MAX_ENTRIES).await {
            Ok(p) => p,
            Err(err) => {
                let _ = tx
                    .send(SseEvent::default().event("error").data(err.message))
                    .await;
                return;
            }
        };
        offset = page.offset.parse().unwrap_or(offset);
        let completed = page.completed;
        let more = page.entries.len() >= DEFAULT_MAX_ENTRIES;
        if !page.entries.is_empty() {
            let data = serde_json::to_string(&page).expect("page serialises");
            if tx
                .send(SseEvent::default().event("output").data(data))
                .await
                .is_err()
            {
                return;
            }
        }
        if completed {
            if let Ok(state) = execution_state(&s, id).await {
                let data = serde_json::to_string(&state).expect("state serialises");
                let _ = tx.send(SseEvent::default().event("end").data(data)).await;
            }
            return;
        }
        if more {
            continue;
        }
        // The timeout is a safety net against a missed wake-up, not the cadence.
        tokio::select! {
            _ = logs.next() => {}
            _ = changes.next() => {}
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tx.closed() => return,
            _ = s.shutdown.cancelled() => return,
        }
    }
}

async fn abort_execution(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = parse_id(&id)?;
    let state = execution_state(&s, id).await?;
    if state.status.is_terminal() {
        return Ok(Json(json!({
            "abort": {"status": "failed", "reason": format!("execution is already {:?}", state.status).to_lowercase()},
            "execution": {"id": id, "status": state.status},
        })));
    }
    bus::publish_event(
        &s.js,
        &Event::AbortRequested(AbortRequested {
            header: Header::now(),
            execution_id: id,
            requested_by: who.name.clone(),
        }),
    )
    .await?;
    tracing::info!(execution_id = %id, "abort requested");
    Ok(Json(json!({
        "abort": {"status": "pending"},
        "execution": {"id": id, "status": state.status},
    })))
}

/// `GET /runners`: one entry per replica (its latest heartbeat, `live` and
/// `health`), and one per enrolled runner that never checked in (`new`).
/// `runner_health` is the runner's, from its healthiest replica.
async fn list_runners(State(s): State<AppState>) -> ApiResult<Json<Vec<serde_json::Value>>> {
    let hbs = fleet::heartbeats(&s.js).await.map_err(ServiceError::Nats)?;
    let now = Utc::now();
    let mut by_runner: BTreeMap<String, Vec<fleet::Health>> = BTreeMap::new();
    for h in &hbs {
        by_runner
            .entry(h.runner_id.clone())
            .or_default()
            .push(fleet::replica_health(h, now, s.health));
    }
    let mut out: Vec<serde_json::Value> = hbs
        .into_iter()
        .map(|h| {
            let health = fleet::replica_health(&h, now, s.health);
            let runner = fleet::runner_health(by_runner[&h.runner_id].iter().copied());
            let live = fleet::is_live(&h);
            let mut v = serde_json::to_value(&h).expect("heartbeat serialises");
            v["live"] = json!(live);
            v["health"] = json!(health);
            v["runner_health"] = json!(runner);
            v
        })
        .collect();
    if let Ok(enrolled) = s.registry.list().await {
        for rec in enrolled
            .into_iter()
            .filter(|r| r.revoked.is_none() && !by_runner.contains_key(&r.name))
        {
            // Heartbeats expire after a day: one that ran once is down.
            let health = if rec.started.is_some() {
                fleet::Health::Down
            } else {
                fleet::Health::New
            };
            out.push(json!({
                "runner_id": rec.name,
                "tags": rec.tags,
                "live": false,
                "health": health,
                "runner_health": health,
                "started": rec.started,
            }));
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct NodesQuery {
    filter: Option<String>,
    #[serde(rename = "excludePrecedence", default = "yes")]
    exclude_precedence: bool,
}

fn yes() -> bool {
    true
}

/// Rundeck's `GET /project/{p}/resources?filter=…`: the project's nodes and
/// those runners report, optionally filtered. No filter lists every node.
async fn list_nodes(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<NodesQuery>,
) -> ApiResult<Json<Vec<crate::store::NodeView>>> {
    let filter = match q.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(f) => Some(
            outpost_schemas::node_filter::parse(f).map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
    };
    let reports = fleet::node_reports(&s.js)
        .await
        .map_err(ServiceError::Nats)?;
    let mut nodes = s.store.nodes(&project, reports).await?;
    if let Some(f) = filter {
        nodes.retain(|n| f.selects(&n.node, q.exclude_precedence));
    }
    nodes.sort_by(|a, b| a.node.nodename.cmp(&b.node.nodename));
    Ok(Json(nodes))
}

/// Replaces the project's node source with a resources.yaml body.
async fn put_nodes(
    State(s): State<AppState>,
    Path(project): Path<String>,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
    let nodes = outpost_runner::inventory::parse_resources(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "api.error.resources.invalid",
            e.to_string(),
        )
    })?;
    let count = nodes.len();
    s.store.put_project_nodes(&project, nodes).await?;
    tracing::info!(project, count, "project nodes replaced");
    Ok(Json(json!({ "project": project, "nodes": count })))
}

#[derive(Serialize)]
struct DeadLetters {
    /// Dead letters per `outpost.dlq.<source>.<consumer>` subject.
    counts: BTreeMap<String, u64>,
    /// The newest (at most 50), newest last.
    recent: Vec<DeadLetter>,
}

#[derive(Serialize)]
struct DeadLetter {
    seq: u64,
    consumer: String,
    subject: String,
    error: String,
    time: DateTime<Utc>,
    /// The payload as text (lossy), at most 4 KiB.
    payload: String,
}

/// `GET /deadletters`: how many messages each consumer could not read, and
/// the newest of them with why.
async fn list_dead_letters(State(s): State<AppState>) -> ApiResult<Json<DeadLetters>> {
    let (stream, state) = crate::stream_with_state(&s.js, subjects::DEADLETTER_STREAM).await?;
    let mut counts = BTreeMap::new();
    if state.messages > 0 {
        use futures::TryStreamExt;
        let by_subject: std::collections::HashMap<String, usize> = stream
            .info_with_subjects("outpost.dlq.>")
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        counts = by_subject.into_iter().map(|(k, v)| (k, v as u64)).collect();
    }
    let mut recent = Vec::new();
    if state.messages > 0 {
        let from = state
            .last_sequence
            .saturating_sub(49)
            .max(state.first_sequence);
        for seq in from..=state.last_sequence {
            let Ok(m) = stream.direct_get(seq).await else {
                continue;
            };
            let header = |name: &str| {
                m.headers
                    .get(name)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            let payload = &m.payload[..m.payload.len().min(4096)];
            recent.push(DeadLetter {
                seq,
                consumer: m.subject.to_string(),
                subject: header(subjects::DLQ_SUBJECT_HEADER),
                error: header(subjects::DLQ_ERROR_HEADER),
                time: DateTime::<Utc>::from_timestamp(m.time.unix_timestamp(), m.time.nanosecond())
                    .unwrap_or_default(),
                payload: String::from_utf8_lossy(payload).into_owned(),
            });
        }
    }
    Ok(Json(DeadLetters { counts, recent }))
}

/// Who made a call, for the audit record (set by `authenticate`).
#[derive(Clone)]
struct Actor(String);

/// The token of a request: `Authorization: Bearer …`, or Rundeck's
/// `X-Rundeck-Auth-Token` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            headers
                .get("x-rundeck-auth-token")
                .and_then(|v| v.to_str().ok())
        })
        .map(str::trim)
}

/// Checks the caller's token against the route's policy
/// ([`auth::policy`]): 401 without a valid token, 403 without the role.
async fn authenticate(
    State(s): State<AppState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| format!("{API_PREFIX}{}", req.uri().path()));
    let need = auth::policy(req.method().as_str(), &route);
    if need == Need::Nothing {
        return next.run(req).await;
    }
    let refuse = |status: StatusCode, code: &'static str, message: String, actor: &str| {
        let mut r = ApiError::new(status, code, message).into_response();
        r.extensions_mut().insert(Actor(actor.to_string()));
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("header"));
        }
        r
    };
    let principal = match bearer(req.headers()) {
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "api.error.unauthorized",
                "no API token: send `Authorization: Bearer <token>`".into(),
                "anonymous",
            )
        }
        Some(t) => match s.tokens.verify(t).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "api.error.unauthorized",
                    "the API token is not valid (unknown, revoked or malformed)".into(),
                    "anonymous",
                )
            }
            Err(e) => return ApiError::from(ServiceError::Nats(e.to_string())).into_response(),
        },
    };
    let allowed = match need {
        Need::Nothing | Need::AnyToken => Ok(true),
        Need::Global(role) => Ok(principal.has(role, None)),
        Need::Project(role, from) => match project_of(&s, &mut req, from).await {
            // Unknown ids go on to the handler, which says 404 — to those
            // who could see them. Others are told no more than 403.
            Ok(None) => Ok(principal.has(Role::Viewer, None)),
            Ok(Some(project)) => Ok(principal.has(role, Some(&project))),
            Err(e) => Err(e),
        },
    };
    match allowed {
        Ok(true) => {}
        Ok(false) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "api.error.forbidden",
                format!(
                    "token `{}` does not have the role this call needs ({need:?})",
                    principal.name
                ),
                &principal.name,
            )
        }
        Err(e) => {
            let mut r = e.into_response();
            r.extensions_mut().insert(Actor(principal.name.clone()));
            return r;
        }
    }
    let name = principal.name.clone();
    // A mutating call runs only once its attempt is on record.
    if let Some(call) = req.extensions().get::<AuditedCall>().cloned() {
        if let Err(err) = record_attempt(&s, &call, &name).await {
            tracing::error!(error = %err, action = %call.action, "cannot record the audit attempt; refusing the call");
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api.error.audit-unavailable",
                format!("the audit trail cannot be written, so nothing was done: {err}"),
            )
            .into_response();
            r.extensions_mut().insert(Actor(name));
            return r;
        }
    }
    req.extensions_mut().insert(principal);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(Actor(name));
    response
}

/// The project a request acts on; `None` when its job or execution does
/// not exist.
async fn project_of(
    s: &AppState,
    req: &mut axum::extract::Request,
    from: ProjectOf,
) -> ApiResult<Option<String>> {
    use axum::extract::RawPathParams;
    use axum::RequestPartsExt;
    let (mut parts, body) = std::mem::take(req).into_parts();
    let params = parts.extract::<RawPathParams>().await;
    *req = axum::extract::Request::from_parts(parts, body);
    let params = params.map_err(|e| ApiError::invalid(e.to_string()))?;
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    match from {
        ProjectOf::Path => Ok(param("project")),
        ProjectOf::Job => {
            let Some(id) = param("id").and_then(|i| Uuid::parse_str(&i).ok()) else {
                return Ok(None);
            };
            Ok(s.store.job(id).await?.map(|j| j.project))
        }
        ProjectOf::Execution => {
            let Some(id) = param("id").and_then(|i| Uuid::parse_str(&i).ok()) else {
                return Ok(None);
            };
            match execution_state(s, id).await {
                Ok(st) => Ok(Some(st.project)),
                Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Invalid(m) => ApiError::invalid(m),
        RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
        RegistryError::Exists(_) | RegistryError::Revoked(_) => ApiError::new(
            StatusCode::CONFLICT,
            "api.error.item.conflict",
            e.to_string(),
        ),
        RegistryError::NoKeys => ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "api.error.security.nokeys",
            e.to_string(),
        ),
        RegistryError::Security(_) | RegistryError::Service(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api.error.unavailable",
            e.to_string(),
        ),
    }
}

fn auth_error(e: auth::AuthError) -> ApiError {
    match e {
        auth::AuthError::Invalid(m) => ApiError::invalid(m),
        auth::AuthError::NotFound(_) => ApiError::not_found(e.to_string()),
        auth::AuthError::Service(s) => s.into(),
    }
}

#[derive(Deserialize)]
struct EnrolRequest {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// `POST /runners`: enrols a runner; the bundle in the reply is the only
/// copy of its credentials.
async fn enrol_runner(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<EnrolRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let (rec, bundle) = s
        .registry
        .enrol(&req.name, &req.tags, &who.name)
        .await
        .map_err(registry_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"runner": rec, "bundle": crate::registry::bundle_text(&bundle)})),
    ))
}

async fn list_enrolled(
    State(s): State<AppState>,
) -> ApiResult<Json<Vec<crate::registry::RunnerRecord>>> {
    Ok(Json(s.registry.list().await.map_err(registry_error)?))
}

async fn revoke_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (ended, cut) = s.registry.revoke(&name).await.map_err(registry_error)?;
    Ok(Json(json!({
        "runner": name,
        "revoked": true,
        "steps_ended": ended,
        // False when NATS is not in operator mode: the registry refuses the
        // runner's claims, but nothing cut its connection.
        "connections_cut": cut,
    })))
}

async fn rotate_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let bundle = s.registry.rotate(&name).await.map_err(registry_error)?;
    Ok(Json(
        json!({"runner": name, "bundle": crate::registry::bundle_text(&bundle)}),
    ))
}

/// `POST /runners/{name}/drain`: every replica stops taking steps, lets its
/// running ones finish, and stops (then shows `down`).
async fn drain_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    if name.starts_with('_') {
        return Err(ApiError::invalid(
            "the control plane's local runner is not drained this way; stop its service",
        ));
    }
    let hbs = fleet::heartbeats(&s.js).await.map_err(ServiceError::Nats)?;
    let live = hbs
        .iter()
        .filter(|h| h.runner_id == name && fleet::is_live(h))
        .count();
    s.client
        .publish(subjects::runner_control(&name, "drain"), "drain".into())
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    s.client
        .flush()
        .await
        .map_err(|e| ServiceError::Nats(e.to_string()))?;
    Ok(Json(
        json!({"runner": name, "draining": true, "live_replicas": live}),
    ))
}

/// `POST /runners/{name}/ping`: a round trip through every replica that
/// answers within 2 s.
async fn ping_runner(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let nats = |e: String| ApiError::from(ServiceError::Nats(e));
    let mut pongs = s
        .client
        .subscribe(subjects::rpc(&name, "pong"))
        .await
        .map_err(|e| nats(e.to_string()))?;
    let nonce = Uuid::now_v7();
    let ping = outpost_schemas::rpc::Ping { nonce };
    let sent = std::time::Instant::now();
    s.client
        .publish(
            subjects::runner_control(&name, "ping"),
            serde_json::to_vec(&ping).expect("ping").into(),
        )
        .await
        .map_err(|e| nats(e.to_string()))?;
    let mut replicas = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, pongs.next()).await {
        if let Ok(p) = serde_json::from_slice::<outpost_schemas::rpc::Pong>(&msg.payload) {
            if p.nonce == nonce {
                replicas.push(json!({
                    "replica_id": p.replica_id,
                    "rtt_ms": sent.elapsed().as_secs_f64() * 1000.0,
                }));
            }
        }
    }
    Ok(Json(json!({"runner": name, "replicas": replicas})))
}

#[derive(Deserialize)]
struct TokenRequest {
    name: String,
    /// `admin`, `ops=operator`, `*=viewer`…
    roles: Vec<String>,
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    roles: BTreeMap<String, Role>,
    created: DateTime<Utc>,
    created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked: Option<DateTime<Utc>>,
}

impl From<auth::TokenRecord> for TokenView {
    fn from(r: auth::TokenRecord) -> Self {
        TokenView {
            id: r.id,
            name: r.name,
            roles: r.roles,
            created: r.created,
            created_by: r.created_by,
            revoked: r.revoked,
        }
    }
}

async fn create_token(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let roles = auth::parse_roles(&req.roles).map_err(ApiError::invalid)?;
    let (rec, token) = s
        .tokens
        .create(&req.name, roles, &who.name)
        .await
        .map_err(auth_error)?;
    let mut body = serde_json::to_value(TokenView::from(rec)).expect("json");
    body["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<TokenView>>> {
    let list = s.tokens.list().await.map_err(auth_error)?;
    Ok(Json(list.into_iter().map(TokenView::from).collect()))
}

async fn revoke_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(s.tokens.revoke(&id).await.map_err(auth_error)?.into()))
}

/// A mutating call on its way through the middlewares: what the audit
/// records of it say.
#[derive(Clone)]
struct AuditedCall {
    request_id: Uuid,
    action: String,
    target: String,
    source: String,
}

impl AuditedCall {
    fn record(&self, actor: &str, result: AuditResult, status: u16) -> AuditEvent {
        AuditEvent {
            header: Header::now(),
            actor: actor.to_string(),
            action: self.action.clone(),
            target: self.target.clone(),
            source: self.source.clone(),
            result,
            status,
            detail: None,
            request_id: Some(self.request_id),
        }
    }
}

/// How long an attempt record may take before the call is refused: a
/// moment's unavailability is ridden out, an outage is not waited on.
const ATTEMPT_WITHIN: Duration = Duration::from_secs(3);

async fn record_attempt(
    s: &AppState,
    call: &AuditedCall,
    actor: &str,
) -> Result<(), bus::BusError> {
    let event = call.record(actor, AuditResult::Attempted, 0);
    let payload = bus::encode(subjects::AUDIT_API, &event)?;
    let id = format!("attempt.{}", call.request_id);
    bus::publish_acked_within(&s.js, subjects::AUDIT_API, &id, payload, ATTEMPT_WITHIN)
        .await
        .map(drop)
}

/// Records every mutating call (anything but GET/HEAD/OPTIONS) on the audit
/// stream: its attempt before it runs (see [`authenticate`]), and its
/// outcome after, off the response path. Refused calls get an outcome only.
async fn audit(
    State(s): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    let method = req.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    // The router is nested under API_PREFIX, which axum strips from the URI.
    let target = format!("{API_PREFIX}{}", req.uri().path());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| target.clone());
    let call = AuditedCall {
        request_id: Uuid::now_v7(),
        action: format!("{method} {route}"),
        target,
        source: peer.to_string(),
    };
    req.extensions_mut().insert(call.clone());
    let response = next.run(req).await;
    let status = response.status();
    let actor = response
        .extensions()
        .get::<Actor>()
        .map(|a| a.0.clone())
        .unwrap_or_else(|| "anonymous".into());
    let result = if status.is_success() {
        AuditResult::Success
    } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        AuditResult::Denied
    } else {
        AuditResult::Error
    };
    let event = call.record(&actor, result, status.as_u16());
    let js = s.js.clone();
    s.audit_tasks.spawn(async move {
        let id = format!("outcome.{}", call.request_id);
        if let Err(err) = bus::publish_json(&js, subjects::AUDIT_API, &id, &event).await {
            tracing::error!(error = %err, action = event.action, "cannot record the audit outcome; its attempt is on record");
        }
    });
    response
}

#[derive(Deserialize)]
struct AuditQuery {
    /// Only events after this stream sequence (for following).
    after: Option<u64>,
    max: Option<usize>,
}

#[derive(Serialize)]
struct AuditEntry {
    seq: u64,
    #[serde(flatten)]
    event: outpost_schemas::AuditEvent,
}

/// The newest audit events (at most `max`, default 50), oldest first; or,
/// with `after`, those that follow that sequence.
async fn list_audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let max = q.max.unwrap_or(50).clamp(1, 1000);
    let (stream, state) = crate::stream_with_state(&s.js, subjects::AUDIT_STREAM).await?;
    if state.messages == 0 {
        return Ok(Json(Vec::new()));
    }
    let from = match q.after {
        // Never below the first stored event: an old `after` must not make
        // us walk a gap of deleted sequences one by one.
        Some(a) => a.saturating_add(1).max(state.first_sequence),
        None => state
            .last_sequence
            .saturating_sub(max as u64 - 1)
            .max(state.first_sequence),
    };
    let mut out = Vec::new();
    let mut seq = from;
    while seq <= state.last_sequence && out.len() < max {
        if let Ok(msg) = stream.direct_get(seq).await {
            if let Ok(event) = serde_json::from_slice(&msg.payload) {
                out.push(AuditEntry { seq, event });
            }
        }
        seq += 1;
    }
    Ok(Json(out))
}
