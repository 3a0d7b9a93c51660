//! Who is calling. Each extractor proves one kind of caller or refuses with 401, writing an
//! audit row for the refusal (route, reason, token kind prefix at most).

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::HeaderMap;
pub use molecule_shared::http::bearer;
use molecule_shared::http::ApiError;
use molecule_shared::token::{self, TokenHash};

use crate::store::Org;
use crate::ControlPlane;

pub const ORG_ID_HEADER: &str = "x-molecule-org-id";
pub const ADMIN_TOKEN_HEADER: &str = "x-molecule-admin-token";

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .unwrap_or("")
}

pub fn action(parts: &Parts) -> String {
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| parts.uri.path().to_owned());
    format!("{} {path}", parts.method)
}

/// Records a refused request and returns the 401 to send.
pub async fn deny(
    cp: &ControlPlane,
    action: &str,
    target: &str,
    reason: &str,
    presented: &str,
) -> ApiError {
    cp.metrics
        .inc("cp_auth_denied_total", &[("reason", reason)]);
    let detail = format!(
        "{reason}; credential kind {}",
        token::audit_prefix(presented)
    );
    cp.audit("anonymous", action, target, "denied", &detail)
        .await;
    tracing::info!(action, reason, "request denied");
    ApiError::Unauthorized(format!("unauthorized: {reason}"))
}

/// The operator, holding `CP_ADMIN_API_TOKEN`.
pub struct AdminCaller;

impl FromRequestParts<Arc<ControlPlane>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        cp: &Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers);
        match &cp.config.admin_token {
            Some(expected) if token::matches(presented, expected) => Ok(AdminCaller),
            Some(_) => {
                let reason = if presented.is_empty() {
                    "missing bearer token"
                } else {
                    "invalid admin token"
                };
                Err(deny(cp, &action(parts), parts.uri.path(), reason, presented).await)
            }
            None => Err(ApiError::NotFound("no such route".into())),
        }
    }
}

/// Looks up the org whose tenant admin token is `presented`.
pub async fn org_for_admin_token(
    cp: &ControlPlane,
    presented: &str,
) -> Result<Option<Org>, ApiError> {
    if presented.is_empty() {
        return Ok(None);
    }
    cp.store
        .org_by_admin_token_hash(TokenHash::of(presented).as_str())
        .await
        .map_err(ApiError::internal)
}

/// A tenant calling about itself: `Authorization: Bearer <its ADMIN_TOKEN>` and
/// `X-Molecule-Org-Id: <its org id>`; both must name the same org.
pub struct TenantCaller(pub Org);

impl FromRequestParts<Arc<ControlPlane>> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        cp: &Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers);
        let claimed = header(&parts.headers, ORG_ID_HEADER);
        let reason = match org_for_admin_token(cp, presented).await? {
            Some(org) if org.id == claimed => return Ok(TenantCaller(org)),
            Some(_) => "token belongs to another org",
            None if presented.is_empty() => "missing bearer token",
            None => "unknown tenant token",
        };
        Err(deny(cp, &action(parts), parts.uri.path(), reason, presented).await)
    }
}

/// A tenant's platform calling `/cp/workspaces/*`: the shared platform secret as bearer
/// (current or, during rotation, previous) and its own admin token in `X-Molecule-Admin-Token`.
/// The shared secret alone identifies no org, so a leak of it cannot act for any tenant.
pub struct PlatformCaller(pub Org);

impl FromRequestParts<Arc<ControlPlane>> for PlatformCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        cp: &Arc<ControlPlane>,
    ) -> Result<Self, ApiError> {
        let presented = bearer(&parts.headers);
        let shared_ok = [&cp.config.shared_secret, &cp.config.shared_secret_previous]
            .into_iter()
            .flatten()
            .any(|s| token::matches(presented, s));
        if !shared_ok {
            let reason = if presented.is_empty() {
                "missing bearer token"
            } else {
                "invalid platform secret"
            };
            return Err(deny(cp, &action(parts), parts.uri.path(), reason, presented).await);
        }
        let admin = header(&parts.headers, ADMIN_TOKEN_HEADER);
        match org_for_admin_token(cp, admin).await? {
            Some(org) => Ok(PlatformCaller(org)),
            None => {
                let reason = if admin.is_empty() {
                    "missing X-Molecule-Admin-Token"
                } else {
                    "unknown tenant token"
                };
                Err(deny(cp, &action(parts), parts.uri.path(), reason, admin).await)
            }
        }
    }
}
