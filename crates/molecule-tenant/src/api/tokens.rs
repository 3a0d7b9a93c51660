//! Workspace tokens, org tokens, and the test-token route (never in production).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Extension;
use molecule_shared::token::{self, TokenHash, TokenKind};
use serde::Deserialize;
use serde_json::json;

use super::workspaces::caller_of;
use super::{check_id, error, internal, load, Handled};
use crate::auth::Caller;
use crate::json::{go_time, ok, GoJson};
use crate::lifecycle::{issue_token, token_prefix};
use crate::limits::Verdict;
use crate::state::AppState;
use crate::store::WsStatus;

const MAX_LIVE_TOKENS: i64 = 50;

#[derive(Deserialize, Default)]
pub struct Page {
    limit: Option<String>,
    offset: Option<String>,
}

pub async fn list_workspace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<Page>,
) -> Handled {
    check_id(&id)?;
    let limit = p
        .limit
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| (1..=200).contains(l))
        .unwrap_or(50);
    let offset = p
        .offset
        .and_then(|o| o.parse::<i64>().ok())
        .filter(|o| *o >= 0)
        .unwrap_or(0);
    let rows = state
        .store
        .live_workspace_tokens(&id, limit, offset)
        .await
        .map_err(|e| internal(e, "failed to list tokens"))?;
    let tokens: Vec<_> = rows
        .iter()
        .map(|t| json!({ "id": t.id, "prefix": t.prefix, "created_at": go_time(t.created_at), "last_used_at": t.last_used_at.map(go_time) }))
        .collect();
    Ok(ok(json!({ "count": tokens.len(), "tokens": tokens })).into_response())
}

pub async fn mint_workspace(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    let w = load(&state, &id).await?;
    if w.status == WsStatus::Removed {
        return Err(error(StatusCode::NOT_FOUND, "workspace not found"));
    }
    if state
        .store
        .count_live_tokens(&id)
        .await
        .map_err(|e| internal(e, "failed to create token"))?
        >= MAX_LIVE_TOKENS
    {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "maximum 50 active tokens per workspace",
        ));
    }
    let token = issue_token(&state, &id)
        .await
        .map_err(|e| internal(e, "failed to create token"))?;
    Ok(GoJson(
        StatusCode::CREATED,
        json!({ "auth_token": token.expose(), "message": "Save this token now — it cannot be retrieved again.", "workspace_id": id }),
    )
    .into_response())
}

pub async fn revoke_workspace(
    State(state): State<AppState>,
    Path((id, token_id)): Path<(String, String)>,
) -> Handled {
    check_id(&id)?;
    if !state
        .store
        .revoke_workspace_token(&id, &token_id)
        .await
        .map_err(|e| internal(e, "failed to revoke token"))?
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            "token not found or already revoked",
        ));
    }
    Ok(ok(json!({ "status": "revoked" })).into_response())
}

pub async fn list_org(State(state): State<AppState>) -> Handled {
    let rows = state
        .store
        .live_org_tokens()
        .await
        .map_err(|e| internal(e, "failed to list tokens"))?;
    let tokens: Vec<_> = rows
        .iter()
        .map(|t| {
            let mut item =
                json!({ "id": t.id, "prefix": t.prefix, "created_at": go_time(t.created_at) });
            for (k, v) in [
                ("name", &t.name),
                ("org_id", &t.org_id),
                ("created_by", &t.created_by),
            ] {
                if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                    item[k] = json!(v);
                }
            }
            if let Some(at) = t.last_used_at {
                item["last_used_at"] = json!(go_time(at));
            }
            item
        })
        .collect();
    Ok(ok(json!({ "count": tokens.len(), "tokens": tokens })).into_response())
}

#[derive(Deserialize, Default)]
struct MintBody {
    #[serde(default)]
    name: String,
}

pub async fn mint_org(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Handled {
    let ip = crate::limits::client_ip(&state, &req);
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let body: MintBody = serde_json::from_slice(&bytes).unwrap_or_default();
    if body.name.len() > 100 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "name too long (max 100 chars)",
        ));
    }
    if let Verdict::Limited { retry_after } = state.mint_limiter.check(ip) {
        return Err(GoJson(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": "rate limit exceeded", "retry_after": retry_after }),
        )
        .into_response());
    }
    let created_by = match caller_of(caller) {
        Caller::Org(prefix) => format!("org-token:{prefix}"),
        _ if headers.contains_key("cookie") => "session".into(),
        _ => "admin-token".into(),
    };
    let token = token::generate(TokenKind::OrgApi);
    let name = Some(body.name.as_str()).filter(|n| !n.is_empty());
    let prefix = token_prefix(&token);
    let id = state
        .store
        .insert_org_token(
            TokenHash::of(token.expose()).as_str(),
            &prefix,
            name,
            &created_by,
        )
        .await
        .map_err(|e| internal(e, "failed to mint token"))?;
    // Field order as in the original: id, prefix, name?, auth_token, warning.
    #[derive(serde::Serialize)]
    struct Minted<'a> {
        id: String,
        prefix: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        auth_token: &'a str,
        warning: &'static str,
    }
    Ok(ok(Minted {
        id,
        prefix,
        name,
        auth_token: token.expose(),
        warning: "copy this token now; it will not be shown again",
    })
    .into_response())
}

pub async fn revoke_org(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    if !state
        .store
        .revoke_org_token(&id)
        .await
        .map_err(|e| internal(e, "failed to revoke"))?
    {
        return Err(error(
            StatusCode::NOT_FOUND,
            "token not found or already revoked",
        ));
    }
    Ok(ok(json!({ "revoked": id })).into_response())
}

/// Mints a token for local scripts. Never in production (`production` or `prod`): 404.
pub async fn test_token(State(state): State<AppState>, Path(id): Path<String>) -> Handled {
    if state.config.production {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    }
    let w = load(&state, &id).await?;
    if w.status == WsStatus::Removed {
        return Err(error(StatusCode::NOT_FOUND, "workspace not found"));
    }
    let token = issue_token(&state, &id)
        .await
        .map_err(|e| internal(e, "token issue failed"))?;
    Ok(ok(json!({ "auth_token": token.expose(), "workspace_id": id })).into_response())
}
