//! Public org routes: the router's lookup, and deletion by the org's owner.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use molecule_shared::http::{ApiError, ApiResult};
use molecule_shared::slug::OrgSlug;
use serde_json::json;

use super::auth::{bearer, deny, org_for_admin_token};
use crate::purge::{self, PurgeError};
use crate::store::{InstanceStatus, Org, OrgStatus, Purge, PurgeStatus, TenantInstance};
use crate::ControlPlane;

pub fn routes() -> Router<Arc<ControlPlane>> {
    Router::new()
        .route("/cp/orgs/{slug}/instance", get(instance))
        .route("/cp/orgs/{slug}", delete(owner_delete))
}

/// The tenant's base URL, when the org is running and its instance serves.
pub fn backend(org: &Org, inst: Option<&TenantInstance>) -> Option<String> {
    let inst = inst?;
    let serving = matches!(
        inst.status,
        InstanceStatus::Running | InstanceStatus::Unhealthy
    );
    (org.status == OrgStatus::Running && serving)
        .then(|| inst.address.clone())
        .flatten()
}

pub async fn find_org(cp: &ControlPlane, slug: &str) -> ApiResult<Org> {
    let unknown = || ApiError::NotFound("no org with this slug".into());
    let slug = OrgSlug::parse(slug).map_err(|_| unknown())?;
    cp.store
        .org_by_slug(slug.as_str())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unknown)
}

/// What the edge router needs to route `<slug>.<domain>`. Never a credential (H2).
async fn instance(
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let org = find_org(&cp, &slug).await?;
    let inst = cp
        .store
        .instance(&org.id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "slug": org.slug,
        "org_id": org.id,
        "status": org.status,
        "backend": backend(&org, inst.as_ref()),
    })))
}

/// Runs (or resumes) the purge of the org named `slug`. `Ok(None)`: it was purged already.
pub async fn delete_org(
    cp: &ControlPlane,
    slug: &str,
    actor: &str,
) -> Result<Option<Purge>, Response> {
    let org = match find_org(cp, slug).await {
        Ok(org) => org,
        Err(ApiError::NotFound(msg)) => {
            let done = cp
                .store
                .latest_purge_by_slug(slug)
                .await
                .map_err(|e| ApiError::internal(e).into_response())?;
            return match done {
                Some(p) if p.status == PurgeStatus::Done => Ok(None),
                _ => Err(ApiError::NotFound(msg).into_response()),
            };
        }
        Err(e) => return Err(e.into_response()),
    };
    cp.audit(actor, "delete org", &org.slug, "ok", "purge requested")
        .await;
    match purge::purge_org(cp, &org, actor).await {
        Ok(p) => Ok(Some(p)),
        Err(PurgeError::Step { purge_id, step, reason }) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({
                "error": format!("purge step {step} failed ({reason}); retry the request to resume"),
                "purge_id": purge_id,
            })),
        )
            .into_response()),
        Err(PurgeError::Busy) => Err(ApiError::Conflict("a purge of this org is already running; retry shortly".into()).into_response()),
        Err(PurgeError::Store(e)) => Err(ApiError::internal(e).into_response()),
    }
}

/// `DELETE /cp/orgs/:slug` by the org itself: its own admin token as bearer.
async fn owner_delete(
    State(cp): State<Arc<ControlPlane>>,
    Path(slug): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let presented = bearer(&headers);
    let caller = match org_for_admin_token(&cp, presented).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match caller {
        Some(org) if org.slug == slug => {}
        _ => {
            let reason = if presented.is_empty() {
                "missing bearer token"
            } else {
                "token does not belong to this org"
            };
            return deny(&cp, "DELETE /cp/orgs/{slug}", &slug, reason, presented)
                .await
                .into_response();
        }
    }
    match delete_org(&cp, &slug, "owner").await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(resp) => resp,
    }
}
