//! Org slugs: the immutable, DNS-safe name of an org, the first label of its hostname.

use std::fmt;

/// Names that route to our own services and can never belong to an org.
pub const RESERVED: &[&str] = &[
    "app",
    "www",
    "api",
    "admin",
    "cp",
    "dashboard",
    "billing",
    "status",
    "docs",
    "mail",
    "smtp",
    "ftp",
    "static",
    "assets",
    "cdn",
    "auth",
    "login",
    "signup",
    "support",
    "help",
    "blog",
    "internal",
    "staging",
    "prod",
    "production",
    "dev",
    "test",
    "localhost",
    "molecule",
    "root",
    "system",
    "metrics",
    "health",
    "router",
    "console",
    "www1",
    "ns1",
    "ns2",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct OrgSlug(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlugError {
    #[error("slug must be 3 to 32 characters: a lowercase letter, then lowercase letters, digits or '-'")]
    Syntax,
    #[error("slug must not end with '-' or contain '--'")]
    Hyphens,
    #[error("slug is reserved")]
    Reserved,
}

impl OrgSlug {
    /// Accepts `^[a-z][a-z0-9-]{2,31}$`, without a trailing `-` or `--`, and not reserved.
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        let bytes = input.as_bytes();
        let syntax_ok = (3..=32).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !syntax_ok {
            return Err(SlugError::Syntax);
        }
        if input.ends_with('-') || input.contains("--") {
            return Err(SlugError::Hyphens);
        }
        if RESERVED.contains(&input) {
            return Err(SlugError::Reserved);
        }
        Ok(Self(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        for ok in ["acme", "a-b-c", "abc", "a1234567890123456789012345678901"] {
            assert!(OrgSlug::parse(ok).is_ok(), "{ok}");
        }
        for (bad, err) in [
            ("ab", SlugError::Syntax),
            ("Acme", SlugError::Syntax),
            ("1acme", SlugError::Syntax),
            ("acme_x", SlugError::Syntax),
            ("acme.x", SlugError::Syntax),
            ("a12345678901234567890123456789012", SlugError::Syntax),
            ("acme-", SlugError::Hyphens),
            ("ac--me", SlugError::Hyphens),
            ("www", SlugError::Reserved),
            ("admin", SlugError::Reserved),
            ("", SlugError::Syntax),
            ("acmé", SlugError::Syntax),
        ] {
            assert_eq!(OrgSlug::parse(bad).unwrap_err(), err, "{bad}");
        }
    }
}
