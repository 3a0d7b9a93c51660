//! Operator routes under `/cp/admin/*`, behind `CP_ADMIN_API_TOKEN`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use molecule_shared::http::{ApiError, ApiJson, ApiQuery, ApiResult};
use molecule_shared::rfc3339;
use serde::Deserialize;
use serde_json::json;

use super::auth::AdminCaller;
use super::orgs::{backend, delete_org, find_org};
use crate::orgs::{self, NewOrg, SignupError};
use crate::store::{Org, OrgStatus, TenantInstance};
use crate::ControlPlane;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/cp/admin/orgs", post(create_org).get(list_orgs))
        .route("/cp/admin/orgs/{slug}", get(get_org))
        .route("/cp/admin/orgs/{slug}/retry", post(retry_org))
        .route("/cp/admin/orgs/{slug}/admin-token", get(admin_token))
        .route("/cp/admin/tenants/{slug}", delete(purge_tenant))
        .route("/cp/admin/audit", get(audit))
        .route(
            "/cp/admin/workspaces/{id}/console",
            get(super::workspaces::admin_console),
        )
}

pub fn org_json(org: &Org, inst: Option<&TenantInstance>) -> serde_json::Value {
    json!({
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "plan": org.plan,
        "owner_user_id": org.owner_user_id,
        "status": org.status,
        "is_canary": org.is_canary,
        "instance_status": inst.map(|i| i.status),
        "instance_id": inst.and_then(|i| i.instance_id.clone()),
        "backend": backend(org, inst),
        "restarts": inst.map(|i| i.restarts),
        "last_error": inst.and_then(|i| i.last_error.clone()),
        "created_at": rfc3339(org.created_at),
        "updated_at": rfc3339(org.updated_at),
    })
}

#[derive(Deserialize)]
struct CreateOrg {
    slug: String,
    name: String,
    owner_user_id: Option<String>,
    plan: Option<String>,
}

impl From<SignupError> for ApiError {
    fn from(e: SignupError) -> Self {
        match e {
            SignupError::Taken => ApiError::Conflict(e.to_string()),
            SignupError::Store(err) => ApiError::internal(err),
            SignupError::Seal(err) => {
                tracing::warn!(error = %err, "sealing new org credentials failed");
                ApiError::Unavailable("secrets cannot be sealed right now; retry later".into())
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

async fn create_org(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    ApiJson(body): ApiJson<CreateOrg>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let slug = body.slug.clone();
    let org = orgs::create(
        &cp,
        NewOrg {
            slug: body.slug,
            name: body.name,
            plan: body.plan,
            owner_user_id: body.owner_user_id,
        },
    )
    .await
    .inspect_err(|e| {
        if !matches!(e, SignupError::Store(_) | SignupError::Seal(_)) {
            tracing::info!(reason = %e, "org creation refused");
        }
    })?;
    cp.audit(
        "admin",
        "create org",
        &slug,
        "ok",
        &format!("org {}", org.id),
    )
    .await;
    let inst = cp
        .store
        .instance(&org.id)
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::CREATED, Json(org_json(&org, inst.as_ref()))))
}

async fn list_orgs(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut out = Vec::new();
    for org in cp.store.list_orgs().await.map_err(ApiError::internal)? {
        let inst = cp
            .store
            .instance(&org.id)
            .await
            .map_err(ApiError::internal)?;
        out.push(org_json(&org, inst.as_ref()));
    }
    Ok(Json(json!({ "orgs": out })))
}

/// One org with its instance, boot events and workspace instances: what an operator reads to
/// see where provisioning stands and why it failed.
async fn get_org(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let org = find_org(&cp, &slug).await?;
    let inst = cp
        .store
        .instance(&org.id)
        .await
        .map_err(ApiError::internal)?;
    let events = cp
        .store
        .boot_events(&org.id)
        .await
        .map_err(ApiError::internal)?;
    let workspaces = cp
        .store
        .workspaces_of_org(&org.id)
        .await
        .map_err(ApiError::internal)?;
    let mut body = org_json(&org, inst.as_ref());
    body["boot_events"] = json!(events
        .iter()
        .map(|e| json!({"stage": e.stage, "status": e.status, "detail": e.detail, "source": e.source, "at": rfc3339(e.at)}))
        .collect::<Vec<_>>());
    body["workspaces"] = json!(workspaces);
    Ok(Json(body))
}

/// Puts a failed org back to provisioning; the reconciler retries from the start.
async fn retry_org(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let org = find_org(&cp, &slug).await?;
    let moved = cp
        .store
        .transition_org(&org.id, &[OrgStatus::Failed], OrgStatus::Provisioning)
        .await
        .map_err(ApiError::internal)?;
    if !moved {
        return Err(ApiError::Conflict(format!(
            "org is {}, not failed",
            org.status.as_str()
        )));
    }
    cp.audit("admin", "retry org", &org.slug, "ok", "").await;
    cp.nudge.notify_one();
    Ok(Json(
        json!({ "slug": org.slug, "status": OrgStatus::Provisioning }),
    ))
}

async fn admin_token(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let org = find_org(&cp, &slug).await?;
    let token = orgs::admin_token(&cp, &org)
        .await
        .map_err(ApiError::Internal)?;
    cp.audit("admin", "read tenant admin token", &org.slug, "ok", "")
        .await;
    Ok(Json(json!({ "admin_token": token.expose() })))
}

#[derive(Deserialize)]
struct Confirm {
    confirm: String,
}

async fn purge_tenant(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
    ApiJson(body): ApiJson<Confirm>,
) -> Response {
    if body.confirm != slug {
        return ApiError::BadRequest("confirm field must equal the URL slug".into())
            .into_response();
    }
    match delete_org(&cp, &slug, "admin").await {
        Ok(Some(p)) => {
            Json(json!({ "slug": slug, "purge_id": p.id, "status": p.status })).into_response()
        }
        Ok(None) => Json(json!({ "slug": slug, "status": "done" })).into_response(),
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<i64>,
}

async fn audit(
    _: AdminCaller,
    State(cp): State<Arc<ControlPlane>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let entries = cp.store.audit(limit).await.map_err(ApiError::internal)?;
    let entries: Vec<_> = entries
        .iter()
        .map(|e| json!({"at": rfc3339(e.at), "actor": e.actor, "action": e.action, "target": e.target, "outcome": e.outcome, "detail": e.detail}))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}
