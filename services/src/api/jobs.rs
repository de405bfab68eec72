//! `/project/{p}/jobs`, `/job/{id}`: import, read, replace, delete and run jobs.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_bus as bus;
use outpost_schemas::{Event, ExecutionRequested, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::formats::job_yaml;
use crate::security::auth::Principal;
use crate::store::{DupeOption, JobRecord};

use super::error::{registry_error, ApiError, ApiResult};
use super::{parse_id, AppState, API_PREFIX};

pub(super) async fn job_or_404(s: &AppState, id: Uuid) -> ApiResult<JobRecord> {
    s.store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

#[derive(Serialize)]
pub(super) struct JobSummary {
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

pub(super) async fn list_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<JobSummary>>> {
    s.store.require_project(&project).await?;
    let jobs = s.store.jobs(&project).await?;
    Ok(Json(jobs.iter().map(JobSummary::from).collect()))
}

#[derive(Deserialize)]
pub(super) struct ImportQuery {
    #[serde(rename = "dupeOption", default)]
    dupe_option: DupeOption,
}

pub(super) async fn import_jobs(
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

pub(super) async fn job_by_name(
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
pub(super) struct FormatQuery {
    format: Option<String>,
}

pub(super) async fn get_job(
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

pub(super) async fn put_job(
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

pub(super) async fn delete_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
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
pub(super) struct RunRequest {
    #[serde(default)]
    options: BTreeMap<String, String>,
}

pub(super) async fn run_job(
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
pub(super) fn resolve_options(
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
