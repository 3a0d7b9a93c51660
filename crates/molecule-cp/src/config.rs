//! Control-plane configuration, typed and checked once at start. In strict mode
//! (`MOLECULE_ENV=production`) an insecure configuration refuses to start, naming what is
//! missing; outside it, the local encryption key is generated and kept 0600 in the data dir.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use molecule_shared::crypto::{EncryptionKey, KeyError};
use molecule_shared::secret::{self, Secret, SecretSourceError};
use molecule_shared::ssrf::SsrfPolicy;

pub const ENV_ADMIN_TOKEN: &str = "CP_ADMIN_API_TOKEN";
pub const ENV_SHARED_SECRET: &str = "PROVISION_SHARED_SECRET";
pub const ENV_SHARED_SECRET_PREVIOUS: &str = "PROVISION_SHARED_SECRET_PREVIOUS";
pub const ENV_ENCRYPTION_KEY: &str = "SECRETS_ENCRYPTION_KEY";
pub const ENV_KMS_KEY_ARN: &str = "KMS_KEY_ARN";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Local,
    Ec2,
}

#[derive(Debug, Clone)]
pub struct CpConfig {
    pub listen: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub provider: ProviderKind,
    /// `MOLECULE_ENV=production`: refuse insecure configuration.
    pub strict: bool,
    pub admin_token: Option<Secret>,
    pub shared_secret: Option<Secret>,
    pub shared_secret_previous: Option<Secret>,
    /// The static envelope key (format version 1). In KMS mode it only opens rows written
    /// before the switch; without `SECRETS_ENCRYPTION_KEY` in strict KMS mode it is a random key
    /// that opens nothing.
    pub encryption_key: EncryptionKey,
    /// `KMS_KEY_ARN`: new secrets are sealed with KMS data keys (format version 2).
    pub kms_key_arn: Option<String>,
    /// Overrides of the standard AWS configuration chain (tests point these at moto).
    pub aws: crate::aws::AwsSettings,
    /// How long a tenant bootstrap token (EC2 user-data) stays valid.
    pub bootstrap_ttl: Duration,
    /// How long an orphan instance (ours by its tags, named by no org or workspace) is reported
    /// before it is terminated.
    pub orphan_grace: Duration,
    /// What tenants are told to call us at; `None` means the address we bind.
    pub cp_base_url: Option<String>,
    /// Which addresses `platform_url` may point at.
    pub ssrf: SsrfPolicy,
    pub reconcile_interval: Duration,
    /// How long a tenant may take from launch to healthy before it is marked failed.
    pub provision_deadline: Duration,
    /// The tenant version new instances get (the binary's own version in the local provider).
    pub tenant_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("refusing to start in production mode (MOLECULE_ENV=production): {0} is not set")]
    MissingInStrict(&'static str),
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Source(#[from] SecretSourceError),
    #[error("{0}")]
    Other(String),
}

/// Whether `MOLECULE_ENV` asks for production (strict) behaviour.
pub fn strict_from_env() -> bool {
    matches!(
        std::env::var("MOLECULE_ENV")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str(),
        "production" | "prod"
    )
}

fn parse_env<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: "cannot be parsed".into(),
        }),
        _ => Ok(default),
    }
}

