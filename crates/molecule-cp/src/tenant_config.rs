//! What a tenant is configured with: the values it pulls from `/cp/tenants/config` (and so
//! gets again, without SSH or re-provisioning, whenever they change) and, on top, the boot
//! credentials it is launched with.

use std::collections::BTreeMap;

use molecule_shared::crypto::EncryptionKey;
use sha2::{Digest, Sha256};

use crate::provider::BootEnv;
use crate::store::Org;
use crate::ControlPlane;

/// The flat string map served at `/cp/tenants/config`.
pub fn config_map(cp: &ControlPlane, org: &Org) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    map.insert("MOLECULE_CP_URL".into(), cp.base_url.clone());
    map.insert("MOLECULE_ORG_ID".into(), org.id.clone());
    map.insert("MOLECULE_ORG_SLUG".into(), org.slug.clone());
    if let Some(secret) = &cp.config.shared_secret {
        map.insert(
            "MOLECULE_CP_SHARED_SECRET".into(),
            secret.expose().to_owned(),
        );
    }
    map
}

/// A strong ETag over the map's canonical JSON (a `BTreeMap` serialises in key order).
pub fn etag(map: &BTreeMap<String, String>) -> String {
    let json = serde_json::to_vec(map).expect("a string map always serialises");
    format!("\"{}\"", &hex::encode(Sha256::digest(json))[..32])
}

#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    #[error("the org has no stored credentials")]
    NoCredentials,
    #[error("stored credentials do not decrypt: {0}")]
    Sealed(#[from] crate::keyring::KeyringError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What a tenant boots with when its boot env is readable by others on the instance (EC2
/// user-data): only non-secret values and a fresh single-use bootstrap token, which the tenant
/// exchanges at `POST /cp/tenants/bootstrap` for [`boot_env`]. The token is stored hashed, with
/// an expiry of `bootstrap_ttl`.
pub async fn bootstrap_env(cp: &ControlPlane, org: &Org) -> Result<BootEnv, BootEnvError> {
    let token = molecule_shared::token::generate(molecule_shared::token::TokenKind::Bootstrap);
    let hash = molecule_shared::token::TokenHash::of(token.expose());
    let expires_at = molecule_shared::now_ms() + cp.config.bootstrap_ttl.as_millis() as i64;
    cp.store
        .insert_bootstrap_token(&org.id, hash.as_str(), expires_at)
        .await?;
    let mut env = BootEnv::default();
    env.set("MOLECULE_CP_URL", cp.base_url.clone());
    env.set("MOLECULE_ORG_ID", org.id.clone());
    env.set("MOLECULE_ORG_SLUG", org.slug.clone());
    env.set_secret("MOLECULE_BOOTSTRAP_TOKEN", &token);
    env.set("MOLECULE_ENV", "production");
    Ok(env)
}

/// The full environment a tenant boots with: its config plus its own credentials.
pub async fn boot_env(cp: &ControlPlane, org: &Org) -> Result<BootEnv, BootEnvError> {
    let creds = cp
        .store
        .credentials(&org.id)
        .await?
        .ok_or(BootEnvError::NoCredentials)?;
    let key = &cp.keyring;
    let admin_token = key
        .open(&org.id, "admin_token", &creds.admin_token_sealed)
        .await?;
    let tenant_key = key
        .open(&org.id, "encryption_key", &creds.encryption_key_sealed)
        .await?;
    // The tenant key is stored base64; parse it to be sure it is a key before handing it over.
    let tenant_key = EncryptionKey::parse("SECRETS_ENCRYPTION_KEY", &tenant_key)
        .map_err(|_| BootEnvError::Sealed(molecule_shared::crypto::SealError::Open.into()))?;
    let mut env = BootEnv::from(config_map(cp, org));
    env.set_secret("ADMIN_TOKEN", &admin_token);
    env.set_secret("SECRETS_ENCRYPTION_KEY", &tenant_key.to_base64());
    env.set("MOLECULE_ENV", "production");
    // Where this deployment lets addresses point (agents on loopback under `molecule up`).
    match cp.config.ssrf {
        molecule_shared::ssrf::SsrfPolicy::PublicOnly => {}
        molecule_shared::ssrf::SsrfPolicy::AllowPrivate => {
            env.set("MOLECULE_SSRF_ALLOW", "private")
        }
        molecule_shared::ssrf::SsrfPolicy::AllowLoopback => {
            env.set("MOLECULE_SSRF_ALLOW", "loopback")
        }
    }
    Ok(env)
}
