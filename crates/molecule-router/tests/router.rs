//! The router against a control plane and tenants the tests control: a fake CP serving
//! `/cp/orgs/{slug}/instance` from a table (with a lookup counter, a delay and an off switch), a
//! header-echo backend and a WebSocket echo backend, all on real loopback sockets.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use molecule_router::host::BaseDomain;
use molecule_router::{Router, RouterConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Serves `app` on a fresh loopback port until the returned token is cancelled.
async fn spawn_app(app: axum::Router) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(molecule_shared::server::serve(listener, app, stop.clone()));
    (addr, stop)
}

#[derive(Default)]
struct FakeCpState {
    orgs: Mutex<HashMap<String, Value>>,
    lookups: AtomicUsize,
    delay_ms: AtomicU64,
}

struct FakeCp {
    state: Arc<FakeCpState>,
    url: String,
    stop: CancellationToken,
}

impl FakeCp {
    async fn start() -> FakeCp {
        async fn instance(
            State(s): State<Arc<FakeCpState>>,
            Path(slug): Path<String>,
        ) -> Result<Json<Value>, StatusCode> {
            s.lookups.fetch_add(1, Ordering::SeqCst);
            let delay = s.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let org = s.orgs.lock().unwrap().get(&slug).cloned();
            org.map(Json).ok_or(StatusCode::NOT_FOUND)
        }
        let state = Arc::new(FakeCpState::default());
        let app = axum::Router::new()
            .route("/cp/orgs/{slug}/instance", get(instance))
            .with_state(state.clone());
        let (addr, stop) = spawn_app(app).await;
        FakeCp {
            state,
            url: format!("http://{addr}"),
            stop,
        }
    }

    fn set(&self, slug: &str, status: &str, backend: Option<SocketAddr>) {
        self.state.orgs.lock().unwrap().insert(
            slug.to_owned(),
            json!({
                "slug": slug,
                "org_id": format!("org-id-of-{slug}"),
                "status": status,
                "backend": backend.map(|b| format!("http://{b}")),
            }),
        );
    }

    fn lookups(&self) -> usize {
        self.state.lookups.load(Ordering::SeqCst)
    }
}

/// A tenant stand-in: `/echo` answers the request's headers, `POST /len` the body's length.
async fn echo_backend() -> SocketAddr {
    async fn echo(headers: HeaderMap) -> Json<Value> {
        let mut map = serde_json::Map::new();
        for name in headers.keys() {
            let values: Vec<Value> = headers
                .get_all(name)
                .iter()
                .map(|v| Value::from(v.to_str().unwrap_or("<binary>")))
                .collect();
            map.insert(name.as_str().to_owned(), Value::Array(values));
        }
        Json(Value::Object(map))
    }
    async fn len(req: Request) -> String {
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        body.len().to_string()
    }
    let app = axum::Router::new()
        .route("/echo", get(echo))
        .route("/len", post(len));
    spawn_app(app).await.0
}

/// A WebSocket server that echoes every message.
async fn ws_echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct TestRouter {
    addr: SocketAddr,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl TestRouter {
    async fn start(cp: &FakeCp, tune: impl FnOnce(&mut RouterConfig)) -> TestRouter {
        let mut config = RouterConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            BaseDomain::parse("localhost").unwrap(),
            cp.url.clone(),
        );
        config.cp_timeout = Duration::from_millis(500);
        tune(&mut config);
        let stop = CancellationToken::new();
        let router = Router::build(config, stop.clone()).await.unwrap();
        let addr = router.addr();
        tokio::spawn(router.run_until_stopped());
        TestRouter {
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            _stop: stop.drop_guard(),
        }
    }

    fn get(&self, host: &str, path: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("http://{}{path}", self.addr))
            .header("host", host)
    }

    async fn status(&self, host: &str, path: &str) -> StatusCode {
        self.get(host, path).send().await.unwrap().status()
    }

    async fn metrics(&self) -> String {
        let resp = self.get("localhost", "/metrics").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.unwrap()
    }
}

fn counter(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("router_requests_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {outcome} counter in {metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn forwards_to_the_org_with_router_owned_headers_only() {
    let cp = FakeCp::start().await;
    let backend = echo_backend().await;
    cp.set("acme", "running", Some(backend));
    let router = TestRouter::start(&cp, |_| {}).await;

    let resp = router
        .get("acme.localhost:8080", "/echo")
        .header("X-Molecule-Org-Id", "org-id-of-victim")
        .header("x-molecule-org-id", "another-spoof")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "for=6.6.6.6")
        .header("Connection", "x-hop")
        .header("X-Hop", "must-not-pass")
        .header("Authorization", "Bearer passes-through")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["x-molecule-org-id"], json!(["org-id-of-acme"]));
    assert_eq!(seen["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(seen["x-forwarded-host"], json!(["acme.localhost:8080"]));
    assert_eq!(seen["x-forwarded-proto"], json!(["http"]));
    assert_eq!(seen["host"], json!(["acme.localhost:8080"]));
    assert_eq!(seen["authorization"], json!(["Bearer passes-through"]));
    for gone in ["forwarded", "x-hop"] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the tenant: {seen}"
        );
    }

    // Bodies stream through; over the cap is refused before the tenant sees it.
    let body = vec![b'x'; 512 * 1024];
    let resp = router
        .http
        .post(format!("http://{}/len", router.addr))
        .header("host", "acme.localhost")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), (512 * 1024).to_string());
}

