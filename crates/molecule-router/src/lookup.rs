//! Slug → route, through the control plane's public `GET /cp/orgs/:slug/instance`.
//!
//! - An in-memory cache keyed by slug: a serving route is trusted for `cache_ttl`; "unknown",
//!   "not serving yet" and "CP unreachable" for `negative_ttl`.
//! - Single flight: however many requests miss on one slug at once, one CP request is in flight
//!   for it. The request runs in its own task, so a client that goes away does not cancel it.
//! - Stale if error: when the CP fails or is slow, a slug that had a route keeps it for as long as
//!   the outage lasts. A request with such a route waits at most `stale_wait` for the refresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::uri::Authority;
use axum::http::HeaderValue;
use molecule_shared::slug::OrgSlug;
use tokio::sync::{watch, Semaphore};

use crate::config::RouterConfig;
use crate::metrics::{LookupResult, RouterMetrics};

/// Largest lookup body the router reads.
const LOOKUP_BODY_CAP: usize = 16 * 1024;
/// CP lookups in flight at once, over all slugs.
const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// What the CP said about an org.
#[derive(Debug)]
pub struct Route {
    pub org_id: HeaderValue,
    pub status: String,
    /// `host:port` of the tenant when it serves.
    pub backend: Option<Authority>,
}

/// What a request for a slug should do.
#[derive(Debug, Clone)]
pub enum Resolution {
    Route {
        route: Arc<Route>,
        stale: bool,
    },
    Unknown,
    /// The CP could not be asked and the slug has no previous route.
    Unavailable,
}

#[derive(Debug)]
enum Kind {
    Found(Arc<Route>),
    NotFound,
    Failed,
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    checked_at: Instant,
    /// Set when a backend refused connections: the entry must be asked again.
    expired: bool,
    /// The last route the CP gave, kept through CP failures.
    last_good: Option<Arc<Route>>,
}

pub struct Lookup {
    http: reqwest::Client,
    cp_url: String,
    ttl: Duration,
    negative_ttl: Duration,
    cp_timeout: Duration,
    stale_wait: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<String, Entry>>,
    /// Slugs with a CP request in flight; the receiver turns `true` once the cache is updated.
    inflight: Mutex<HashMap<String, watch::Receiver<bool>>>,
    permits: Semaphore,
    metrics: Arc<RouterMetrics>,
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Transport(String),
    #[error("control plane answered {0}")]
    Status(u16),
    #[error("unexpected lookup body: {0}")]
    Body(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain map updates: a panic while holding the lock cannot leave it inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Lookup {
    pub fn new(config: &RouterConfig, metrics: Arc<RouterMetrics>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.cp_timeout)
            .connect_timeout(config.cp_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            cp_url: config.cp_url.clone(),
            ttl: config.cache_ttl,
            negative_ttl: config.negative_ttl,
            cp_timeout: config.cp_timeout,
            stale_wait: config.stale_wait,
            max_entries: config.max_cache_entries,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            permits: Semaphore::new(MAX_CONCURRENT_LOOKUPS),
            metrics,
        })
    }

    /// The route for `slug`, from the cache when fresh, else from the CP.
    pub async fn resolve(self: &Arc<Self>, slug: &OrgSlug) -> Resolution {
        let previous = {
            let cache = lock(&self.cache);
            match cache.get(slug.as_str()) {
                Some(entry) => {
                    if let Some(fresh) = self.fresh(entry, Instant::now()) {
                        self.metrics.cache(true);
                        return fresh;
                    }
                    entry.last_good.clone()
                }
                None => None,
            }
        };
        self.metrics.cache(false);
        self.ask_cp(slug, previous.is_some()).await
    }

    /// After `route`'s backend refused a connection: ask the CP again, now, whatever the cache
    /// holds (the tenant may have moved).
    pub async fn refresh(self: &Arc<Self>, slug: &OrgSlug) -> Resolution {
        if let Some(entry) = lock(&self.cache).get_mut(slug.as_str()) {
            entry.expired = true;
        }
        self.ask_cp(slug, false).await
    }

    async fn ask_cp(self: &Arc<Self>, slug: &OrgSlug, has_previous: bool) -> Resolution {
        let mut done = self.start_fetch(slug.as_str());
        // The fetch task is bounded by the CP timeout; the extra second covers a wait for a
        // lookup permit.
        let wait = if has_previous {
            self.stale_wait
        } else {
            self.cp_timeout + Duration::from_secs(1)
        };
        let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        let cache = lock(&self.cache);
        let Some(entry) = cache.get(slug.as_str()) else {
            return Resolution::Unavailable;
        };
        match &entry.kind {
            Kind::Found(route) => Resolution::Route {
                route: route.clone(),
                // Not refreshed in time: the route is the last known one.
                stale: self.fresh(entry, Instant::now()).is_none(),
            },
            Kind::NotFound => Resolution::Unknown,
            Kind::Failed => stale_or_unavailable(entry),
        }
    }

