//! `/project/{p}/jobs`, `/job/{id}`: import, read, replace, delete and run jobs.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use outpost_bus as bus;
use outpost_schemas::{Event, ExecutionRequested, Header};
use serde::Deserialize;
use uuid::Uuid;

use crate::contract::{
    DupeOption, ImportResult, JobDetail, JobRef, JobSummary, RunAccepted, RunRequest,
};
use crate::formats::{self, Format};
use crate::security::auth::Principal;
use crate::store::running::Admission;
use crate::store::JobRecord;

use super::error::{registry_error, ApiError, ApiResult};
use super::{parse_id, AppState, API_PREFIX};

/// A job file's format: the `fileformat` parameter (Rundeck's name), else
/// the body's `Content-Type`, else what the text looks like.
fn file_format(
    param: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: &str,
) -> ApiResult<Format> {
    if let Some(name) = param {
        return Format::from_name(name).ok_or_else(|| unknown_format(name));
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_media_type);
    Ok(declared.unwrap_or_else(|| Format::sniff(body)))
}

fn unknown_format(name: &str) -> ApiError {
    ApiError::invalid(format!("unknown format `{name}`: use yaml, xml or json"))
}

fn parse_body(body: &str, format: Format) -> ApiResult<Vec<outpost_schemas::job::Job>> {
    formats::parse_jobs(body, format).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "api.error.jobs.import.invalid",
            format!("{} job file: {e}", format.name().to_uppercase()),
        )
    })
}

/// A job file as text of its own media type.
fn job_file(jobs: &[outpost_schemas::job::Job], format: Format) -> Response {
    (
        [(header::CONTENT_TYPE, format.media_type())],
        formats::export(jobs, format),
    )
        .into_response()
}

fn import_result(imported: Vec<crate::store::Imported>) -> Json<ImportResult> {
    Json(ImportResult {
        succeeded: imported.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn job_or_404(s: &AppState, id: Uuid) -> ApiResult<JobRecord> {
    s.store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// A project's jobs.
#[utoipa::path(get, path = "/api/v1/project/{project}/jobs", tag = "jobs",
    params(("project" = String, Path)),
    responses((status = 200, body = Vec<JobSummary>)))]
pub(super) async fn list_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<Vec<JobSummary>>> {
    s.store.require_project(&project).await?;
    let jobs = s.store.jobs(&project).await?;
    Ok(Json(jobs.iter().map(JobSummary::from).collect()))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ImportQuery {
    /// What to do with a job that exists: `update` (the default), `skip` or `create`.
    #[param(value_type = Option<String>)]
    #[serde(rename = "dupeOption", default)]
    dupe_option: DupeOption,
    /// `yaml`, `xml` or `json`; by default the body's `Content-Type`, else
    /// what the text looks like.
    fileformat: Option<String>,
}

/// Imports a job file: Rundeck's job YAML, XML or JSON. Nothing is stored
/// unless every job in it is valid.
#[utoipa::path(post, path = "/api/v1/project/{project}/jobs/import", tag = "jobs",
    params(("project" = String, Path), ImportQuery),
    request_body(description = "A list of jobs in Rundeck's job YAML, XML (`<joblist>`) or JSON",
        content((String = "application/yaml"), (String = "application/xml"), (String = "application/json"))),
    responses((status = 200, body = ImportResult)))]
pub(super) async fn import_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<ImportQuery>,
    headers: axum::http::HeaderMap,
    body: String,
) -> ApiResult<Json<ImportResult>> {
    s.store.require_project(&project).await?;
    let format = file_format(q.fileformat.as_deref(), &headers, &body)?;
    let jobs = parse_body(&body, format)?;
    let imported = s.store.import(&project, jobs, q.dupe_option).await?;
    tracing::info!(project, count = imported.len(), "jobs imported");
    Ok(import_result(imported))
}

/// A job by its `group/name`.
#[utoipa::path(get, path = "/api/v1/project/{project}/job/{name}", tag = "jobs",
    params(("project" = String, Path), ("name" = String, Path, description = "`group/name`, or `name`; slashes are not escaped")),
    responses((status = 200, body = JobDetail)))]
pub(super) async fn job_by_name(
    State(s): State<AppState>,
    Path((project, name)): Path<(String, String)>,
) -> ApiResult<Json<JobDetail>> {
    s.store.require_project(&project).await?;
    s.store
        .job_by_name(&project, &name)
        .await?
        .map(|r| Json(r.into()))
        .ok_or_else(|| ApiError::not_found(format!("no job `{name}` in project `{project}`")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FormatQuery {
    /// `yaml`, `xml` or `json`: the definition alone, as a one-job file of
    /// that format. Without it, the job as Outpost stores it.
    format: Option<String>,
}

/// A job and its definition.
#[utoipa::path(get, path = "/api/v1/job/{id}", tag = "jobs",
    params(("id" = Uuid, Path), FormatQuery),
    responses((status = 200, description = "The job as stored; with `format`, its definition alone as a one-job file of that format (for `format=json`, a `JobList`)",
        content((JobDetail = "application/json"), (String = "application/yaml"), (String = "application/xml")))))]
pub(super) async fn get_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FormatQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let rec = job_or_404(&s, id).await?;
    Ok(match q.format.as_deref() {
        Some(name) => {
            let format = Format::from_name(name).ok_or_else(|| unknown_format(name))?;
            job_file(std::slice::from_ref(&rec.job), format)
        }
        None => Json(JobDetail::from(rec)).into_response(),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct FileFormatQuery {
    /// `yaml`, `xml` or `json`; by default the body's `Content-Type`, else
    /// what the text looks like.
    fileformat: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// `yaml` (the default), `xml` or `json`.
    format: Option<String>,
}

/// Every job of a project as one job file, by group and name.
#[utoipa::path(get, path = "/api/v1/project/{project}/jobs/export", tag = "jobs",
    params(("project" = String, Path), ExportQuery),
    responses((status = 200, description = "A job file that `jobs/import` reads back to the same jobs",
        content((String = "application/yaml"), (String = "application/xml"), (crate::contract::JobList = "application/json")))))]
pub(super) async fn export_jobs(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let format = match q.format.as_deref() {
        Some(name) => Format::from_name(name).ok_or_else(|| unknown_format(name))?,
        None => Format::Yaml,
    };
    s.store.require_project(&project).await?;
    let mut jobs: Vec<_> = s
        .store
        .jobs(&project)
        .await?
        .into_iter()
        .map(|r| r.job)
        .collect();
    jobs.sort_by_key(|j| j.full_name());
    Ok(job_file(&jobs, format))
}

/// Replaces a job's definition (a one-job file; its uuid, if any, must be the job's).
#[utoipa::path(put, path = "/api/v1/job/{id}", tag = "jobs",
    params(("id" = Uuid, Path), FileFormatQuery),
    request_body(description = "One job in Rundeck's job YAML, XML or JSON",
        content((String = "application/yaml"), (String = "application/xml"), (String = "application/json"))),
    responses((status = 200, body = ImportResult)))]
