//! `/projects`: list and create projects.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::security::auth::Principal;
use crate::store::Project;

use super::error::ApiResult;
use super::AppState;

pub(super) async fn list_projects(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
) -> ApiResult<Json<Vec<Project>>> {
    let mut projects = s.store.projects().await?;
    projects.retain(|p| who.sees(&p.name));
    Ok(Json(projects))
}

pub(super) async fn create_project(
    State(s): State<AppState>,
    Json(p): Json<Project>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    s.store.create_project(&p).await?;
    Ok((StatusCode::CREATED, Json(p)))
}