    /// The answer an entry gives while it is within its TTL.
    fn fresh(&self, entry: &Entry, now: Instant) -> Option<Resolution> {
        if entry.expired {
            return None;
        }
        let age = now.saturating_duration_since(entry.checked_at);
        match &entry.kind {
            Kind::Found(route) => {
                // Not serving yet: ask again soon, so the "starting up" page turns into the app.
                let ttl = if route.backend.is_some() {
                    self.ttl
                } else {
                    self.negative_ttl
                };
                (age < ttl).then(|| Resolution::Route {
                    route: route.clone(),
                    stale: false,
                })
            }
            Kind::NotFound => (age < self.negative_ttl).then_some(Resolution::Unknown),
            Kind::Failed => (age < self.negative_ttl).then(|| stale_or_unavailable(entry)),
        }
    }

    /// Joins the CP request in flight for `slug`, or starts one.
    fn start_fetch(self: &Arc<Self>, slug: &str) -> watch::Receiver<bool> {
        let mut inflight = lock(&self.inflight);
        if let Some(rx) = inflight.get(slug) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        inflight.insert(slug.to_owned(), rx.clone());
        drop(inflight);
        let this = self.clone();
        let slug = slug.to_owned();
        tokio::spawn(async move {
            let started = Instant::now();
            let fetched = match this.permits.acquire().await {
                Ok(_permit) => this.fetch(&slug).await,
                Err(_) => Err(FetchError::Transport("closed".into())),
            };
            let result = match &fetched {
                Ok(Some(_)) => LookupResult::Found,
                Ok(None) => LookupResult::NotFound,
                Err(e) => {
                    tracing::warn!(slug, error = %e, "control-plane lookup failed");
                    LookupResult::Error
                }
            };
            this.metrics.lookup(result, started.elapsed());
            this.store(&slug, fetched);
            lock(&this.inflight).remove(&slug);
            let _ = tx.send(true);
        });
        rx
    }

    fn store(&self, slug: &str, fetched: Result<Option<Route>, FetchError>) {
        let mut cache = lock(&self.cache);
        let last_good = cache.get(slug).and_then(|e| e.last_good.clone());
        let entry = match fetched {
            Ok(Some(route)) => {
                let route = Arc::new(route);
                Entry {
                    kind: Kind::Found(route.clone()),
                    last_good: route.backend.is_some().then_some(route).or(last_good),
                    checked_at: Instant::now(),
                    expired: false,
                }
            }
            // Unknown (deleted) orgs lose their route.
            Ok(None) => Entry {
                kind: Kind::NotFound,
                last_good: None,
                checked_at: Instant::now(),
                expired: false,
            },
            Err(_) => Entry {
                kind: Kind::Failed,
                last_good,
                checked_at: Instant::now(),
                expired: false,
            },
        };
        if cache.len() >= self.max_entries && !cache.contains_key(slug) {
            let now = Instant::now();
            cache.retain(|_, e| e.last_good.is_some() || self.fresh(e, now).is_some());
            if cache.len() >= self.max_entries && entry.last_good.is_none() {
                // Full of known routes: an unknown slug is not worth evicting one for.
                return;
            }
        }
        cache.insert(slug.to_owned(), entry);
    }

    async fn fetch(&self, slug: &str) -> Result<Option<Route>, FetchError> {
        #[derive(serde::Deserialize)]
        struct Body {
            slug: String,
            org_id: String,
            status: String,
            backend: Option<String>,
        }
        let url = format!("{}/cp/orgs/{slug}/instance", self.cp_url);
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::Transport(molecule_shared::http::without_url(&e)))?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            other => return Err(FetchError::Status(other)),
        }
        let bytes = molecule_shared::http::read_capped(resp, LOOKUP_BODY_CAP)
            .await
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        let body: Body = serde_json::from_slice(&bytes)
            .map_err(|_| FetchError::Body("not the instance JSON".into()))?;
        if body.slug != slug {
            return Err(FetchError::Body("answer names another slug".into()));
        }
        let org_id = HeaderValue::from_str(&body.org_id)
            .map_err(|_| FetchError::Body("org_id is not a header value".into()))?;
        let backend = body
            .backend
            .map(|b| parse_backend(&b))
            .transpose()
            .map_err(FetchError::Body)?;
        Ok(Some(Route {
            org_id,
            status: body.status,
            backend,
        }))
    }
}

fn stale_or_unavailable(entry: &Entry) -> Resolution {
    match &entry.last_good {
        Some(route) => Resolution::Route {
            route: route.clone(),
            stale: true,
        },
        None => Resolution::Unavailable,
    }
}

/// `http://host:port` (a trailing `/` allowed) → `host:port`. Anything else is refused: the
/// router speaks plain HTTP/1.1 to tenants on the private network.
pub fn parse_backend(url: &str) -> Result<Authority, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| "backend is not an http:// URL".to_owned())?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("backend must be http://host:port".into());
    }
    rest.parse::<Authority>()
        .map_err(|_| "backend authority is invalid".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_plain_http_authorities() {
        assert_eq!(
            parse_backend("http://127.0.0.1:4000").unwrap().as_str(),
            "127.0.0.1:4000"
        );
        assert_eq!(
            parse_backend("http://10.0.0.5:8080/").unwrap().as_str(),
            "10.0.0.5:8080"
        );
        for bad in [
            "https://a:1",
            "127.0.0.1:80",
            "http://",
            "http://a:1/x",
            "http://u@a:1",
            "http://a:1?x",
        ] {
            assert!(parse_backend(bad).is_err(), "{bad}");
        }
    }
}
