//! Router settings: the `molecule router serve` flags and their defaults.

use std::net::SocketAddr;
use std::time::Duration;

use crate::host::BaseDomain;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub base_domain: BaseDomain,
    /// Base URL of the control plane (`http://127.0.0.1:8090`).
    pub cp_url: String,
    /// How long a lookup that found a serving tenant is trusted.
    pub cache_ttl: Duration,
    /// How long "unknown org", "not serving yet" and "CP unreachable" are trusted.
    pub negative_ttl: Duration,
    /// Timeout of one lookup request to the CP.
    pub cp_timeout: Duration,
    /// With a previous route for the slug, how long a request waits for a refresh before it is
    /// served from that route (counted `stale`); the refresh goes on in the background.
    pub stale_wait: Duration,
    pub connect_timeout: Duration,
    /// From sending the request to the backend's response head.
    pub backend_timeout: Duration,
    /// Largest request body passed to a tenant (413 above it).
    pub max_body_bytes: usize,
    /// Upper bound of cached slugs (known and unknown).
    pub max_cache_entries: usize,
}

impl RouterConfig {
    pub fn new(listen: SocketAddr, base_domain: BaseDomain, cp_url: impl Into<String>) -> Self {
        Self {
            listen,
            base_domain,
            cp_url: cp_url.into().trim_end_matches('/').to_owned(),
            cache_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            cp_timeout: Duration::from_secs(2),
            stale_wait: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(2),
            backend_timeout: Duration::from_secs(60),
            max_body_bytes: 10 * 1024 * 1024,
            max_cache_entries: 100_000,
        }
    }
}

/// `molecule router serve`.
#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    #[arg(long, env = "MOLECULE_ROUTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Orgs are served at `<slug>.<base-domain>`; the router's own `/metrics` and `/health` at
    /// exactly `<base-domain>`.
    #[arg(long, env = "MOLECULE_BASE_DOMAIN", default_value = "localhost")]
    pub base_domain: String,
    /// Control-plane base URL (for `GET /cp/orgs/:slug/instance`).
    #[arg(long, env = "MOLECULE_CP_URL", default_value = "http://127.0.0.1:8090")]
    pub cp: String,
    #[arg(long, default_value_t = 5000)]
    pub cache_ttl_ms: u64,
    #[arg(long, default_value_t = 1000)]
    pub negative_ttl_ms: u64,
    #[arg(long, default_value_t = 2000)]
    pub cp_timeout_ms: u64,
    #[arg(long, default_value_t = 60)]
    pub backend_timeout_secs: u64,
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

impl RouterArgs {
    pub fn into_config(self) -> anyhow::Result<RouterConfig> {
        let base = BaseDomain::parse(&self.base_domain).map_err(anyhow::Error::msg)?;
        let cp = url::Url::parse(&self.cp)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| anyhow::anyhow!("--cp must be an http(s) base URL"))?;
        let mut config = RouterConfig::new(self.listen, base, cp.as_str());
        config.cache_ttl = Duration::from_millis(self.cache_ttl_ms);
        config.negative_ttl = Duration::from_millis(self.negative_ttl_ms);
        config.cp_timeout = Duration::from_millis(self.cp_timeout_ms.max(1));
        config.backend_timeout = Duration::from_secs(self.backend_timeout_secs.max(1));
        config.max_body_bytes = self.max_body_bytes;
        Ok(config)
    }
}
