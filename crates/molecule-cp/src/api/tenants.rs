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

use super::auth::TenantCaller;
use crate::store::BootEvent;
use crate::tenant_config::{config_map, etag};
use crate::ControlPlane;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/cp/tenants/config", get(config))
        .route("/cp/tenants/boot-event", post(boot_event))
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
