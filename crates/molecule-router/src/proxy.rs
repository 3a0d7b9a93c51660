//! Forwarding one request to a tenant: streamed bodies both ways, hop-by-hop headers removed,
//! `X-Forwarded-*` and `X-Molecule-Org-Id` set by the router (client copies dropped), pooled
//! keep-alive connections, a connect and a response timeout, a request body cap, and WebSocket
//! (any HTTP/1.1 `Upgrade`) pass-through.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::{Authority, PathAndQuery, Scheme};
use axum::http::{request, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{LengthLimitError, Limited};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use crate::config::RouterConfig;

pub const X_MOLECULE_ORG_ID: HeaderName = HeaderName::from_static("x-molecule-org-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, not the message (RFC 9110 7.6.1), plus the ones the
/// router owns: whatever a client sends under these names is dropped.
const DROPPED: [HeaderName; 14] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::FORWARDED,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_MOLECULE_ORG_ID,
];

/// Why a request did not get a tenant's response.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Refused,
    /// No response head within the backend timeout.
    Timeout,
    /// The request body went over the cap while streaming.
    TooLarge,
    /// The connection broke.
    Failed,
}

/// The parts of a client request that are sent upstream, ready to be sent (again).
pub struct Upstream {
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    /// The client's side of an `Upgrade`, when it asked for one.
    pub client_upgrade: Option<OnUpgrade>,
}

impl Upstream {
    /// Takes what is forwarded from the client's request head. `host` is the client's `Host`
    /// (or the authority of an absolute-form target), already checked to be ours.
    pub fn from_client(parts: &mut request::Parts, peer: SocketAddr, host: &HeaderValue) -> Self {
        let upgrade = requested_upgrade(&parts.headers).filter(|_| parts.method == Method::GET);
        let client_upgrade = upgrade
            .is_some()
            .then(|| parts.extensions.remove::<OnUpgrade>())
            .flatten();
        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers);
        if let (Some(upgrade), true) = (upgrade, client_upgrade.is_some()) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, upgrade);
        }
        headers.insert(header::HOST, host.clone());
        headers.insert(X_FORWARDED_HOST, host.clone());
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert(X_FORWARDED_FOR, ip);
        }
        Self {
            method: parts.method.clone(),
            path: parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers,
            client_upgrade,
        }
    }

    fn request(&self, backend: &Authority, org_id: &HeaderValue, body: Body) -> Request<Body> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(backend.clone())
            .path_and_query(self.path.clone())
            .build()
            .expect("scheme, authority and path are valid parts");
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req.headers_mut().insert(X_MOLECULE_ORG_ID, org_id.clone());
        req
    }
}

/// The `Upgrade` value when the request asks to switch protocols (`Connection: upgrade`).
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the headers named in `Connection` and the fixed hop-by-hop and router-owned set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.iter().chain(DROPPED.iter()) {
        headers.remove(name);
    }
}

/// A declared `Content-Length` over `cap`.
pub fn declared_too_large(headers: &HeaderMap, cap: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > cap as u64)
}

pub struct Proxy {
    client: Client<HttpConnector, Body>,
    backend_timeout: Duration,
    max_body: usize,
    shutdown: CancellationToken,
}

impl Proxy {
    pub fn new(config: &RouterConfig, shutdown: CancellationToken) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            backend_timeout: config.backend_timeout,
            max_body: config.max_body_bytes,
            shutdown,
        }
    }

    /// The client's body, capped.
    pub fn capped(&self, body: Body) -> Body {
        Body::new(Limited::new(body, self.max_body))
    }

    /// Sends `upstream` to `backend` and turns the answer into the client's response. A `101`
    /// answer to an upgrade request joins the two upgraded connections.
    pub async fn send(
        &self,
        upstream: &mut Upstream,
        backend: &Authority,
        org_id: &HeaderValue,
        body: Body,
    ) -> Result<Response<Body>, ProxyError> {
        let req = upstream.request(backend, org_id, body);
        let mut resp =
            match tokio::time::timeout(self.backend_timeout, self.client.request(req)).await {
                Err(_) => return Err(ProxyError::Timeout),
                Ok(Err(e)) if e.is_connect() => return Err(ProxyError::Refused),
                Ok(Err(e)) if caused_by_limit(&e) => return Err(ProxyError::TooLarge),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "backend request failed");
                    return Err(ProxyError::Failed);
                }
                Ok(Ok(resp)) => resp,
            };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_side) = upstream.client_upgrade.take() else {
                // A 101 nobody asked for cannot be passed on.
                return Err(ProxyError::Failed);
            };
            let upgrade = resp.headers().get(header::UPGRADE).cloned();
            let backend_side = hyper::upgrade::on(&mut resp);
            self.tunnel(client_side, backend_side);
            let (mut parts, _) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(upgrade) = upgrade {
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                parts.headers.insert(header::UPGRADE, upgrade);
            }
            return Ok(Response::from_parts(parts, Body::empty()));
        }
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(Body::new))
    }

    /// Copies bytes both ways between the upgraded client and backend connections until either
    /// side closes or the router shuts down.
    fn tunnel(&self, client: OnUpgrade, backend: OnUpgrade) {
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let (client, backend) = match tokio::join!(client, backend) {
                (Ok(c), Ok(b)) => (c, b),
                _ => return,
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut backend) => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn caused_by_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if e.is::<LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_are_replaced_or_dropped() {
        let mut req = Request::builder()
            .uri("/x?y=1")
            .header("x-molecule-org-id", "spoofed")
            .header("X-Forwarded-For", "1.2.3.4")
            .header("x-forwarded-host", "evil")
            .header("forwarded", "for=1.2.3.4")
            .header("connection", "keep-alive, x-secret-hop")
            .header("x-secret-hop", "1")
            .header("te", "trailers")
            .header("authorization", "Bearer kept")
            .header("host", "acme.localhost:8080")
            .body(())
            .unwrap();
        let (mut parts, ()) = std::mem::replace(&mut req, Request::new(())).into_parts();
        let host = HeaderValue::from_static("acme.localhost:8080");
        let up = Upstream::from_client(&mut parts, "10.1.2.3:5555".parse().unwrap(), &host);
        let backend: Authority = "127.0.0.1:9".parse().unwrap();
        let req = up.request(&backend, &HeaderValue::from_static("org-1"), Body::empty());
        let h = req.headers();
        assert_eq!(req.uri(), "http://127.0.0.1:9/x?y=1");
        assert_eq!(h.get_all("x-molecule-org-id").iter().count(), 1);
        assert_eq!(h["x-molecule-org-id"], "org-1");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-host"], "acme.localhost:8080");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["authorization"], "Bearer kept");
        for gone in ["forwarded", "connection", "x-secret-hop", "te", "upgrade"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert!(up.client_upgrade.is_none());
    }

    #[test]
    fn declared_lengths_over_the_cap() {
        let mut h = HeaderMap::new();
        assert!(!declared_too_large(&h, 10));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(declared_too_large(&h, 10));
        assert!(!declared_too_large(&h, 11));
    }
}
