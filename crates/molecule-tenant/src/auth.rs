//! Who is calling, and the gates built on it. Two modes and nothing in between: open dev mode
//! (admin routes open, loopback only), and strict, where admin routes need `ADMIN_TOKEN` or an
//! org token even on a fresh install, and a workspace token is never an admin credential.
//! Neither `Referer` nor `Origin` is ever a credential.

use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use molecule_shared::http::bearer;
use molecule_shared::token::{self, TokenHash};

use crate::config::Mode;
use crate::json::GoJson;
use crate::state::{AppState, TenantState};

/// The credential a request carries, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    /// A bearer that matches nothing live.
    Invalid,
    Admin,
    /// A live org token; the prefix identifies it in logs.
    Org(String),
    /// A live token of this workspace.
    Workspace(String),
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::Admin | Caller::Org(_))
    }
}

/// Raised when the store cannot answer an auth question: the original's typed 503.
pub fn datastore_unavailable() -> Response {
    GoJson(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({ "error": "platform datastore unavailable — retry shortly", "code": "platform_unavailable" }),
    )
    .into_response()
}

pub fn unauthorized(message: &str) -> Response {
    GoJson(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({ "error": message }),
    )
    .into_response()
}

pub async fn identify(state: &TenantState, headers: &HeaderMap) -> Result<Caller, Response> {
    let presented = bearer(headers);
    if presented.is_empty() {
        return Ok(Caller::Anonymous);
    }
    if let Some(admin) = &state.config.admin_token {
        if token::matches(presented, admin) {
            return Ok(Caller::Admin);
        }
    }
    let hash = TokenHash::of(presented);
    match state.store.org_token_live(hash.as_str()).await {
        Ok(Some(prefix)) => return Ok(Caller::Org(prefix)),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "org token lookup failed");
            return Err(datastore_unavailable());
        }
    }
    match state.store.workspace_for_token(hash.as_str()).await {
        Ok(Some(ws)) => Ok(Caller::Workspace(ws)),
        Ok(None) => Ok(Caller::Invalid),
        Err(e) => {
            tracing::error!(error = %e, "workspace token lookup failed");
            Err(datastore_unavailable())
        }
    }
}

/// The kinds of gate a route can have. The route table records one per route, and the router
/// applies exactly that gate, so the table the auth-matrix test reads is the one that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gate {
    /// No credential (the documented public list).
    Public,
    /// `ADMIN_TOKEN` or an org token.
    Admin,
    /// `ADMIN_TOKEN`, an org token, or a token of the `:id` workspace.
    Workspace,
    /// A workspace token (the handler checks it is the workspace named in the body).
    Registry,
    /// A workspace token, `ADMIN_TOKEN` or an org token (handlers check which workspace).
    Member,
}

fn path_id(params: &RawPathParams) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.to_owned())
}

/// Applies `gate`, then passes the resolved caller to the handler as an extension.
pub async fn enforce(
    gate: Gate,
    state: AppState,
    params: Option<RawPathParams>,
    mut req: Request,
    next: Next,
) -> Response {
    // Headers are cloned: holding a borrow of the request across an await would make this
    // future not Send (the body is not Sync).
    let headers = req.headers().clone();
    let caller = match identify(&state, &headers).await {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let dev = state.config.mode == Mode::OpenDev;
    let allowed = match gate {
        Gate::Public => true,
        Gate::Admin => dev || caller.is_admin(),
        Gate::Workspace => {
            let id = params.as_ref().and_then(path_id).unwrap_or_default();
            (dev && caller == Caller::Anonymous)
                || caller.is_admin()
                || caller == Caller::Workspace(id)
        }
        Gate::Registry => {
            (dev && caller == Caller::Anonymous) || matches!(caller, Caller::Workspace(_))
        }
        Gate::Member => {
            (dev && caller == Caller::Anonymous)
                || matches!(
                    caller,
                    Caller::Workspace(_) | Caller::Admin | Caller::Org(_)
                )
        }
    };
    if !allowed {
        state
            .metrics
            .inc("tenant_auth_denied_total", &[("gate", gate_name(gate))]);
        let message = match (gate, &caller) {
            (Gate::Admin, Caller::Anonymous) => "admin auth required",
            (Gate::Admin, _) => "invalid admin auth token",
            (_, Caller::Anonymous) => "missing workspace auth token",
            _ => "invalid workspace auth token",
        };
        return unauthorized(message);
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn gate_name(gate: Gate) -> &'static str {
    match gate {
        Gate::Public => "public",
        Gate::Admin => "admin",
        Gate::Workspace => "workspace",
        Gate::Registry => "registry",
        Gate::Member => "member",
    }
}

/// TenantGuard (SaaS mode): a request for another org, or for no org, gets a 404 with an empty
/// body. Paths that carry their own credential (health, metrics, the registry, the CP proxy)
/// pass: agents do not send the org header.
pub async fn tenant_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(org_id) = state.config.org_id.as_deref() else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let exempt = path == "/health"
        || path == "/metrics"
        || path.starts_with("/registry/")
        || path.starts_with("/cp/");
    let matches = req
        .headers()
        .get("x-molecule-org-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == org_id);
    if exempt || matches {
        next.run(req).await
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