impl CpConfig {
    /// Reads the configuration from the environment. `listen` and `data_dir` come from flags.
    pub fn from_env(listen: SocketAddr, data_dir: PathBuf) -> Result<CpConfig, ConfigError> {
        let strict = strict_from_env();
        let admin_token = secret::from_env(ENV_ADMIN_TOKEN)?;
        let shared_secret = secret::from_env(ENV_SHARED_SECRET)?;
        let shared_secret_previous = secret::from_env(ENV_SHARED_SECRET_PREVIOUS)?;
        let kms_key_arn = secret::from_env(ENV_KMS_KEY_ARN)?.map(|v| v.expose().to_owned());
        if let Some(arn) = &kms_key_arn {
            // A key id, alias or ARN: printable ASCII without spaces. Not a secret.
            if arn.len() > 2048 || !arn.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::Invalid {
                    name: ENV_KMS_KEY_ARN,
                    reason: "must be a KMS key id, alias or ARN".into(),
                });
            }
        }
        let encryption_key = match secret::from_env(ENV_ENCRYPTION_KEY)? {
            Some(value) => EncryptionKey::parse(ENV_ENCRYPTION_KEY, &value)?,
            // KMS seals everything new; without a static key, version 1 rows cannot be opened.
            None if strict && kms_key_arn.is_some() => EncryptionKey::generate(),
            None if strict => return Err(ConfigError::MissingInStrict(ENV_ENCRYPTION_KEY)),
            None => local_encryption_key(&data_dir)?,
        };
        if strict && admin_token.is_none() {
            return Err(ConfigError::MissingInStrict(ENV_ADMIN_TOKEN));
        }
        let cp_base_url = std::env::var("CP_BASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty());
        if strict && cp_base_url.is_none() {
            return Err(ConfigError::MissingInStrict("CP_BASE_URL"));
        }
        if let Some(url) = &cp_base_url {
            molecule_shared::ssrf::check_syntax(url).map_err(|e| ConfigError::Invalid {
                name: "CP_BASE_URL",
                reason: e.to_string(),
            })?;
        }
        let database_url = std::env::var("DATABASE_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default_database_url(&data_dir));
        let provider = match std::env::var("MOLECULE_PROVIDER")
            .unwrap_or_default()
            .trim()
        {
            "" | "local" => ProviderKind::Local,
            "ec2" => ProviderKind::Ec2,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "MOLECULE_PROVIDER",
                    reason: "must be local or ec2".into(),
                })
            }
        };
        let ssrf = match std::env::var("MOLECULE_SSRF_ALLOW")
            .unwrap_or_default()
            .trim()
        {
            "" | "public" => SsrfPolicy::PublicOnly,
            "private" => SsrfPolicy::AllowPrivate,
            "loopback" => SsrfPolicy::AllowLoopback,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "MOLECULE_SSRF_ALLOW",
                    reason: "must be public, private or loopback".into(),
                })
            }
        };
        Ok(CpConfig {
            listen,
            database_url,
            data_dir,
            provider,
            strict,
            admin_token,
            shared_secret,
            shared_secret_previous,
            encryption_key,
            kms_key_arn,
            aws: crate::aws::AwsSettings::default(),
            bootstrap_ttl: Duration::from_secs(parse_env("MOLECULE_BOOTSTRAP_TTL_SECS", 900u64)?),
            orphan_grace: Duration::from_secs(parse_env("MOLECULE_ORPHAN_GRACE_SECS", 900u64)?),
            cp_base_url,
            ssrf,
            reconcile_interval: Duration::from_millis(parse_env(
                "MOLECULE_RECONCILE_INTERVAL_MS",
                5000u64,
            )?),
            provision_deadline: Duration::from_secs(parse_env(
                "MOLECULE_PROVISION_DEADLINE_SECS",
                120u64,
            )?),
            tenant_version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
}

pub fn default_database_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("cp.db").display())
}

/// The path of a secret the local mode keeps in the data dir.
pub fn local_secret_path(data_dir: &std::path::Path, name: &str) -> PathBuf {
    data_dir.join("secrets").join(name.to_ascii_lowercase())
}

/// The encryption key local (non-strict) mode keeps in the data dir, generated on first use.
pub fn local_encryption_key(data_dir: &std::path::Path) -> Result<EncryptionKey, ConfigError> {
    let path = local_secret_path(data_dir, ENV_ENCRYPTION_KEY);
    let stored = secret::load_or_generate(ENV_ENCRYPTION_KEY, &path, || {
        EncryptionKey::generate().to_base64()
    })
    .map_err(|e| ConfigError::Other(format!("{e:#}")))?;
    Ok(EncryptionKey::parse(ENV_ENCRYPTION_KEY, &stored)?)
}
