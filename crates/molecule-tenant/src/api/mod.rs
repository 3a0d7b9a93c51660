//! The tenant's HTTP API, compatible with the original platform for every route in scope.
//! Routes are declared once, in [`routes`], each with its gate; the router applies exactly
//! that gate, and the auth-matrix test reads the same table.

// Handlers return a ready `Response` as their error, as axum handlers do; boxing it on every
// early return would only add noise.
#![allow(clippy::result_large_err)]

mod activity;
mod bundles;
mod cp_proxy;
mod discord;
mod registry;
mod settings;
mod tokens;
mod workspaces;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, patch, post, put, MethodRouter};
use axum::Router;
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::auth::{enforce, tenant_guard, Gate};
use crate::json::GoJson;
use crate::limits::{rate_limit, security_headers};
use crate::state::AppState;
use crate::store::Workspace;

/// Default cap on request bodies; routes that need more (config, Discord, bundles) say so.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// One declared route: what the auth-matrix test reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub gate: Gate,
}

/// The routes that need no credential. The README documents exactly this list, and a test
/// checks the route table against it.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/workspaces/{id}"),
    ("POST", "/registry/check-access"),
    ("POST", "/webhooks/{kind}"),
    ("ANY", "/cp/{*path}"),
];

struct Table {
    router: Router<AppState>,
    routes: Vec<RouteInfo>,
    state: AppState,
}

impl Table {
    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        gate: Gate,
        handler: MethodRouter<AppState>,
    ) -> Self {
        let handler = if gate == Gate::Public {
            handler
        } else {
            handler.route_layer(from_fn_with_state(
                self.state.clone(),
                move |State(state): State<AppState>,
                      params: Result<
                    RawPathParams,
                    axum::extract::rejection::RawPathParamsRejection,
                >,
                      req: Request,
                      next: Next| { enforce(gate, state, params.ok(), req, next) },
            ))
        };
        self.router = self.router.route(path, handler);
        self.routes.push(RouteInfo { method, path, gate });
        self
    }
}

/// The router and its route table.
pub fn routes(state: AppState) -> (Router<AppState>, Vec<RouteInfo>) {
    use Gate::*;
    let t = Table {
        router: Router::new(),
        routes: Vec::new(),
        state: state.clone(),
    };
    let t = t
        .add("GET", "/health", Public, get(health))
        .add("GET", "/admin/routes", Admin, get(route_table))
        .add("GET", "/metrics", Public, get(metrics))
        // Workspaces.
        .add("GET", "/workspaces", Admin, get(workspaces::list))
        .add("POST", "/workspaces", Admin, post(workspaces::create))
        .add("GET", "/workspaces/{id}", Public, get(workspaces::get_one))
        .add(
            "PATCH",
            "/workspaces/{id}",
            Workspace,
            patch(workspaces::update),
        )
        .add(
            "DELETE",
            "/workspaces/{id}",
            Admin,
            delete(workspaces::remove),
        )
        .add(
            "POST",
            "/workspaces/{id}/pause",
            Admin,
            post(workspaces::pause),
        )
        .add(
            "POST",
            "/workspaces/{id}/resume",
            Admin,
            post(workspaces::resume),
        )
        .add(
            "POST",
            "/workspaces/{id}/restart",
            Admin,
            post(workspaces::restart),
        )
        .add(
            "GET",
            "/workspaces/{id}/console",
            Admin,
            get(workspaces::console),
        )
        .add(
            "POST",
            "/admin/workspaces/{id}/bootstrap-failed",
            Admin,
            post(workspaces::bootstrap_failed),
        )
        // Config, secrets, model.
        .add(
            "GET",
            "/workspaces/{id}/config",
            Workspace,
            get(settings::get_config),
        )
        .add(
            "PATCH",
            "/workspaces/{id}/config",
            Workspace,
            patch(settings::patch_config),
        )
        .add(
            "GET",
            "/workspaces/{id}/secrets",
            Workspace,
            get(settings::list_secrets),
        )
        .add(
            "POST",
            "/workspaces/{id}/secrets",
            Workspace,
            post(settings::set_secret),
        )
        .add(
            "PUT",
            "/workspaces/{id}/secrets",
            Workspace,
            put(settings::set_secret),
        )
        .add(
            "DELETE",
            "/workspaces/{id}/secrets/{key}",
            Workspace,
            delete(settings::delete_secret),
        )
        .add(
            "GET",
            "/workspaces/{id}/secrets/values",
            Workspace,
            get(settings::secret_values),
        )
        .add(
            "GET",
            "/workspaces/{id}/model",
            Workspace,
            get(settings::get_model),
        )
        .add(
            "PUT",
            "/workspaces/{id}/model",
            Workspace,
            put(settings::put_model),
        )
        .add(
            "GET",
            "/settings/secrets",
            Admin,
            get(settings::list_global),
        )
        .add("PUT", "/settings/secrets", Admin, put(settings::set_global))
        .add(
            "POST",
            "/settings/secrets",
            Admin,
            post(settings::set_global),
        )
        .add(
            "DELETE",
            "/settings/secrets/{key}",
            Admin,
            delete(settings::delete_global),
        )
        .add("GET", "/admin/secrets", Admin, get(settings::list_global))
        .add("POST", "/admin/secrets", Admin, post(settings::set_global))
        .add(
            "DELETE",
            "/admin/secrets/{key}",
            Admin,
            delete(settings::delete_global),
        )
        // Tokens.
        .add(
            "GET",
            "/workspaces/{id}/tokens",
            Workspace,
            get(tokens::list_workspace),
        )
        .add(
            "POST",
            "/workspaces/{id}/tokens",
            Workspace,
            post(tokens::mint_workspace),
        )
        .add(
            "DELETE",
            "/workspaces/{id}/tokens/{token_id}",
            Workspace,
            delete(tokens::revoke_workspace),
        )
        .add("GET", "/org/tokens", Admin, get(tokens::list_org))
        .add("POST", "/org/tokens", Admin, post(tokens::mint_org))
        .add(
            "DELETE",
            "/org/tokens/{token_id}",
            Admin,
            delete(tokens::revoke_org),
        )
        .add(
            "GET",
            "/admin/workspaces/{id}/test-token",
            Admin,
            get(tokens::test_token),
        )
        // Registry.
        .add(
            "POST",
            "/registry/register",
            Registry,
            post(registry::register),
        )
        .add(
            "POST",
            "/registry/heartbeat",
            Registry,
            post(registry::heartbeat),
        )
        .add(
            "POST",
            "/registry/update-card",
            Registry,
            post(registry::update_card),
        )
        .add(
            "GET",
            "/registry/discover/{id}",
            Member,
            get(registry::discover),
        )
        .add("GET", "/registry/{id}/peers", Member, get(registry::peers))
        .add(
            "POST",
            "/registry/check-access",
            Public,
            post(registry::check_access),
        )
        // Events and activity.
        .add("GET", "/events", Admin, get(activity::events))
        .add(
            "GET",
            "/events/{workspace_id}",
            Admin,
            get(activity::events_of),
        )
        .add(
            "GET",
            "/workspaces/{id}/activity",
            Workspace,
            get(activity::list),
        )
        .add(
            "POST",
            "/workspaces/{id}/activity",
            Workspace,
            post(activity::log),
        )
        .add("GET", "/ws", Member, get(activity::stream))
        // Bundles.
        .add("GET", "/bundles/export/{id}", Admin, get(bundles::export))
        .add("POST", "/bundles/import", Admin, post(bundles::import))
        // Channels and webhooks.
        .add(
            "GET",
            "/workspaces/{id}/channels",
            Workspace,
            get(discord::list_channels),
        )
        .add(
            "POST",
            "/workspaces/{id}/channels",
            Workspace,
            post(discord::add_channel),
        )
        .add(
            "DELETE",
            "/workspaces/{id}/channels/{channel_id}",
            Workspace,
            delete(discord::remove_channel),
        )
        .add(
            "POST",
            "/webhooks/{kind}",
            Public,
            post(discord::webhook).layer(axum::extract::DefaultBodyLimit::max(
                discord::WEBHOOK_BODY_LIMIT,
            )),
        );
    let t = if state.config.cp_upstream_url.is_some() {
        t.add("ANY", "/cp/{*path}", Public, any(cp_proxy::forward))
    } else {
        t
    };
    (t.router, t.routes)
}

