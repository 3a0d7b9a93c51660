//! Tenant configuration, read from the original platform's environment names.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::net::IpAddr;
use std::time::Duration;

use molecule_shared::crypto::{EncryptionKey, KeyError};
use molecule_shared::secret::{self, Secret, SecretSourceError};
use molecule_shared::ssrf::SsrfPolicy;

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
    /// Browser origins allowed by CORS.
    pub cors_origins: Vec<String>,
    /// Requests per minute per client IP (`RATE_LIMIT`); none in open dev mode.
    pub rate_limit: u32,
    /// Peers whose `X-Forwarded-For` is believed (the edge router), for rate limiting.
    pub trusted_proxies: Vec<IpAddr>,
    /// Where `/cp/*` is proxied (allowlisted paths only).
    pub cp_upstream_url: Option<url::Url>,
    /// Fallback Discord application public key (hex) when a channel has none.
    pub discord_public_key: Option<String>,
    /// Which addresses agent URLs may point at.
    pub ssrf: SsrfPolicy,
    /// A workspace still provisioning after this long is failed.
    pub provision_timeout: Duration,
    /// An online workspace without a heartbeat for this long is offline.
    pub liveness_timeout: Duration,
    /// How often the sweeps run.
    pub sweep_interval: Duration,
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

/// A URL this tenant will dial. The HTTP client is built without TLS for now, so `https` is
/// refused here, at start, rather than failing every call later.
fn dialable(name: &'static str, raw: &str) -> Result<url::Url, ConfigError> {
    let url = molecule_shared::ssrf::check_syntax(raw).map_err(|e| ConfigError::Invalid {
        name,
        reason: e.to_string(),
    })?;
    if url.scheme() != "http" {
        return Err(ConfigError::Invalid {
            name,
            reason: "https is not supported by this build yet; terminate TLS in a local proxy and point this at it over http".into(),
        });
    }
    Ok(url)
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
                dialable("MOLECULE_CP_URL", &url)?;
                Some(CpLink {
                    url,
                    org_id: org_id.clone(),
                    admin_token: token.clone(),
                    shared_secret: secret::from_env("MOLECULE_CP_SHARED_SECRET")?,
                })
            }
            _ => None,
        };
        let secs =
            |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
                match var(name) {
                    Some(v) => v.parse::<u64>().map(Duration::from_secs).map_err(|_| {
                        ConfigError::Invalid {
                            name,
                            reason: "must be a whole number of seconds".into(),
                        }
                    }),
                    None => Ok(Duration::from_secs(default)),
                }
            };
        let rate_limit = match var("RATE_LIMIT") {
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Invalid {
                    name: "RATE_LIMIT",
                    reason: "must be a positive number of requests per minute".into(),
                })?,
            None => 600,
        };
        let trusted_proxies = var("TRUSTED_PROXIES")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect::<Result<Vec<IpAddr>, _>>()
            })
            .transpose()
            .map_err(|_| ConfigError::Invalid {
                name: "TRUSTED_PROXIES",
                reason: "must be a comma-separated list of IP addresses".into(),
            })?
            .unwrap_or_default();
        let cp_upstream_url = var("CP_UPSTREAM_URL")
            .map(|v| dialable("CP_UPSTREAM_URL", &v))
            .transpose()?;
        let saas = org_id.is_some();
        let ssrf = match var("MOLECULE_SSRF_ALLOW").as_deref() {
            Some("loopback") => SsrfPolicy::AllowLoopback,
            Some("private") => SsrfPolicy::AllowPrivate,
            Some("public") => SsrfPolicy::PublicOnly,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "MOLECULE_SSRF_ALLOW",
                    reason: "must be public, private or loopback".into(),
                })
            }
            None if mode == Mode::OpenDev => SsrfPolicy::AllowLoopback,
            // SaaS workspaces reach their tenant over the VPC's private addresses.
            None if saas => SsrfPolicy::AllowPrivate,
            None => SsrfPolicy::PublicOnly,
        };
        Ok(TenantConfig {
            cors_origins: var("CORS_ORIGINS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_else(|| {
                    vec![
                        "http://localhost:3000".into(),
                        "http://localhost:3001".into(),
                    ]
                }),
            rate_limit,
            trusted_proxies,
            cp_upstream_url,
            discord_public_key: var("DISCORD_APP_PUBLIC_KEY"),
            ssrf,
            provision_timeout: secs("PROVISION_TIMEOUT_SECONDS", 600)?,
            liveness_timeout: secs("LIVENESS_TIMEOUT_SECONDS", 180)?,
            sweep_interval: secs("SWEEP_INTERVAL_SECONDS", 15)?.max(Duration::from_secs(1)),
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
