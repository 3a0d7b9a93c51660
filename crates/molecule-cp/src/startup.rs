//! Building and running the control plane: open the store, bind the listener (port 0 works, for
//! tests), then serve the API and run the reconciler until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use molecule_shared::telemetry::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{CpConfig, ProviderKind};
use crate::keyring::Keyring;
use crate::provider::local::LocalProvider;
use crate::provider::Provider;
use crate::store::Store;
use crate::{http_client, ControlPlane};

pub struct Application {
    pub cp: Arc<ControlPlane>,
    listener: TcpListener,
    addr: SocketAddr,
}

/// The provider the configuration asks for. `binary` is what local instances run.
pub async fn provider_for(config: &CpConfig, binary: PathBuf) -> anyhow::Result<Arc<dyn Provider>> {
    match config.provider {
        ProviderKind::Local => Ok(Arc::new(LocalProvider::new(
            binary,
            config.data_dir.clone(),
        ))),
        ProviderKind::Ec2 => {
            let settings = crate::provider::ec2::Ec2Settings::from_env()?;
            let provider = crate::provider::ec2::Ec2Provider::from_sdk(&config.aws, settings).await;
            provider.warn_if_shared();
            Ok(Arc::new(provider))
        }
    }
}

impl Application {
    pub async fn build(
        config: CpConfig,
        provider: Arc<dyn Provider>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let store = Store::open(&config.database_url).await.with_context(|| {
            format!(
                "opening the store at {}",
                molecule_shared::db::redact_url(&config.database_url)
            )
        })?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let base_url = config
            .cp_base_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let keyring = match &config.kms_key_arn {
            Some(arn) => {
                tracing::info!(key = %arn, "secrets at rest: KMS envelope mode (static key kept for reading older rows)");
                Keyring::kms(
                    &config.aws,
                    arn.clone(),
                    Some(config.encryption_key.clone()),
                )
                .await
            }
            None => Keyring::Static(config.encryption_key.clone()),
        };
        let metrics = Metrics::default();
        metrics.describe(
            "http_requests_total",
            "HTTP requests by route, method and status.",
        );
        metrics.describe("cp_orgs", "Orgs by status, as of the last reconcile pass.");
        metrics.describe(
            "cp_auth_denied_total",
            "Requests refused for want of a valid credential.",
        );
        let cp = Arc::new(ControlPlane {
            config,
            store,
            provider,
            keyring,
            metrics,
            nudge: Default::default(),
            http: http_client(),
            base_url,
            replica_id: crate::store::new_id(),
            shutdown,
            purges_running: Default::default(),
        });
        Ok(Application { cp, listener, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> &str {
        &self.cp.base_url
    }

    /// Serves and reconciles until the shutdown token is cancelled.
    pub async fn run_until_stopped(self) {
        let reconciler = tokio::spawn(crate::reconcile::run(self.cp.clone()));
        tracing::info!(addr = %self.addr, url = %self.cp.base_url, provider = self.cp.provider.kind(), "control plane listening");
        molecule_shared::server::serve(
            self.listener,
            crate::api::router(self.cp.clone()),
            self.cp.shutdown.clone(),
        )
        .await;
        let _ = reconciler.await;
    }
}
