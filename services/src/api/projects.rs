//! `/projects`: list and create projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::contract::Project;
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
        })
        .await?;
    Ok((StatusCode::CREATED, Json(p)))
}
