//! The reference workspace runtime: a stand-in for the real agent runtimes. It serves its
//! health on the port it was given and reports which workspace it is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use axum::routing::get;
use axum::{Json, Router};
use molecule_shared::http::{method_not_allowed, not_found};
use molecule_shared::pidfile::Pidfile;
use tokio_util::sync::CancellationToken;

pub struct AgentConfig {
    pub listen: SocketAddr,
    pub prefer_port: Option<u16>,
    pub pidfile: Option<PathBuf>,
    pub workspace_id: String,
    pub runtime: String,
}

impl AgentConfig {
    pub fn from_env(
        listen: SocketAddr,
        prefer_port: Option<u16>,
        pidfile: Option<PathBuf>,
    ) -> anyhow::Result<AgentConfig> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        Ok(AgentConfig {
            listen,
            prefer_port,
            pidfile,
            workspace_id: var("WORKSPACE_ID")
                .ok_or_else(|| anyhow::anyhow!("WORKSPACE_ID is not set"))?,
            runtime: var("RUNTIME").unwrap_or_else(|| "reference".into()),
        })
    }
}

pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut pidfile = config.pidfile.as_deref().map(Pidfile::claim).transpose()?;
    let listener = molecule_shared::server::bind(config.listen, config.prefer_port).await?;
    let addr = listener.local_addr()?;
    if let Some(p) = pidfile.as_mut() {
        p.publish_addr(&addr.to_string())?;
    }
    tracing::info!(%addr, workspace = %config.workspace_id, "agent listening");
    let started = Instant::now();
    let (workspace_id, runtime) = (config.workspace_id.clone(), config.runtime.clone());
    let app = Router::new()
        .route(
            "/health",
            get(move || {
                let (workspace_id, runtime) = (workspace_id.clone(), runtime.clone());
                async move {
                    Json(serde_json::json!({
                        "status": "ok",
                        "workspace_id": workspace_id,
                        "runtime": runtime,
                        "uptime_seconds": started.elapsed().as_secs(),
                    }))
                }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    molecule_shared::server::serve(listener, app, shutdown).await;
    drop(pidfile);
    Ok(())
}
