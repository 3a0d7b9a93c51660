//! The tenant's HTTP API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use molecule_shared::http::{method_not_allowed, not_found};
use molecule_shared::telemetry::{metrics_handler, track_requests, Metrics};
use tower_http::timeout::TimeoutLayer;

use crate::config::TenantConfig;
use crate::cp_client::CpClient;
use crate::store::TenantStore;

pub struct TenantState {
    pub config: TenantConfig,
    pub store: TenantStore,
    pub cp: Option<Arc<CpClient>>,
    pub metrics: Metrics,
}

pub fn router(state: Arc<TenantState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            track_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .with_state(state)
}

/// `{"status":"ok"}` when the database answers; 503 otherwise.
async fn health(State(state): State<Arc<TenantState>>) -> (StatusCode, Json<serde_json::Value>) {
    if state.store.db().ping(Duration::from_secs(2)).await {
        (StatusCode::OK, Json(serde_json::json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "unavailable", "error": "database unavailable" })),
        )
    }
}

async fn metrics(State(state): State<Arc<TenantState>>) -> impl axum::response::IntoResponse {
    metrics_handler(State(state.metrics.clone())).await
}
