//! The control plane's HTTP API. Route groups mount only when the credential that guards them
//! is configured (C1): an unconfigured group answers 404, a configured one without a valid
//! credential 401, so one unauthenticated request tells an operator which state is live.

pub mod admin;
pub mod auth;
pub mod orgs;
pub mod tenants;
pub mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use molecule_shared::http::{method_not_allowed, not_found};
use molecule_shared::telemetry::{metrics_handler, track_requests};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::ControlPlane;

/// Default cap on request bodies; routes that need more say so.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(cp: Arc<ControlPlane>) -> Router {
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(orgs::routes())
        .merge(tenants::routes());
    if cp.config.shared_secret.is_some() {
        app = app.merge(workspaces::routes());
    } else {
        tracing::error!(
            "PROVISION_SHARED_SECRET is not set: /cp/workspaces/* is not mounted (404), so tenants cannot provision workspaces"
        );
    }
    if cp.config.admin_token.is_some() {
        app = app.merge(admin::routes());
    } else {
        tracing::warn!("CP_ADMIN_API_TOKEN is not set: /cp/admin/* is not mounted (404)");
    }
    let request_id = HeaderName::from_static("x-request-id");
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(cp.metrics.clone(), track_requests))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The path only: query strings are not logged.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(cp)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "service": "molecule-cp",
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

async fn metrics(State(cp): State<Arc<ControlPlane>>) -> impl axum::response::IntoResponse {
    metrics_handler(State(cp.metrics.clone())).await
}
