//! The Molecule control plane: signs orgs up, runs one tenant instance per org through a compute
//! provider, runs workspace instances on tenants' behalf, serves tenants their configuration,
//! purges orgs, and records every mutation and every refusal in an audit log.

pub mod api;
pub mod aws;
pub mod config;
pub mod keyring;
pub mod orgs;
pub mod provider;
pub mod purge;
pub mod reconcile;
pub mod startup;
pub mod store;
pub mod tenant_config;

use std::sync::Arc;
use std::time::Duration;

use molecule_shared::telemetry::Metrics;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use config::CpConfig;
use provider::Provider;
use store::{AuditEntry, Store};

/// Everything the API handlers and the background loops share.
pub struct ControlPlane {
    pub config: CpConfig,
    pub store: Store,
    pub provider: Arc<dyn Provider>,
    /// Seals and opens secrets at rest (static key or KMS data keys).
    pub keyring: keyring::Keyring,
    pub metrics: Metrics,
    /// Wakes the reconciler before its next tick (an org was created, deleted, retried).
    pub nudge: Notify,
    /// Client for calls to instances (health checks): short timeouts, no redirects.
    pub http: reqwest::Client,
    /// The URL tenants are told to reach us at.
    pub base_url: String,
    /// This replica's identity for leases.
    pub replica_id: String,
    pub shutdown: CancellationToken,
    pub(crate) purges_running: purge::PurgeLocks,
}

impl ControlPlane {
    /// Records an audit entry. A failed audit write is logged and counted, not fatal: the
    /// action it describes has already happened (or been refused).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        detail: &str,
    ) {
        let entry = AuditEntry {
            at: molecule_shared::now_ms(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            self.metrics.inc("cp_audit_write_failures_total", &[]);
            tracing::error!(error = %e, action, "audit write failed");
        }
    }

    /// Whether the instance at `address` answers `GET /health` with 200.
    pub async fn healthy(&self, address: &str) -> bool {
        let url = format!("{}/health", address.trim_end_matches('/'));
        matches!(
            self.http.get(url).timeout(Duration::from_secs(2)).send().await,
            Ok(resp) if resp.status().is_success()
        )
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building an HTTP client without TLS settings cannot fail")
}
