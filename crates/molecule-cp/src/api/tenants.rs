//! Routes a tenant calls about itself: its configuration and its boot events.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use molecule_shared::http::{ApiError, ApiJson, ApiResult};
use molecule_shared::now_ms;
use serde::Deserialize;
use serde_json::json;

use super::auth::{deny, TenantCaller};
use crate::store::BootEvent;
use crate::tenant_config::{boot_env, config_map, etag};
use crate::ControlPlane;
use molecule_shared::token::TokenHash;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/cp/tenants/config", get(config))
        .route("/cp/tenants/boot-event", post(boot_event))
        .route("/cp/tenants/bootstrap", post(bootstrap))
}

/// The tenant's configuration as a flat string map, with an ETag; `If-None-Match` → 304.
async fn config(
    TenantCaller(org): TenantCaller,
    State(cp): State<Arc<ControlPlane>>,
    headers: HeaderMap,
) -> Response {
    let map = config_map(&cp, &org);
    let tag = etag(&map);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let cache = [
        (header::ETAG, tag),
        (header::CACHE_CONTROL, "no-store".to_owned()),
    ];
    if unchanged {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (cache, Json(map)).into_response()
}

#[derive(Deserialize)]
struct BootstrapBody {
    org_id: String,
    bootstrap_token: String,
}

/// A new tenant instance trades its single-use bootstrap token (from EC2 user-data) for its
/// boot environment: admin token, encryption key, shared secret. Exactly once, before the
/// token expires; every other attempt is 401 and audited.
async fn bootstrap(
    State(cp): State<Arc<ControlPlane>>,
    ApiJson(body): ApiJson<BootstrapBody>,
) -> ApiResult<Response> {
    const ACTION: &str = "POST /cp/tenants/bootstrap";
    let presented = body.bootstrap_token.trim();
    if presented.is_empty() || body.org_id.len() > 64 {
        return Err(deny(&cp, ACTION, "-", "missing bootstrap token", presented).await);
    }
    let hash = TokenHash::of(presented);
    let refused = "bootstrap token unknown, used or expired";
    // Check first and consume last: a failure in between (KMS unavailable) leaves the token
    // usable for the tenant's retry; only the final conditional UPDATE decides who wins.
    let usable = cp
        .store
        .bootstrap_token_usable(&body.org_id, hash.as_str(), now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !usable {
        return Err(deny(&cp, ACTION, &body.org_id, refused, presented).await);
    }
    let Some(org) = cp
        .store
        .org_by_id(&body.org_id)
        .await
        .map_err(ApiError::internal)?
    else {
        return Err(deny(&cp, ACTION, &body.org_id, "unknown org", presented).await);
    };
    let env = boot_env(&cp, &org).await.map_err(|e| {
        tracing::warn!(org = %org.slug, error = %e, "bootstrap: boot env unavailable");
        ApiError::Unavailable("the tenant's configuration is not available; retry".into())
    })?;
    let used = cp
        .store
        .consume_bootstrap_token(&org.id, hash.as_str(), now_ms())
        .await
        .map_err(ApiError::internal)?;
    if !used {
        return Err(deny(&cp, ACTION, &org.id, refused, presented).await);
    }
    cp.audit(
        &format!("tenant:{}", org.id),
        "bootstrap",
        &org.slug,
        "ok",
        "bootstrap token exchanged",
    )
    .await;
    let headers = [(header::CACHE_CONTROL, "no-store")];
    Ok((headers, Json(env.into_map())).into_response())
}

#[derive(Deserialize)]
struct BootEventBody {
    stage: String,
    status: String,
    #[serde(default)]
    detail: String,
}

const STATUSES: &[&str] = &["started", "ok", "failed", "info"];

async fn boot_event(
    TenantCaller(org): TenantCaller,
    State(cp): State<Arc<ControlPlane>>,
    ApiJson(body): ApiJson<BootEventBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let stage_ok = (1..=64).contains(&body.stage.len())
        && body
            .stage
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !stage_ok {
        return Err(ApiError::BadRequest(
            "stage must be 1 to 64 characters of a-z, 0-9, '_', '.', '-'".into(),
        ));
    }
    if !STATUSES.contains(&body.status.as_str()) {
        return Err(ApiError::BadRequest(
            "status must be one of: started, ok, failed, info".into(),
        ));
    }
    if body.detail.len() > 2048 {
        return Err(ApiError::BadRequest(
            "detail must be at most 2048 bytes".into(),
        ));
    }
    let event = BootEvent {
        org_id: org.id.clone(),
        stage: body.stage,
        status: body.status,
        detail: body.detail,
        source: "tenant".into(),
        at: now_ms(),
    };
    cp.store
        .add_boot_event(&event)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "ok": true })))
}
