//! `/project/{p}/resources`: a project's node list, uploaded and reported, with Rundeck's node filters.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::contract::{Node, NodesLoaded};

use crate::fleet::health;
use crate::ServiceError;

use super::error::{ApiError, ApiResult};
use super::AppState;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct NodesQuery {
    /// A Rundeck node filter (`tags: web !name: web3`); none lists every node.
    filter: Option<String>,
    /// Whether an exclusion wins over an inclusion (Rundeck's default, `true`).
    #[serde(rename = "excludePrecedence", default = "yes")]
    #[param(rename = "excludePrecedence")]
    exclude_precedence: bool,
}

pub(super) fn yes() -> bool {
    true
}

/// Rundeck's `GET /project/{p}/resources?filter=…`: the project's nodes and
/// those runners report, optionally filtered. No filter lists every node.
#[utoipa::path(get, path = "/api/v1/project/{project}/resources", tag = "nodes",
    params(("project" = String, Path), NodesQuery),
    responses((status = 200, body = Vec<Node>)))]
pub(super) async fn list_nodes(
    State(s): State<AppState>,
    Path(project): Path<String>,
    Query(q): Query<NodesQuery>,
) -> ApiResult<Json<Vec<Node>>> {
    let filter = match q.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(f) => Some(
            outpost_schemas::node_filter::parse(f).map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
    };
    let reports = health::node_reports(&s.js)
        .await
        .map_err(ServiceError::Nats)?;
    let mut nodes = s.store.nodes(&project, reports).await?;
    if let Some(f) = filter {
        nodes.retain(|n| f.selects(&n.node, q.exclude_precedence));
    }
    nodes.sort_by(|a, b| a.node.nodename.cmp(&b.node.nodename));
    Ok(Json(nodes.into_iter().map(Node::from).collect()))
}

/// Replaces the project's node source with a resources.yaml body.
#[utoipa::path(put, path = "/api/v1/project/{project}/resources", tag = "nodes",
    params(("project" = String, Path)),
    request_body(content = String, content_type = "application/yaml", description = "Rundeck's resources.yaml: nodes by name"),
    responses((status = 200, body = NodesLoaded)))]
pub(super) async fn put_nodes(
    State(s): State<AppState>,
    Path(project): Path<String>,
    body: String,
) -> ApiResult<Json<NodesLoaded>> {
    let nodes = outpost_schemas::resources::parse_resources(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "api.error.resources.invalid",
            e.to_string(),
        )
    })?;
    let count = nodes.len();
    s.store.put_project_nodes(&project, nodes).await?;
    tracing::info!(project, count, "project nodes replaced");
    Ok(Json(NodesLoaded {
        project,
        nodes: count,
    }))
}
