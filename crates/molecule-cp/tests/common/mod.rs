//! Shared by the EC2 and KMS suites: a control plane in-process (SQLite in a temp dir, the given
//! provider, no reconciler unless asked), and log capture.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use molecule_cp::aws::AwsSettings;
use molecule_cp::config::{CpConfig, ProviderKind};
use molecule_cp::provider::Provider;
use molecule_cp::startup::Application;
use molecule_cp::ControlPlane;
use molecule_shared::crypto::EncryptionKey;
use molecule_shared::ssrf::SsrfPolicy;
use molecule_shared::token::{self, TokenKind};
use tokio_util::sync::CancellationToken;

pub fn config(dir: &std::path::Path) -> CpConfig {
    CpConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("cp.db").display()),
        data_dir: dir.to_path_buf(),
        provider: ProviderKind::Ec2,
        strict: false,
        admin_token: Some(token::generate(TokenKind::CpAdmin)),
        shared_secret: Some(token::generate(TokenKind::ProvisionShared)),
        shared_secret_previous: None,
        encryption_key: EncryptionKey::generate(),
        kms_key_arn: None,
        aws: AwsSettings::default(),
        bootstrap_ttl: Duration::from_secs(900),
        orphan_grace: Duration::from_secs(900),
        cp_base_url: None,
        ssrf: SsrfPolicy::AllowLoopback,
        reconcile_interval: Duration::from_millis(200),
        provision_deadline: Duration::from_secs(3),
        tenant_version: "test".into(),
    }
}

/// A running control plane (API and reconciler) until `stop`.
pub struct RunningCp {
    pub cp: Arc<ControlPlane>,
    pub url: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningCp {
    pub async fn start(config: CpConfig, provider: Arc<dyn Provider>) -> RunningCp {
        let shutdown = CancellationToken::new();
        let app = Application::build(config, provider, shutdown.clone())
            .await
            .unwrap();
        let cp = app.cp.clone();
        let url = app.base_url().to_owned();
        let task = tokio::spawn(app.run_until_stopped());
        RunningCp {
            cp,
            url,
            shutdown,
            task,
        }
    }

    /// Stops serving and reconciling; work the reconciler spawned is abandoned, as in a crash.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    pub fn admin(&self) -> String {
        self.cp
            .config
            .admin_token
            .as_ref()
            .unwrap()
            .expose()
            .to_owned()
    }

    pub async fn create_org(&self, slug: &str) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/cp/admin/orgs", self.url))
            .bearer_auth(self.admin())
            .json(&serde_json::json!({"slug": slug, "name": slug}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }
}

/// Collects everything logged through the subscriber it makes.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let me = self.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || me.clone())
            .finish()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` every 100 ms until it returns Some, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
