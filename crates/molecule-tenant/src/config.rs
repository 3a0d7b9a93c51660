//! Tenant configuration, read from the original platform's environment names.

use std::net::SocketAddr;
use std::path::PathBuf;

use molecule_shared::crypto::{EncryptionKey, KeyError};
use molecule_shared::secret::{self, Secret, SecretSourceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `MOLECULE_ENV` is development/dev and `ADMIN_TOKEN` is unset: open admin routes, loopback
    /// only.
    OpenDev,
    /// Everything else.
    Strict,
}

/// Where the control plane is and how to authenticate to it; absent when self-hosted.
#[derive(Debug, Clone)]
pub struct CpLink {
    pub url: String,
    pub org_id: String,
    pub admin_token: Secret,
    pub shared_secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub listen: SocketAddr,
    pub prefer_port: Option<u16>,
    pub pidfile: Option<PathBuf>,
    pub database_url: String,
    pub mode: Mode,
    pub production: bool,
    pub admin_token: Option<Secret>,
    pub org_id: Option<String>,
    pub org_slug: Option<String>,
    pub cp: Option<CpLink>,
    pub encryption_key: Option<EncryptionKey>,
    pub platform_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to start in production mode: {0} is not set")]
    MissingInProduction(&'static str),
    #[error("open dev mode (MOLECULE_ENV=development without ADMIN_TOKEN) serves only on loopback, but the listen address is {0}")]
    DevModeNotLoopback(SocketAddr),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Source(#[from] SecretSourceError),
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl TenantConfig {
    /// `listen` from the flag, else `0.0.0.0:$PORT`, else `127.0.0.1:8080`.
    pub fn from_env(
        listen: Option<SocketAddr>,
        prefer_port: Option<u16>,
        pidfile: Option<PathBuf>,
    ) -> Result<TenantConfig, ConfigError> {
        let env_name = var("MOLECULE_ENV").unwrap_or_default().to_ascii_lowercase();
        let production = matches!(env_name.as_str(), "production" | "prod");
        let dev = matches!(env_name.as_str(), "development" | "dev");
        let admin_token = secret::from_env("ADMIN_TOKEN")?;
        let mode = if dev && admin_token.is_none() {
            Mode::OpenDev
        } else {
            Mode::Strict
        };
        let listen = match (listen, var("PORT")) {
            (Some(addr), _) => addr,
            (None, Some(port)) => {
                let port: u16 = port.parse().map_err(|_| ConfigError::Invalid {
                    name: "PORT",
                    reason: "must be a port number".into(),
                })?;
                let ip = if mode == Mode::OpenDev {
                    [127, 0, 0, 1]
                } else {
                    [0, 0, 0, 0]
                };
                SocketAddr::from((ip, port))
            }
            (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        if mode == Mode::OpenDev && !listen.ip().is_loopback() {
            return Err(ConfigError::DevModeNotLoopback(listen));
        }
        let encryption_key = match secret::from_env("SECRETS_ENCRYPTION_KEY")? {
            Some(v) => Some(EncryptionKey::parse("SECRETS_ENCRYPTION_KEY", &v)?),
            None if production => {
                return Err(ConfigError::MissingInProduction("SECRETS_ENCRYPTION_KEY"))
            }
            None => None,
        };
        if production && admin_token.is_none() {
            return Err(ConfigError::MissingInProduction("ADMIN_TOKEN"));
        }
        let org_id = var("MOLECULE_ORG_ID");
        let cp = match (var("MOLECULE_CP_URL"), &org_id, &admin_token) {
            (Some(url), Some(org_id), Some(token)) => {
                molecule_shared::ssrf::check_syntax(&url).map_err(|e| ConfigError::Invalid {
                    name: "MOLECULE_CP_URL",
                    reason: e.to_string(),
                })?;
                Some(CpLink {
                    url,
                    org_id: org_id.clone(),
                    admin_token: token.clone(),
                    shared_secret: secret::from_env("MOLECULE_CP_SHARED_SECRET")?,
                })
            }
            _ => None,
        };
        Ok(TenantConfig {
            listen,
            prefer_port,
            pidfile,
            database_url: var("DATABASE_URL").unwrap_or_else(|| "sqlite://tenant.db".into()),
            mode,
            production,
            admin_token,
            org_id,
            org_slug: var("MOLECULE_ORG_SLUG"),
            cp,
            encryption_key,
            platform_url: var("PLATFORM_URL"),
        })
    }
}
