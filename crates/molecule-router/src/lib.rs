//! The edge router (`molecule router serve`): `<slug>.<base-domain>` to the org's tenant.
//!
//! Every request is classified by its `Host` ([`host`]); an org host is resolved through the
//! control plane ([`lookup`]) and forwarded ([`proxy`]); everything the router answers itself is
//! a tiny page ([`pages`]). The router's own `/metrics` and `/health` are only served for a
//! `Host` of exactly the base domain, so no tenant path is ever taken.

pub mod config;
pub mod host;
pub mod lookup;
pub mod metrics;
pub mod pages;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Response};
use hyper::body::Body as _;
use molecule_shared::slug::OrgSlug;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{RouterArgs, RouterConfig};
use host::{BaseDomain, Target};
use lookup::{Lookup, Resolution, Route};
use metrics::{Outcome, RouterMetrics};
use proxy::{Proxy, ProxyError, Upstream};

struct App {
    base_domain: BaseDomain,
    lookup: Arc<Lookup>,
    proxy: Proxy,
    metrics: Arc<RouterMetrics>,
    max_body: usize,
}

/// A bound, not yet serving router.
pub struct Router {
    listener: TcpListener,
    addr: SocketAddr,
    app: axum::Router,
    metrics: Arc<RouterMetrics>,
    shutdown: CancellationToken,
}

impl Router {
    /// Binds `config.listen` (port 0 picks a free port) and prepares the service.
    pub async fn build(config: RouterConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        use anyhow::Context;
        let listener = molecule_shared::server::bind(config.listen, None)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let metrics = Arc::new(RouterMetrics::default());
        let app = Arc::new(App {
            base_domain: config.base_domain.clone(),
            lookup: Arc::new(Lookup::new(&config, metrics.clone())?),
            proxy: Proxy::new(&config, shutdown.clone()),
            metrics: metrics.clone(),
            max_body: config.max_body_bytes,
        });
        let app = axum::Router::new().fallback(handle).with_state(app);
        Ok(Self {
            listener,
            addr,
            app,
            metrics,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> Arc<RouterMetrics> {
        self.metrics.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    pub async fn run_until_stopped(self) {
        tracing::info!(addr = %self.addr, "router listening");
        molecule_shared::server::serve(self.listener, self.app, self.shutdown).await;
    }
}

/// The `Host` of a request: the authority of an absolute-form target, else the header.
fn request_host(req: &Request) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<Body> {
    let host = request_host(&req);
    let target = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(|h| host::classify(h, &app.base_domain))
        .unwrap_or(Target::NotOurs);
    match (target, host) {
        (Target::Org(slug), Some(host)) => route(&app, slug, peer, host, req).await,
        (Target::Apex, _) => own_endpoint(&app, &req),
        _ => {
            app.metrics.outcome(Outcome::Unknown);
            pages::not_found()
        }
    }
}

/// `http://<base-domain>/metrics` and `/health`.
fn own_endpoint(app: &App, req: &Request) -> Response<Body> {
    let (content_type, body) = match req.uri().path() {
        "/metrics" => ("text/plain; version=0.0.4", app.metrics.render()),
        "/health" => (
            "application/json",
            serde_json::json!({
                "service": "molecule-router",
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
            })
            .to_string(),
        ),
        _ => return pages::not_found(),
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// What to do with a resolution: a backend to send to, or the router's own answer.
enum Decision {
    Send(Arc<Route>, bool),
    Answer(Outcome, Response<Body>),
}

fn decide(resolution: Resolution) -> Decision {
    match resolution {
        Resolution::Route { route, stale } if route.backend.is_some() => {
            Decision::Send(route, stale)
        }
        Resolution::Route { route, .. } => match route.status.as_str() {
            "provisioning" | "running" => {
                Decision::Answer(Outcome::Provisioning, pages::starting())
            }
            "deleting" | "purged" => Decision::Answer(Outcome::Unknown, pages::not_found()),
            _ => Decision::Answer(Outcome::Unavailable, pages::unavailable()),
        },
        Resolution::Unknown => Decision::Answer(Outcome::Unknown, pages::not_found()),
        Resolution::Unavailable => Decision::Answer(Outcome::Unavailable, pages::unavailable()),
    }
}

async fn route(
    app: &App,
    slug: OrgSlug,
    peer: SocketAddr,
    host: HeaderValue,
    req: Request,
) -> Response<Body> {
    let (mut route, stale) = match decide(app.lookup.resolve(&slug).await) {
        Decision::Send(route, stale) => (route, stale),
        Decision::Answer(outcome, page) => {
            app.metrics.outcome(outcome);
            return page;
        }
    };
    let (mut parts, body) = req.into_parts();
    if proxy::declared_too_large(&parts.headers, app.max_body) {
        app.metrics.outcome(Outcome::BackendError);
        return pages::too_large();
    }
    // A request without a body can be sent again when its first backend refused it.
    let resendable = body.is_end_stream();
    let mut upstream = Upstream::from_client(&mut parts, peer, &host);
    let mut body = Some(app.proxy.capped(body));
    let mut refreshed = false;
    loop {
        let backend = route.backend.as_ref().expect("decided to send");
        let sent = app
            .proxy
            .send(
                &mut upstream,
                backend,
                &route.org_id,
                body.take().unwrap_or_else(Body::empty),
            )
            .await;
        let error = match sent {
            Ok(resp) => {
                let outcome = if stale {
                    Outcome::Stale
                } else {
                    Outcome::Routed
                };
                app.metrics.outcome(outcome);
                return resp;
            }
            Err(e) => e,
        };
        if error == ProxyError::Refused && !refreshed {
            // The tenant may have moved or be restarting: ask the CP before giving up.
            refreshed = true;
            match decide(app.lookup.refresh(&slug).await) {
                Decision::Send(fresh, _) if resendable && fresh.backend != route.backend => {
                    route = fresh;
                    continue;
                }
                Decision::Send(..) => {}
                Decision::Answer(outcome, page) => {
                    app.metrics.outcome(outcome);
                    return page;
                }
            }
        }
        app.metrics.outcome(Outcome::BackendError);
        tracing::debug!(slug = slug.as_str(), error = ?error, "backend error");
        return match error {
            ProxyError::Timeout => pages::gateway_timeout(),
            ProxyError::TooLarge => pages::too_large(),
            ProxyError::Refused | ProxyError::Failed => pages::bad_gateway(),
        };
    }
}
