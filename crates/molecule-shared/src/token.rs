//! Bearer tokens: 32 random bytes, base64url, behind a recognisable prefix so secret scanners
//! find them. Shown once; stored as a SHA-256 hash and looked up by it, so no comparison of
//! secret bytes happens in application code.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// The kinds of token we mint. The prefix is the only part of a token that may ever be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The CP admin API token (`CP_ADMIN_API_TOKEN`).
    CpAdmin,
    /// A tenant's own admin token (`ADMIN_TOKEN`).
    TenantAdmin,
    /// The platform shared secret (`PROVISION_SHARED_SECRET`).
    ProvisionShared,
    /// A workspace's registration token, issued by a tenant.
    Workspace,
    /// An org API token, issued by a tenant (an admin credential for that tenant).
    OrgApi,
    /// A single-use, short-lived token a new tenant instance exchanges for its credentials.
    Bootstrap,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::CpAdmin => "mol_cpa_",
            TokenKind::TenantAdmin => "mol_tat_",
            TokenKind::ProvisionShared => "mol_pss_",
            TokenKind::Workspace => "mol_wst_",
            TokenKind::OrgApi => "mol_org_",
            TokenKind::Bootstrap => "mol_bst_",
        }
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A random (version 4) UUID in its lowercase hyphenated form.
pub fn new_uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Whether `s` is a lowercase hyphenated UUID (the form the tenant API accepts as an id).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Mints a new token of `kind`.
pub fn generate(kind: TokenKind) -> Secret {
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    Secret::new(format!("{}{body}", kind.prefix())).expect("a generated token is never empty")
}

/// The SHA-256 of a token, hex-encoded: what the stores keep and look up by.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(hex::encode(Sha256::digest(token.as_bytes())))
    }

    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash")
    }
}

/// What an audit row may say about a presented credential: its kind prefix, if it has a known
/// one, and never any of its random part.
pub fn audit_prefix(presented: &str) -> &'static str {
    [
        TokenKind::CpAdmin,
        TokenKind::TenantAdmin,
        TokenKind::ProvisionShared,
        TokenKind::Workspace,
        TokenKind::OrgApi,
        TokenKind::Bootstrap,
    ]
    .into_iter()
    .map(TokenKind::prefix)
    .find(|p| presented.starts_with(p))
    .unwrap_or(if presented.is_empty() {
        "none"
    } else {
        "unrecognised"
    })
}

/// Constant-time comparison of a presented credential with a configured one. Both sides are
/// hashed first so that the comparison does not leak the length of the configured secret.
pub fn matches(presented: &str, expected: &Secret) -> bool {
    if presented.trim().is_empty() {
        return false;
    }
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.expose().as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_unique_and_hash_stably() {
        let a = generate(TokenKind::TenantAdmin);
        let b = generate(TokenKind::TenantAdmin);
        assert!(a.expose().starts_with("mol_tat_"));
        assert_ne!(a, b);
        assert_eq!(TokenHash::of(a.expose()), TokenHash::of(a.expose()));
        assert_ne!(TokenHash::of(a.expose()), TokenHash::of(b.expose()));
        assert_eq!(audit_prefix(a.expose()), "mol_tat_");
        assert_eq!(audit_prefix("garbage"), "unrecognised");
    }

    #[test]
    fn uuids_are_v4_and_recognised() {
        let id = new_uuid();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(!is_uuid(&id.to_uppercase()));
        assert!(!is_uuid("not-a-uuid"));
        assert_ne!(new_uuid(), new_uuid());
    }

    #[test]
    fn empty_never_matches() {
        let s = Secret::new("x").unwrap();
        assert!(!matches("", &s));
        assert!(!matches("  ", &s));
        assert!(matches("x", &s));
        assert!(!matches("y", &s));
    }
}
