//! `/tokens`: API tokens, shown once at creation, stored as hashes.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::security::auth::{self, Principal, Role};

use super::error::{auth_error, ApiError, ApiResult};
use super::AppState;

#[derive(Deserialize)]
pub(super) struct TokenRequest {
    name: String,
    /// `admin`, `ops=operator`, `*=viewer`…
    roles: Vec<String>,
}

#[derive(Serialize)]
pub(super) struct TokenView {
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

pub(super) async fn create_token(
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

pub(super) async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<TokenView>>> {
    let list = s.tokens.list().await.map_err(auth_error)?;
    Ok(Json(list.into_iter().map(TokenView::from).collect()))
}

pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(s.tokens.revoke(&id).await.map_err(auth_error)?.into()))
}
