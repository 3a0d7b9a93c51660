//! Signing an org up: validate, mint its credentials, store them, then let the reconciler
//! launch its tenant. Credentials are persisted before any instance exists that could call
//! back with them.

use molecule_shared::crypto::EncryptionKey;
use molecule_shared::now_ms;
use molecule_shared::secret::Secret;
use molecule_shared::slug::OrgSlug;
use molecule_shared::token::{self, TokenHash, TokenKind};

use crate::store::{
    new_id, InstanceStatus, Org, OrgStatus, StoreError, TenantCredentials, TenantInstance,
};
use crate::ControlPlane;

pub const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];

#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    #[error("invalid slug: {0}")]
    Slug(#[from] molecule_shared::slug::SlugError),
    #[error("name must be 1 to 100 characters without control characters")]
    Name,
    #[error("plan must be one of: free, starter, pro, enterprise")]
    Plan,
    #[error("owner_user_id must be at most 200 characters without control characters")]
    Owner,
    #[error("an org with this slug already exists")]
    Taken,
    #[error(transparent)]
    Store(StoreError),
    #[error("sealing the org's credentials failed: {0}")]
    Seal(crate::keyring::KeyringError),
}

pub struct NewOrg {
    pub slug: String,
    pub name: String,
    pub plan: Option<String>,
    pub owner_user_id: Option<String>,
}

fn plain_text(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

pub async fn create(cp: &ControlPlane, new: NewOrg) -> Result<Org, SignupError> {
    let slug = OrgSlug::parse(&new.slug)?;
    if !plain_text(&new.name, 100) {
        return Err(SignupError::Name);
    }
    let plan = new.plan.unwrap_or_else(|| "free".into());
    if !PLANS.contains(&plan.as_str()) {
        return Err(SignupError::Plan);
    }
    if new
        .owner_user_id
        .as_deref()
        .is_some_and(|o| !plain_text(o, 200))
    {
        return Err(SignupError::Owner);
    }
    let now = now_ms();
    let org = Org {
        id: new_id(),
        slug: slug.to_string(),
        name: new.name.trim().to_owned(),
        plan,
        owner_user_id: new.owner_user_id,
        status: OrgStatus::Provisioning,
        is_canary: false,
        created_at: now,
        updated_at: now,
    };
    let admin_token = token::generate(TokenKind::TenantAdmin);
    let creds = seal_credentials(cp, &org.id, &admin_token, &EncryptionKey::generate())
        .await
        .map_err(SignupError::Seal)?;
    let instance = TenantInstance {
        org_id: org.id.clone(),
        provider: cp.provider.kind().to_owned(),
        instance_id: None,
        address: None,
        security_group_id: None,
        status: InstanceStatus::Pending,
        desired_version: cp.config.tenant_version.clone(),
        observed_version: None,
        config_generation: 1,
        restarts: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    match cp.store.create_org(&org, &creds, &instance).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(SignupError::Taken),
        Err(e) => return Err(SignupError::Store(e)),
    }
    cp.nudge.notify_one();
    Ok(org)
}

async fn seal_credentials(
    cp: &ControlPlane,
    org_id: &str,
    admin_token: &Secret,
    tenant_key: &EncryptionKey,
) -> Result<TenantCredentials, crate::keyring::KeyringError> {
    let key = &cp.keyring;
    Ok(TenantCredentials {
        org_id: org_id.to_owned(),
        admin_token_hash: TokenHash::of(admin_token.expose()).as_str().to_owned(),
        admin_token_sealed: key
            .seal(org_id, "admin_token", admin_token.expose())
            .await?,
        encryption_key_sealed: key
            .seal(org_id, "encryption_key", tenant_key.to_base64().expose())
            .await?,
    })
}

/// The tenant admin token of `org`, decrypted for an operator.
pub async fn admin_token(cp: &ControlPlane, org: &Org) -> anyhow::Result<Secret> {
    let creds = cp
        .store
        .credentials(&org.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("org has no stored credentials"))?;
    Ok(cp
        .keyring
        .open(&org.id, "admin_token", &creds.admin_token_sealed)
        .await?)
}