pub fn router(state: AppState) -> Router {
    let (app, table) = routes(state.clone());
    let _ = state.routes.set(table);
    let origins: Vec<HeaderValue> = state
        .config
        .cors_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            axum::http::header::ORIGIN,
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("x-workspace-id"),
        ])
        .allow_credentials(true);
    app.fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .layer(axum::extract::DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(from_fn(security_headers))
        .layer(from_fn_with_state(state.clone(), tenant_guard))
        .layer(from_fn_with_state(
            state.metrics.clone(),
            molecule_shared::telemetry::track_requests,
        ))
        .layer(from_fn_with_state(state.clone(), rate_limit))
        .layer(cors)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .with_state(state)
}

// ---- shared handler helpers ---------------------------------------------------------------

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    GoJson(status, serde_json::json!({ "error": message })).into_response()
}

pub type Handled = Result<Response, Response>;

/// A storage failure: logged with its cause, answered with a generic text.
pub fn internal(e: impl std::fmt::Display, message: &str) -> Response {
    tracing::error!(error = %e, "{message}");
    error(StatusCode::INTERNAL_SERVER_ERROR, message)
}

pub fn check_id(id: &str) -> Result<(), Response> {
    if molecule_shared::token::is_uuid(id) {
        Ok(())
    } else {
        Err(error(StatusCode::BAD_REQUEST, "invalid workspace ID"))
    }
}

/// The workspace `id` (removed ones included), or the original's 400/404.
pub async fn load(state: &AppState, id: &str) -> Result<Workspace, Response> {
    check_id(id)?;
    state
        .store
        .workspace(id)
        .await
        .map_err(|e| internal(e, "query failed"))?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "workspace not found"))
}

/// A request body within the route's cap; over it, the original's 413.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|_| {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large or unreadable",
                )
            })
    }
}

impl Body {
    /// Parses JSON; any failure is a 400 with `message` (the original's texts vary by route).
    pub fn json<T: DeserializeOwned>(&self, message: &str) -> Result<T, Response> {
        serde_json::from_slice(&self.0).map_err(|_| error(StatusCode::BAD_REQUEST, message))
    }
}

async fn health(State(state): State<AppState>) -> Response {
    if state.store.db().ping(Duration::from_secs(2)).await {
        crate::json::ok(serde_json::json!({ "status": "ok" })).into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
    }
}

/// Every route with its gate: for operators, client authors, and the auth-matrix test.
async fn route_table(State(state): State<AppState>) -> Response {
    let table = state.routes.get().cloned().unwrap_or_default();
    crate::json::ok(serde_json::json!({ "routes": table, "public": PUBLIC_ROUTES.iter().map(|(m, p)| serde_json::json!({ "method": m, "path": p })).collect::<Vec<_>>() })).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    molecule_shared::telemetry::metrics_handler(State(state.metrics.clone()))
        .await
        .into_response()
}
