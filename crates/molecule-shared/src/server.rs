//! Serving an axum router on a bound listener with the timeouts every server here must have:
//! header read (which also closes idle keep-alive connections), request (a tower layer the
//! routers add) and graceful shutdown with a drain deadline.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown` is cancelled, then drains open connections for at most
/// [`DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let svc = app
            .clone()
            .map_request(move |req: Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let conn = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
            .with_upgrades();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain deadline; closing them");
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Executor type re-exported for clients that need one.
pub type Executor = TokioExecutor;

/// Binds `listen`; when it asks for port 0 and `prefer_port` is given, tries that port first, so
/// a restarted instance keeps its address when it can and still starts when it cannot.
pub async fn bind(listen: SocketAddr, prefer_port: Option<u16>) -> std::io::Result<TcpListener> {
    if listen.port() == 0 {
        if let Some(port) = prefer_port.filter(|p| *p != 0) {
            if let Ok(listener) = TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
                return Ok(listener);
            }
        }
    }
    TcpListener::bind(listen).await
}
