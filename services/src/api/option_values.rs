//! `/job/{id}/option/{name}/values`, and the remote values a run is
//! checked against: what an option's `valuesUrl` lists
//! (`crate::remote_values` fetches it).

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use outpost_schemas::job::RemoteValue;
use outpost_schemas::records::JobRecord;

use super::jobs::job_or_404;
use super::{parse_id, ApiError, ApiResult, AppState};
use crate::contract::OptionValues;
use crate::remote_values::{self, UrlContext};
use crate::security::auth::Principal;

/// Its remote values, fetched now. The query gives the other options'
/// values for `${option.OTHER.value}` in the URL (`?env=prod`).
#[utoipa::path(get, path = "/api/v1/job/{id}/option/{name}/values", tag = "jobs",
    params(("id" = Uuid, Path), ("name" = String, Path)),
    responses((status = 200, body = OptionValues),
        (status = 400, description = "The option has no valuesUrl", body = crate::contract::ErrorBody),
        (status = 502, description = "The URL could not be read as a list of values", body = crate::contract::ErrorBody)))]
pub(super) async fn option_values(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Path((id, name)): Path<(String, String)>,
    Query(given): Query<BTreeMap<String, String>>,
) -> ApiResult<Json<OptionValues>> {
    let id = parse_id(&id)?;
    let rec = job_or_404(&s, id).await?;
    let Some(opt) = rec.job.options.iter().find(|o| o.name == name) else {
        return Err(ApiError::not_found(format!(
            "job `{}` has no option `{name}`",
            rec.job.full_name()
        )));
    };
    if opt.values_url.is_none() {
        return Err(ApiError::invalid(format!(
            "option `{name}` has no valuesUrl"
        )));
    }
    let project = s.store.project(&rec.project).await?;
    let (url, values) = fetch(&rec, project.as_ref(), &who, &name, &given).await?;
    Ok(Json(OptionValues {
        option: name,
        url,
        values,
    }))
}

/// The remote values of each option whose allowed values are remote
/// (`enforced`, a `valuesUrl`, no `values`), for a run given `given`.
/// Rundeck accepts any value when the URL cannot be read; Outpost refuses
/// the run, saying why, since an enforced list exists to stop a value.
pub(super) async fn for_run(
    s: &AppState,
    rec: &JobRecord,
    who: &Principal,
    given: &BTreeMap<String, String>,
) -> ApiResult<BTreeMap<String, Vec<RemoteValue>>> {
    let mut out = BTreeMap::new();
    // In the job's order, each option's value so far (given, its default,
    // or the selected remote one) is what later URLs see, so that
    // `${option.env.value}` works when `env` was left to its default.
    let mut known = given.clone();
    // Read once for every remote option of the run.
    let project = match rec.job.options.iter().any(|o| o.remote_enforced()) {
        true => s.store.project(&rec.project).await?,
        false => None,
    };
    for opt in &rec.job.options {
        if let (false, Some(v)) = (known.contains_key(&opt.name), &opt.value) {
            known.insert(opt.name.clone(), v.clone());
        }
        if !opt.remote_enforced() {
            continue;
        }
        let (_, values) = fetch(rec, project.as_ref(), who, &opt.name, &known).await?;
        if let (false, Some(first)) = (
            known.contains_key(&opt.name),
            values.iter().find(|v| v.selected),
        ) {
            known.insert(opt.name.clone(), first.value.clone());
        }
        out.insert(opt.name.clone(), values);
    }
    Ok(out)
}

async fn fetch(
    rec: &JobRecord,
    project: Option<&outpost_schemas::records::ProjectRecord>,
    who: &Principal,
    name: &str,
    given: &BTreeMap<String, String>,
) -> ApiResult<(String, Vec<RemoteValue>)> {
    let opt = rec
        .job
        .options
        .iter()
        .find(|o| o.name == name)
        .expect("the caller found it");
    let template = opt.values_url.as_deref().unwrap_or_default();
    let globals = project.map(|p| p.globals()).unwrap_or_default();
    // Rundeck's switch: set at all, whatever its value, it turns the check
    // off; here only `true` does.
    let json_check = project
        .and_then(|p| p.config.get("project.jobs.disableRemoteOptionJsonCheck"))
        .is_none_or(|v| v.trim() != "true");
    let url = remote_values::expand(
        template,
        name,
        &UrlContext {
            job: &rec.job,
            project: &rec.project,
            user: &who.name,
            globals: &globals,
            given,
        },
    );
    match remote_values::fetch(&url, json_check).await {
        Ok(values) => Ok((url, values)),
        Err(err) => {
            tracing::warn!(job_id = %rec.id, option = name, error = %err, "cannot read an option's valuesUrl");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "api.error.option.values-url",
                format!("option `{name}`: cannot read its values from {url}: {err}"),
            ))
        }
    }
}
