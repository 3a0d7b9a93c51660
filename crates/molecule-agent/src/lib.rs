//! The reference workspace runtime, a stand-in for the real agent runtimes: it registers with
//! its tenant using the token it was given, heartbeats with real figures, serves its agent card
//! and an A2A echo endpoint, re-registers when its tenant restarts, and exits on SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use molecule_shared::http::{method_not_allowed, not_found};
use molecule_shared::pidfile::Pidfile;
use molecule_shared::secret::Secret;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub struct AgentConfig {
    pub listen: SocketAddr,
    pub prefer_port: Option<u16>,
    pub pidfile: Option<PathBuf>,
    pub workspace_id: String,
    pub runtime: String,
    /// The tenant to register with; without it the agent only serves.
    pub platform_url: Option<String>,
    pub token: Option<Secret>,
    /// The URL to register (default: the bound address).
    pub agent_url: Option<String>,
    pub heartbeat_every: Duration,
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
            platform_url: var("PLATFORM_URL"),
            token: molecule_shared::secret::from_env("MOLECULE_WORKSPACE_TOKEN")?,
            agent_url: var("AGENT_URL"),
            heartbeat_every: Duration::from_secs(
                var("HEARTBEAT_INTERVAL_SECONDS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(30u64)
                    .max(1),
            ),
        })
    }
}

struct Agent {
    workspace_id: String,
    runtime: String,
    url: String,
    started: Instant,
    active_tasks: AtomicI64,
}

impl Agent {
    fn card(&self) -> Value {
        json!({
            "name": format!("reference-agent-{}", &self.workspace_id[..self.workspace_id.len().min(8)]),
            "description": "Molecule reference agent: echoes what it is sent.",
            "version": env!("CARGO_PKG_VERSION"),
            "url": self.url,
            "skills": [{ "id": "echo", "name": "Echo", "description": "Replies with the text it receives.", "tags": ["test"] }],
            "capabilities": { "streaming": false, "pushNotifications": false },
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
    let agent = Arc::new(Agent {
        workspace_id: config.workspace_id.clone(),
        runtime: config.runtime.clone(),
        url: config
            .agent_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}")),
        started: Instant::now(),
        active_tasks: AtomicI64::new(0),
    });
    if let Some(platform) = config.platform_url.clone() {
        tokio::spawn(report(
            agent.clone(),
            platform,
            config.token.clone(),
            config.heartbeat_every,
            shutdown.clone(),
        ));
    }
    let app = Router::new()
        .route("/health", get(health))
        .route("/.well-known/agent.json", get(card))
        .route("/agent-card", get(card))
        .route("/", post(a2a))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024))
        .with_state(agent);
    molecule_shared::server::serve(listener, app, shutdown).await;
    tracing::info!("agent stopped");
    drop(pidfile);
    Ok(())
}

async fn health(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "workspace_id": agent.workspace_id,
        "runtime": agent.runtime,
        "uptime_seconds": agent.started.elapsed().as_secs(),
        "active_tasks": agent.active_tasks.load(Ordering::Relaxed),
    }))
}

async fn card(State(agent): State<Arc<Agent>>) -> Json<Value> {
    Json(agent.card())
}

/// A2A JSON-RPC `message/send`: replies with the text parts it received.
async fn a2a(State(agent): State<Arc<Agent>>, body: axum::body::Bytes) -> Json<Value> {
    agent.active_tasks.fetch_add(1, Ordering::Relaxed);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let reply = if request["method"] != "message/send" {
        json!({ "jsonrpc": "2.0", "id": id, "error": { "code": -32601, "message": "method not found" } })
    } else {
        let text: Vec<&str> = request["params"]["message"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": { "kind": "message", "role": "agent", "parts": [{ "kind": "text", "text": text.join("\n") }] },
        })
    };
    agent.active_tasks.fetch_sub(1, Ordering::Relaxed);
    Json(reply)
}

/// Registers, then heartbeats; any heartbeat refusal or failure (the tenant restarted, lost
/// its state, or moved) sends it back to registering, with backoff.
async fn report(
    agent: Arc<Agent>,
    platform: String,
    token: Option<Secret>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build an HTTP client; not reporting");
            return;
        }
    };
    let mut token = token;
    let base = platform.trim_end_matches('/').to_owned();
    let post = |path: &str, body: Value, token: &Option<Secret>| {
        let mut req = http.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t.expose());
        }
        req.send()
    };
    let pause = |d: Duration| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    let mut delay = Duration::ZERO;
    loop {
        if !pause(delay).await {
            return;
        }
        let body =
            json!({ "id": agent.workspace_id, "url": agent.url, "agent_card": agent.card() });
        match post("/registry/register", body, &token).await {
            Ok(resp) if resp.status().is_success() => {
                if let Ok(v) = resp.json::<Value>().await {
                    if let Some(t) = v["auth_token"].as_str().and_then(Secret::new) {
                        token = Some(t);
                    }
                }
                tracing::info!(workspace = %agent.workspace_id, "registered with the platform");
            }
            other => {
                match other {
                    Ok(resp) => tracing::warn!(
                        status = resp.status().as_u16(),
                        "registration refused; retrying"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %molecule_shared::http::without_url(&e), "registration failed; retrying")
                    }
                }
                delay = (delay * 2).clamp(Duration::from_millis(200), Duration::from_secs(30));
                continue;
            }
        }
        delay = Duration::from_millis(200);
        // Heartbeat until the platform stops accepting them, then register again.
        loop {
            if !pause(every).await {
                return;
            }
            let body = json!({
                "workspace_id": agent.workspace_id,
                "error_rate": 0.0,
                "sample_error": "",
                "active_tasks": agent.active_tasks.load(Ordering::Relaxed),
                "uptime_seconds": agent.started.elapsed().as_secs(),
                "current_task": "",
            });
            match post("/registry/heartbeat", body, &token).await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(
                        status = resp.status().as_u16(),
                        "heartbeat refused; registering again"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %molecule_shared::http::without_url(&e), "heartbeat failed; registering again");
                    break;
                }
            }
        }
    }
}
