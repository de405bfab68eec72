//! `/projects`: list and create projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use std::collections::BTreeMap;

use axum::extract::Path;

use crate::contract::{ConfigValue, Project, ProjectConfig};
use crate::security::auth::Principal;

use super::error::ApiResult;
use super::AppState;

/// The projects the caller's token may see.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    responses((status = 200, body = Vec<Project>)))]
pub(super) async fn list_projects(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
) -> ApiResult<Json<Vec<Project>>> {
    let mut projects = s.store.projects().await?;
    projects.retain(|p| who.sees(&p.name));
    Ok(Json(projects.into_iter().map(Project::from).collect()))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body = Project,
    responses((status = 201, body = Project), (status = 409, description = "It exists", body = crate::contract::ErrorBody)))]
pub(super) async fn create_project(
    State(s): State<AppState>,
    Json(p): Json<Project>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    s.store
        .create_project(&crate::store::Project {
            name: p.name.clone(),
            description: p.description.clone(),
            config: Default::default(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}

/// The project's configuration (Rundeck's keys: `project.globals.NAME` is
/// `${globals.NAME}` in its jobs).
#[utoipa::path(get, path = "/api/v1/project/{project}/config", tag = "projects",
    params(("project" = String, Path)),
    responses((status = 200, body = ProjectConfig)))]
pub(super) async fn get_config(
    State(s): State<AppState>,
    Path(project): Path<String>,
) -> ApiResult<Json<ProjectConfig>> {
    s.store.require_project(&project).await?;
    let config = s
        .store
        .project(&project)
        .await?
        .map(|p| p.config)
        .unwrap_or_default();
    Ok(Json(ProjectConfig(config)))
}

/// Replaces the project's configuration.
#[utoipa::path(put, path = "/api/v1/project/{project}/config", tag = "projects",
    params(("project" = String, Path)),
    request_body = ProjectConfig,
    responses((status = 200, body = ProjectConfig)))]
pub(super) async fn put_config(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Json(ProjectConfig(config)): Json<ProjectConfig>,
) -> ApiResult<Json<ProjectConfig>> {
    check_keys(&config)?;
    let stored = s
        .store
        .update_project_config(&project, |c| *c = config.clone())
        .await?;
    Ok(Json(ProjectConfig(stored)))
}

/// Sets one key of the project's configuration.
#[utoipa::path(put, path = "/api/v1/project/{project}/config/{key}", tag = "projects",
    params(("project" = String, Path), ("key" = String, Path)),
    request_body = ConfigValue,
    responses((status = 200, body = ProjectConfig)))]
pub(super) async fn put_config_key(
    State(s): State<AppState>,
    Path((project, key)): Path<(String, String)>,
    Json(v): Json<ConfigValue>,
) -> ApiResult<Json<ProjectConfig>> {
    check_keys(&BTreeMap::from([(key.clone(), v.value.clone())]))?;
    let stored = s
        .store
        .update_project_config(&project, |c| {
            c.insert(key.clone(), v.value.clone());
        })
        .await?;
    Ok(Json(ProjectConfig(stored)))
}

/// Removes one key of the project's configuration.
#[utoipa::path(delete, path = "/api/v1/project/{project}/config/{key}", tag = "projects",
    params(("project" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = ProjectConfig)))]
pub(super) async fn delete_config_key(
    State(s): State<AppState>,
    Path((project, key)): Path<(String, String)>,
) -> ApiResult<Json<ProjectConfig>> {
    let stored = s
        .store
        .update_project_config(&project, |c| {
            c.remove(&key);
        })
        .await?;
    Ok(Json(ProjectConfig(stored)))
}

/// Keys as Rundeck writes them (`project.globals.region`): dotted words.
fn check_keys(config: &BTreeMap<String, String>) -> ApiResult<()> {
    for k in config.keys() {
        let ok = !k.is_empty()
            && k.split('.').all(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            });
        if !ok {
            return Err(super::error::ApiError::invalid(format!(
                "config key `{k}`: use dotted words of letters, digits, `_` and `-` (`project.globals.region`)"
            )));
        }
    }
    Ok(())
}
