//! Boot order: claim the pidfile, open and migrate the database, pull the configuration from
//! the control plane, bind, publish the address, serve. Each step is reported to the control
//! plane as a boot event, in order, without delaying the boot.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use molecule_shared::pidfile::Pidfile;
use molecule_shared::telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::router;
use crate::config::{Mode, TenantConfig};
use crate::cp_client::{refresh_loop, CpClient};
use crate::events::Events;
use crate::limits::RateLimiter;
use crate::state::TenantState;
use crate::store::TenantStore;

/// Sends boot events one after another in the background.
fn boot_reporter(
    cp: Option<Arc<CpClient>>,
) -> mpsc::UnboundedSender<(&'static str, &'static str, String)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, &'static str, String)>();
    tokio::spawn(async move {
        while let Some((stage, status, detail)) = rx.recv().await {
            if let Some(cp) = &cp {
                cp.boot_event(stage, status, &detail).await;
            }
        }
    });
    tx
}

pub async fn run(config: TenantConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut pidfile = config.pidfile.as_deref().map(Pidfile::claim).transpose()?;
    if config.mode == Mode::OpenDev {
        tracing::warn!("open dev mode: admin routes need no credential; serving on loopback only");
    }
    let cp = config
        .cp
        .clone()
        .map(|link| Arc::new(CpClient::new(link, config.org_slug.clone())));
    let report = boot_reporter(cp.clone());

    let store = TenantStore::open(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "opening the database at {}",
                molecule_shared::db::redact_url(&config.database_url)
            )
        })?;
    let _ = report.send(("database", "ok", String::new()));

    if let Some(cp) = &cp {
        match cp.refresh().await {
            Ok(_) => {
                let _ = report.send(("config", "ok", String::new()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull configuration from the control plane; continuing with boot values");
                let _ = report.send(("config", "failed", e.to_string()));
            }
        }
    }

    let listener = molecule_shared::server::bind(config.listen, config.prefer_port)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if let Some(p) = pidfile.as_mut() {
        p.publish_addr(&addr.to_string())?;
    }
    let _ = report.send(("listening", "ok", addr.to_string()));
    tracing::info!(%addr, org = config.org_slug.as_deref().unwrap_or("-"), "tenant listening");

    if let Some(cp) = &cp {
        let every = std::env::var("MOLECULE_CONFIG_REFRESH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60u64);
        tokio::spawn(refresh_loop(
            cp.clone(),
            Duration::from_secs(every.max(1)),
            shutdown.clone(),
        ));
    }
    let platform_url = config
        .platform_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let state = Arc::new(TenantState {
        limiter: RateLimiter::new(config.rate_limit, Duration::from_secs(60)),
        mint_limiter: RateLimiter::new(10, Duration::from_secs(3600)),
        events: Events::new(store.clone()),
        config,
        store,
        cp,
        metrics: Metrics::default(),
        platform_url,
        http,
        routes: Default::default(),
    });
    tokio::spawn(crate::lifecycle::sweeps(state.clone(), shutdown.clone()));
    molecule_shared::server::serve(listener, router(state), shutdown).await;
    tracing::info!("tenant stopped");
    drop(pidfile);
    Ok(())
}
