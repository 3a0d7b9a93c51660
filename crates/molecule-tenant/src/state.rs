//! What every handler and sweep shares.

use std::sync::Arc;

use molecule_shared::telemetry::Metrics;

use crate::config::TenantConfig;
use crate::cp_client::CpClient;
use crate::events::Events;
use crate::limits::RateLimiter;
use crate::store::TenantStore;

pub struct TenantState {
    pub config: TenantConfig,
    pub store: TenantStore,
    pub cp: Option<Arc<CpClient>>,
    pub metrics: Metrics,
    pub events: Events,
    /// Our own base URL, handed to workspaces as `PLATFORM_URL`.
    pub platform_url: String,
    pub limiter: RateLimiter,
    /// Org token minting: 10 an hour per client.
    pub mint_limiter: RateLimiter,
    /// Client for the `/cp/*` proxy and outbound calls: timeouts, no redirects.
    pub http: reqwest::Client,
    /// The route table the router was built from (served at `/admin/routes`).
    pub routes: std::sync::OnceLock<Vec<crate::api::RouteInfo>>,
}

pub type AppState = Arc<TenantState>;
