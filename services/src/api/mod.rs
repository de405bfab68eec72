//! The REST API (axum), shaped after Rundeck's: `/api/v1/project/{p}/jobs`,
//! `/api/v1/job/{id}/run`, `/api/v1/execution/{id}/output`, …
//!
//! Stateless: reads come from KV and streams, and a run is one event publish.

use std::net::SocketAddr;
use std::time::Duration;

use async_nats::jetstream;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::fleet::health;
use crate::fleet::registry::Registry;
use crate::security::auth::Tokens;
use crate::store::Store;
use crate::ServiceError;

mod audit;
mod authn;
mod deadletters;
mod error;
mod executions;
mod jobs;
mod nodes;
mod openapi;
mod option_values;
mod projects;
mod runners;
mod tokens;

pub use crate::contract::API_PREFIX;
pub use error::ApiError;
use error::ApiResult;
pub use openapi::{document as openapi_document, render as render_openapi};
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
    grants: std::sync::Arc<crate::engine::provenance::Grants>,
    health: health::HealthThresholds,
    /// Ends live streams, so that graceful shutdown does not wait on them.
    shutdown: CancellationToken,
    /// Each project's executions, kept by a watch this replica owns.
    executions: crate::store::execution_index::ExecutionIndex,
    /// Outcome records on their way to the audit stream.
    audit_tasks: tokio_util::task::TaskTracker,
}

pub struct Api {
    listener: TcpListener,
    client: async_nats::Client,
    js: jetstream::Context,
    registry: Registry,
    tls: Option<TlsFiles>,
    health: health::HealthThresholds,
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
            health: health::HealthThresholds::default(),
        })
    }

    /// When silent replicas count as unknown, then down.
    pub fn with_health(mut self, th: health::HealthThresholds) -> Self {
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
            grants: std::sync::Arc::new(crate::engine::provenance::Grants::open(&self.js).await?),
            registry: self.registry,
            health: self.health,
            js: self.js,
            client: self.client,
            store,
            shutdown: shutdown.clone(),
            audit_tasks: tokio_util::task::TaskTracker::new(),
            executions: Default::default(),
        };
        tokio::spawn(
            state.executions.clone().maintain(
                crate::store::bucket::Bucket::open(
                    &state.js,
                    outpost_schemas::subjects::EXECUTION_INDEX_BUCKET,
                )
                .await?,
                shutdown.clone(),
            ),
        );
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
        .route("/openapi.json", get(openapi::serve))
        .route(
            "/projects",
            get(projects::list_projects).post(projects::create_project),
        )
        .route(
            "/project/{project}/config",
            get(projects::get_config).put(projects::put_config),
        )
        .route(
            "/project/{project}/config/{key}",
            put(projects::put_config_key).delete(projects::delete_config_key),
        )
        .route("/project/{project}/jobs", get(jobs::list_jobs))
        .route("/project/{project}/jobs/import", post(jobs::import_jobs))
        .route("/project/{project}/jobs/export", get(jobs::export_jobs))
        .route("/project/{project}/job/{*name}", get(jobs::job_by_name))
        .route(
            "/project/{project}/executions",
            get(executions::list_executions),
        )
        .route(
            "/job/{id}",
            get(jobs::get_job)
                .put(jobs::put_job)
                .delete(jobs::delete_job),
        )
        .route("/job/{id}/run", post(jobs::run_job))
        .route(
            "/job/{id}/option/{name}/values",
            get(option_values::option_values),
        )
        .route("/execution/{id}", get(executions::get_execution))
        .route("/execution/{id}/output", get(executions::get_output))
        .route(
            "/execution/{id}/output/stream",
            get(executions::stream_output),
        )
        .route("/execution/{id}/abort", post(executions::abort_execution))
        .route(
            "/runners",
            get(runners::list_runners).post(runners::enrol_runner),
        )
        .route("/runners/enrolled", get(runners::list_enrolled))
        .route("/runners/{name}/revoke", post(runners::revoke_runner))
        .route("/runners/{name}/rotate", post(runners::rotate_runner))
        .route("/runners/{name}/drain", post(runners::drain_runner))
        .route("/runners/{name}/ping", post(runners::ping_runner))
        .route(
            "/tokens",
            get(tokens::list_tokens).post(tokens::create_token),
        )
        .route("/tokens/{id}", axum::routing::delete(tokens::revoke_token))
        .route(
            "/project/{project}/resources",
            get(nodes::list_nodes).put(nodes::put_nodes),
        )
        .route("/audit", get(audit::list_audit))
        .route("/deadletters", get(deadletters::list_dead_letters))
        // Audit wraps authentication, so that refused calls are audited too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authn::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::audit,
        ));
    Router::new()
        .route("/", get(index))
        .nest(API_PREFIX, api)
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state)
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

#[utoipa::path(get, path = "/api/v1/health", tag = "system",
    responses((status = 200, description = "The API process is up (NATS is not asked)", body = crate::contract::HealthReply)))]
async fn health() -> Json<crate::contract::HealthReply> {
    Json(crate::contract::HealthReply {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}
