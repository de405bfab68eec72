//! `/tokens`: API tokens, shown once at creation, stored as hashes.

use crate::contract::{CreatedToken, Token, TokenRequest};
use crate::security::auth::{self, Principal};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::{auth_error, ApiError, ApiResult};
use super::AppState;

/// Creates an API token; the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body = TokenRequest,
    responses((status = 201, body = CreatedToken)))]
pub(super) async fn create_token(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    Json(req): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let roles = auth::parse_roles(&req.roles).map_err(ApiError::invalid)?;
    let (rec, token) = s
        .tokens
        .create(&req.name, roles, &who.name)
        .await
        .map_err(auth_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            record: rec.into(),
            token,
        }),
    ))
}

/// Every token, revoked ones included; never a secret.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<Token>)))]
pub(super) async fn list_tokens(State(s): State<AppState>) -> ApiResult<Json<Vec<Token>>> {
    let list = s.tokens.list().await.map_err(auth_error)?;
    Ok(Json(list.into_iter().map(Token::from).collect()))
}

/// Revokes a token: it is refused from the next call on.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path)),
    responses((status = 200, body = Token)))]
pub(super) async fn revoke_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Token>> {
    Ok(Json(s.tokens.revoke(&id).await.map_err(auth_error)?.into()))
}
