//! `molecule up`: the whole SaaS on one machine. The control plane runs in this process with
//! the local provider and SQLite; secrets are generated on first start and kept 0600 in the data
//! dir; Ctrl-C stops every instance it started; a second run picks the orgs back up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use molecule_cp::config::{self, CpConfig, ProviderKind};
use molecule_cp::provider::local::LocalProvider;
use molecule_shared::crypto::EncryptionKey;
use molecule_shared::pidfile::Pidfile;
use molecule_shared::secret::{self, Secret};
use molecule_shared::ssrf::SsrfPolicy;
use molecule_shared::token::{self, TokenKind};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where everything is kept: database, secrets, instances.
    #[arg(long, env = "MOLECULE_DATA_DIR", default_value = "molecule-data")]
    data_dir: PathBuf,
    /// Control-plane listen address.
    #[arg(long, default_value = "127.0.0.1:8090")]
    cp_addr: SocketAddr,
    /// Edge router listen address: `http://<slug>.localhost:<port>/` reaches the org's tenant.
    #[arg(long, default_value = "127.0.0.1:8080")]
    router_addr: SocketAddr,
}

/// The files a local SaaS keeps its secrets in, generating any that are missing.
struct LocalSecrets {
    admin_token: Secret,
    shared_secret: Secret,
    encryption_key: EncryptionKey,
    admin_token_file: PathBuf,
}

fn local_secrets(data_dir: &std::path::Path) -> anyhow::Result<LocalSecrets> {
    let admin_token_file = config::local_secret_path(data_dir, config::ENV_ADMIN_TOKEN);
    let admin_token = secret::load_or_generate(config::ENV_ADMIN_TOKEN, &admin_token_file, || {
        token::generate(TokenKind::CpAdmin)
    })?;
    let shared_secret = secret::load_or_generate(
        config::ENV_SHARED_SECRET,
        &config::local_secret_path(data_dir, config::ENV_SHARED_SECRET),
        || token::generate(TokenKind::ProvisionShared),
    )?;
    let encryption_key = config::local_encryption_key(data_dir)?;
    Ok(LocalSecrets {
        admin_token,
        shared_secret,
        encryption_key,
        admin_token_file,
    })
}

pub async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let _lock = Pidfile::claim(&data_dir.join("up.pid"))
        .context("is another `molecule up` using this data dir?")?;
    let secrets = local_secrets(&data_dir)?;
    let config = CpConfig {
        listen: args.cp_addr,
        database_url: std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| config::default_database_url(&data_dir)),
        data_dir: data_dir.clone(),
        provider: ProviderKind::Local,
        strict: false,
        admin_token: Some(secrets.admin_token.clone()),
        shared_secret: Some(secrets.shared_secret.clone()),
        shared_secret_previous: None,
        encryption_key: secrets.encryption_key.clone(),
        kms_key_arn: None,
        aws: Default::default(),
        bootstrap_ttl: Duration::from_secs(900),
        orphan_grace: Duration::from_secs(900),
        cp_base_url: None,
        ssrf: SsrfPolicy::AllowLoopback,
        reconcile_interval: Duration::from_secs(2),
        provision_deadline: Duration::from_secs(60),
        tenant_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let binary = std::env::current_exe().context("cannot locate the molecule binary")?;
    // The edge router runs on loopback beside the tenants: they may believe its X-Forwarded-For,
    // so each browser client gets its own rate-limit bucket.
    let provider = std::sync::Arc::new(
        LocalProvider::new(binary, data_dir.clone()).with_env("TRUSTED_PROXIES", "127.0.0.1"),
    );
    let app = molecule_cp::startup::Application::build(config, provider.clone(), shutdown.clone())
        .await?;
    let cp_url = app.base_url().to_owned();
    let router_config = molecule_router::RouterConfig::new(
        args.router_addr,
        molecule_router::host::BaseDomain::parse("localhost").map_err(anyhow::Error::msg)?,
        cp_url.clone(),
    );
    let router = molecule_router::Router::build(router_config, shutdown.clone()).await?;
    let router_port = router.addr().port();
    let router_url = format!("http://localhost:{router_port}");
    let server = tokio::spawn(app.run_until_stopped());
    let router_task = tokio::spawn(router.run_until_stopped());

    let up_json = serde_json::json!({
        "cp_url": cp_url,
        "router_url": router_url,
        "admin_token_file": secrets.admin_token_file,
        "data_dir": data_dir,
        "pid": std::process::id(),
    });
    let up_path = data_dir.join("up.json");
    std::fs::write(&up_path, serde_json::to_vec_pretty(&up_json)?)?;
    println!("Molecule is up.");
    println!("  control plane:   {cp_url}");
    println!(
        "  admin API token: {} (send as Authorization: Bearer)",
        secrets.admin_token_file.display()
    );
    println!("  state:           {}", up_path.display());
    println!(
        "  create an org:   molecule org create acme --name Acme --cp {cp_url} --token-file {}",
        secrets.admin_token_file.display()
    );
    println!("Press Ctrl-C to stop everything.");

    let _ = server.await;
    let _ = router_task.await;
    println!("Stopping instances...");
    if let Err(e) = provider.stop_all().await {
        tracing::warn!(error = %e, "some instances did not stop");
    }
    let _ = std::fs::remove_file(&up_path);
    println!("Stopped.");
    Ok(())
}
