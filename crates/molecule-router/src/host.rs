//! Which org a request is for, from its `Host`: exactly one label in front of the base domain,
//! with valid slug syntax. Everything else is not ours. No regex, no guessing: the base domain is
//! compared as a plain suffix and the one label left must parse as an [`OrgSlug`].

use molecule_shared::slug::OrgSlug;

/// What a `Host` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// Exactly the base domain: the router's own endpoints (`/metrics`, `/health`).
    Apex,
    /// `<slug>.<base domain>`.
    Org(OrgSlug),
    /// Anything else: a foreign host, two labels, a bad slug, a reserved name, garbage.
    NotOurs,
}

/// A validated base domain: lowercase DNS labels, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseDomain(String);

impl BaseDomain {
    pub fn parse(input: &str) -> Result<Self, String> {
        let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
            return Err(
                "base domain must be DNS labels of letters, digits and '-' (e.g. example.com)"
                    .into(),
            );
        }
        Ok(Self(domain))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Classifies a `Host` value (or the authority of an absolute-form request target).
pub fn classify(host: &str, base: &BaseDomain) -> Target {
    let Some(name) = strip_port(host) else {
        return Target::NotOurs;
    };
    // One trailing dot is the fully qualified form of the same name.
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > 253 || !name.is_ascii() {
        return Target::NotOurs;
    }
    let name = name.to_ascii_lowercase();
    let base = base.as_str();
    if name == base {
        return Target::Apex;
    }
    let Some(label) = name
        .strip_suffix(base)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Target::NotOurs;
    };
    if label.contains('.') {
        return Target::NotOurs;
    }
    match OrgSlug::parse(label) {
        Ok(slug) => Target::Org(slug),
        Err(_) => Target::NotOurs,
    }
}

/// `name[:port]` → `name`. IPv6 literals (`[::1]:80`) and empty names are never ours.
fn strip_port(host: &str) -> Option<&str> {
    if host.starts_with('[') {
        return None;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(slug: &str) -> Target {
        Target::Org(OrgSlug::parse(slug).unwrap())
    }

    #[test]
    fn one_valid_label_in_front_of_the_base_domain() {
        let base = BaseDomain::parse("localhost").unwrap();
        for (host, want) in [
            ("acme.localhost", org("acme")),
            ("acme.localhost:8080", org("acme")),
            ("ACME.LocalHost:8080", org("acme")),
            ("acme.localhost.", org("acme")),
            ("acme.localhost.:8080", org("acme")),
            ("a-b-c.localhost", org("a-b-c")),
            ("localhost", Target::Apex),
            ("localhost:8080", Target::Apex),
            ("LOCALHOST.", Target::Apex),
        ] {
            assert_eq!(classify(host, &base), want, "{host}");
        }
    }

    #[test]
    fn everything_else_is_not_ours() {
        let base = BaseDomain::parse("example.com").unwrap();
        for host in [
            "",
            ":80",
            "example.com:",
            "example.com:http",
            "a.acme.example.com",
            "acme.example.com.evil.net",
            "acme.evil.net",
            "acme-example.com",
            "acmeexample.com",
            ".example.com",
            "..example.com",
            "ab.example.com",
            "www.example.com",
            "admin.example.com",
            "acme-.example.com",
            "ac--me.example.com",
            "1acme.example.com",
            "ac_me.example.com",
            "acmé.example.com",
            "acme.example.com..",
            "[::1]:80",
            "127.0.0.1",
            "127.0.0.1:8080",
            "acme.example.com:80:80",
            ".*.example.com",
            "acme.example.com/x",
        ] {
            assert_eq!(classify(host, &base), Target::NotOurs, "{host:?}");
        }
        let long = format!("{}.example.com", "a".repeat(40));
        assert_eq!(classify(&long, &base), Target::NotOurs);
    }

    #[test]
    fn base_domains_are_validated() {
        assert_eq!(
            BaseDomain::parse("Example.COM.").unwrap().as_str(),
            "example.com"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "*.example.com",
            "a/b",
            "a b",
        ] {
            assert!(BaseDomain::parse(bad).is_err(), "{bad:?}");
        }
    }
}
