//! Per-client rate limiting (fixed windows), keyed by the TCP peer, or by the address the edge
//! router reports when the peer is a trusted proxy (so one router does not share one bucket
//! among all of an org's users).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Mode;
use crate::state::AppState;

pub struct RateLimiter {
    limit: u32,
    window: Duration,
    buckets: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

pub enum Verdict {
    Allowed { remaining: u32, reset: u64 },
    Limited { retry_after: u64 },
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn check(&self, ip: IpAddr) -> Verdict {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 50_000 {
            buckets.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let (start, count) = buckets.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        let reset = self
            .window
            .saturating_sub(now.duration_since(*start))
            .as_secs()
            .max(1);
        if *count >= self.limit {
            return Verdict::Limited { retry_after: reset };
        }
        *count += 1;
        Verdict::Allowed {
            remaining: self.limit - *count,
            reset,
        }
    }
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is trusted.
pub fn client_ip(state: &AppState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if state.config.trusted_proxies.contains(&peer) {
        if let Some(ip) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer
}

/// Middleware: `RATE_LIMIT` requests a minute per client, with `X-RateLimit-*` headers.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.config.mode == Mode::OpenDev {
        let mut resp = next.run(req).await;
        resp.headers_mut()
            .insert("x-ratelimit-limit", HeaderValue::from_static("unlimited"));
        return resp;
    }
    let limit = state.limiter.limit();
    match state.limiter.check(client_ip(&state, &req)) {
        Verdict::Allowed { remaining, reset } => {
            let mut resp = next.run(req).await;
            let h = resp.headers_mut();
            h.insert("x-ratelimit-limit", limit.into());
            h.insert("x-ratelimit-remaining", remaining.into());
            h.insert("x-ratelimit-reset", reset.into());
            resp
        }
        Verdict::Limited { retry_after } => {
            let mut resp = crate::json::GoJson(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({ "error": "rate limit exceeded", "retry_after": retry_after }),
            )
            .into_response();
            let h = resp.headers_mut();
            h.insert("retry-after", retry_after.into());
            h.insert("x-ratelimit-limit", limit.into());
            h.insert("x-ratelimit-remaining", 0u32.into());
            h.insert("x-ratelimit-reset", retry_after.into());
            resp
        }
    }
}

/// Middleware: the original's security headers.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "strict-transport-security",
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    h.insert(
        "referrer-policy",
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'"),
    );
    resp
}
