//! `/project/{p}/resources`: a project's node list, uploaded and reported, with Rundeck's node filters.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::fleet::health;
use crate::ServiceError;

use super::error::{ApiError, ApiResult};
use super::AppState;

#[derive(Deserialize)]
pub(super) struct NodesQuery {
    filter: Option<String>,
    #[serde(rename = "excludePrecedence", default = "yes")]
    exclude_precedence: bool,
}

pub(super) fn yes() -> bool {
    true
}

/// Rundeck's `GET /project/{p}/resources?filter=…`: the project's nodes and
/// those runners report, optionally filtered. No filter lists every node.
pub(super) async fn list_nodes(
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
    let reports = health::node_reports(&s.js)
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
pub(super) async fn put_nodes(
    State(s): State<AppState>,
    Path(project): Path<String>,
    body: String,
) -> ApiResult<Json<serde_json::Value>> {
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
    Ok(Json(json!({ "project": project, "nodes": count })))
}