pub(super) async fn put_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<FileFormatQuery>,
    headers: axum::http::HeaderMap,
    body: String,
) -> ApiResult<Json<ImportResult>> {
    let id = parse_id(&id)?;
    let rec = job_or_404(&s, id).await?;
    let format = file_format(q.fileformat.as_deref(), &headers, &body)?;
    let mut jobs = parse_body(&body, format)?;
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
    Ok(import_result(imported))
}

#[utoipa::path(delete, path = "/api/v1/job/{id}", tag = "jobs",
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted; its executions are kept")))]
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

/// Runs a job: the execution exists once this answers.
#[utoipa::path(post, path = "/api/v1/job/{id}/run", tag = "jobs",
    params(("id" = Uuid, Path)),
    request_body(content = Option<RunRequest>, content_type = "application/json"),
    responses((status = 200, body = RunAccepted), (status = 409, description = "The job has `executionEnabled: false`, or already runs as many executions as `multipleExecutions` allows", body = crate::contract::ErrorBody)))]
pub(super) async fn run_job(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<RunRequest>>,
) -> ApiResult<Json<RunAccepted>> {
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
    let given = given_options(req)?;
    let remote = super::option_values::for_run(&s, &rec, &who, &given).await?;
    let (options, secure) = rec
        .job
        .resolve_options_with(given, &remote)
        .map_err(ApiError::invalid)?;
    // Read now, so that a timeout option that is no timeout is the caller's
    // 400 rather than a failed execution.
    rec.job.timeout_for(&options).map_err(ApiError::invalid)?;
    rec.job.retry_for(&options).map_err(ApiError::invalid)?;
    let execution_id = Uuid::now_v7();
    let admission = s
        .store
        .admit(rec.id, rec.job.running_limit(), execution_id)
        .await?;
    if let Admission::Full { running } = admission {
        tracing::info!(job = %rec.job.full_name(), running = running.len(), "run refused: limit of running executions");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "api.error.execution.conflict",
            // Rundeck's words, which its users' scripts may match.
            format!(
                "Execution had a conflict: Job \"{}\" {{{{Job {}}}}}: Limit of running executions has been reached.",
                rec.job.name, rec.id
            ),
        ));
    }
    if let Err(err) = request_run(&s, &rec, &who, execution_id, options, &secure).await {
        // Admitted but never requested: the slot is given back now rather
        // than when the admission ages out.
        if let Err(e) = s.store.release(rec.id, execution_id).await {
            tracing::warn!(execution_id = %execution_id, error = %e, "could not give back a running slot");
        }
        return Err(err);
    }
    tracing::info!(execution_id = %execution_id, job = %rec.job.full_name(), "run accepted");
    Ok(Json(RunAccepted {
        id: execution_id,
        href: format!("{API_PREFIX}/execution/{execution_id}"),
        status: outpost_schemas::state::ExecutionStatus::Queued,
        project: rec.project,
        job: JobRef {
            id: rec.id,
            name: rec.job.name,
            group: rec.job.group,
        },
    }))
}

/// Seals the run's secure values and publishes its request.
async fn request_run(
    s: &AppState,
    rec: &JobRecord,
    who: &Principal,
    execution_id: Uuid,
    options: BTreeMap<String, String>,
    secure: &BTreeMap<String, String>,
) -> ApiResult<()> {
    if rec.job.options.iter().any(|o| o.secure) {
        // Sealed before the request exists, so that a runner that claims a
        // step always finds them; stored even when no secure value was
        // given (an optional one left empty), since every step of the job
        // asks.
        s.registry
            .store_secrets(execution_id, secure)
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
        parent: None,
        retry: None,
    });
    bus::publish_event(&s.js, &event).await?;
    Ok(())
}

/// The values of a run request: its `options` and its `argString` together.
fn given_options(req: RunRequest) -> ApiResult<BTreeMap<String, String>> {
    let mut given = req.options;
    let Some(arg_string) = req.arg_string else {
        return Ok(given);
    };
    let pairs = outpost_schemas::job::arg_string::parse(&arg_string)
        .map_err(|e| ApiError::invalid(format!("argString: {e}")))?;
    for (name, value) in pairs {
        if given.insert(name.clone(), value).is_some() {
            return Err(ApiError::invalid(format!(
                "option `{name}` is given twice (in `options` and `argString`, or twice in `argString`)"
            )));
        }
    }
    Ok(given)
}