#[tokio::test]
async fn request_bodies_over_the_cap_get_413() {
    let cp = FakeCp::start().await;
    cp.set("acme", "running", Some(echo_backend().await));
    let router = TestRouter::start(&cp, |c| c.max_body_bytes = 1024).await;
    let resp = router
        .http
        .post(format!("http://{}/len", router.addr))
        .header("host", "acme.localhost")
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn only_one_valid_label_under_the_base_domain_is_routed() {
    let cp = FakeCp::start().await;
    cp.set("acme", "running", Some(echo_backend().await));
    let router = TestRouter::start(&cp, |_| {}).await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );
    for host in [
        "nosuchorg.localhost",
        "a.acme.localhost",
        "acme.localhost.example.com",
        "example.com",
        "acme",
        "www.localhost",
        "ACME-.localhost",
        "127.0.0.1",
        "<script>.localhost",
    ] {
        let resp = router.get(host, "/echo").send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{host}");
        let page = resp.text().await.unwrap();
        assert!(!page.contains("script") && page.len() < 400, "{page}");
    }
    // The CP was asked about the one syntactically valid unknown slug, and nothing else.
    assert_eq!(cp.lookups(), 2);
    // The base domain itself is the router's, not a tenant's.
    assert_eq!(
        router.status("localhost", "/echo").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        router.status("localhost:8080", "/health").await,
        StatusCode::OK
    );
    let metrics = router.metrics().await;
    assert_eq!(counter(&metrics, "routed"), 1);
    assert_eq!(counter(&metrics, "unknown"), 9);
    assert!(metrics.contains("router_cache_hit_ratio "), "{metrics}");
    assert!(
        metrics.contains("router_cp_lookup_duration_seconds_count 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_lookup() {
    let cp = FakeCp::start().await;
    cp.set("acme", "running", Some(echo_backend().await));
    cp.state.delay_ms.store(200, Ordering::SeqCst);
    let router = TestRouter::start(&cp, |_| {}).await;
    let requests = (0..100).map(|_| router.status("acme.localhost", "/echo"));
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(cp.lookups(), 1);
}

#[tokio::test]
async fn known_slugs_keep_routing_while_the_cp_is_down() {
    let cp = FakeCp::start().await;
    let backend = echo_backend().await;
    cp.set("acme", "running", Some(backend));
    cp.set("bravo", "running", Some(backend));
    let router = TestRouter::start(&cp, |c| {
        c.cache_ttl = Duration::from_millis(100);
        c.negative_ttl = Duration::from_millis(100);
    })
    .await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );

    cp.stop.cancel();
    // Well past the TTL, several times over: each request finds the CP gone.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            router.status("acme.localhost", "/echo").await,
            StatusCode::OK
        );
    }
    // A slug the router never saw cannot be guessed: 503, not 404 (the CP may know it).
    assert_eq!(
        router.status("bravo.localhost", "/echo").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let metrics = router.metrics().await;
    assert_eq!(counter(&metrics, "stale"), 5, "{metrics}");
    assert_eq!(counter(&metrics, "unavailable"), 1, "{metrics}");
}

#[tokio::test]
async fn a_slow_cp_does_not_hold_up_known_slugs() {
    let cp = FakeCp::start().await;
    cp.set("acme", "running", Some(echo_backend().await));
    let router = TestRouter::start(&cp, |c| {
        c.cache_ttl = Duration::from_millis(50);
        c.cp_timeout = Duration::from_secs(5);
    })
    .await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );
    cp.state.delay_ms.store(3000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counter(&router.metrics().await, "stale"), 1);
}

#[tokio::test]
async fn a_provisioning_org_gets_the_starting_page_then_its_tenant() {
    let cp = FakeCp::start().await;
    cp.set("acme", "provisioning", None);
    let router = TestRouter::start(&cp, |c| c.negative_ttl = Duration::from_millis(100)).await;
    let resp = router.get("acme.localhost", "/echo").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert!(resp.text().await.unwrap().contains("starting"));

    cp.set("acme", "running", Some(echo_backend().await));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );

    cp.set("acme", "failed", None);
    cp.set("gone", "deleting", None);
    let router = TestRouter::start(&cp, |_| {}).await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        router.status("gone.localhost", "/").await,
        StatusCode::NOT_FOUND
    );
    let metrics = router.metrics().await;
    assert_eq!(counter(&metrics, "unavailable"), 1);
}

#[tokio::test]
async fn a_refused_backend_is_looked_up_again_before_502() {
    let cp = FakeCp::start().await;
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    cp.set("acme", "running", Some(dead));
    let router = TestRouter::start(&cp, |c| c.cache_ttl = Duration::from_secs(60)).await;
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(cp.lookups(), 2, "one lookup, one refresh after the refusal");

    // The tenant moved; the cached route still names the old port.
    cp.set("acme", "running", Some(echo_backend().await));
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );
    assert_eq!(cp.lookups(), 3);
    assert_eq!(
        router.status("acme.localhost", "/echo").await,
        StatusCode::OK
    );
    assert_eq!(cp.lookups(), 3, "the new route is cached");
}

#[tokio::test]
async fn websocket_echo_through_the_router() {
    let cp = FakeCp::start().await;
    cp.set("acme", "running", Some(ws_echo_backend().await));
    let router = TestRouter::start(&cp, |_| {}).await;
    let stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://acme.localhost/socket", stream)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through the router", "and back"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        0u8, 1, 2, 255,
    ]))
    .await
    .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
}
