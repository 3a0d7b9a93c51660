//! The SSRF guard: every URL the system will dial, or hand to an instance to dial, passes here.
//! The host is resolved and every address it resolves to is checked, so a DNS name pointing at
//! the metadata service or a private range is caught as well as a literal address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Which non-public destinations a deployment allows. Link-local (and with it the cloud metadata
/// service), multicast, broadcast, unspecified and documentation ranges are never allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsrfPolicy {
    /// Public addresses only: production.
    PublicOnly,
    /// Also private ranges (RFC 1918, unique-local, CGNAT): a VPC deployment where instances
    /// reach each other on private addresses.
    AllowPrivate,
    /// Also loopback: everything on one machine (`molecule up`, tests, dev mode).
    AllowLoopback,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SsrfError {
    #[error("URL is not valid")]
    Invalid,
    #[error("URL scheme must be http or https")]
    Scheme,
    #[error("URL must not contain credentials")]
    Userinfo,
    #[error("URL has no host")]
    NoHost,
    #[error("URL host does not resolve")]
    Unresolvable,
    #[error("URL resolves to a {0} address, which is not allowed here")]
    Forbidden(&'static str),
}

/// What kind of non-public range an address is in, if any.
pub fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [127, ..] => "loopback",
        [10, ..] | [192, 168, ..] => "private",
        [172, b, ..] if (16..=31).contains(&b) => "private",
        [169, 254, ..] => "link-local",
        [0, ..] => "unspecified",
        [255, 255, 255, 255] => "broadcast",
        [a, ..] if (224..240).contains(&a) => "multicast",
        [a, ..] if a >= 240 => "reserved",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [100, b, ..] if (64..=127).contains(&b) => "carrier-grade NAT",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        [192, 0, 0, _] => "reserved",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that must be checked too.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return classify_v4(v4);
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4);
    }
    // The EC2 metadata service's IPv6 address sits inside unique-local space, which private
    // deployments allow; it must never be reachable.
    if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] {
        return Some("cloud metadata");
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xff00 == 0xff00 {
        "multicast"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated) addresses.
        "reserved"
    } else {
        return None;
    })
}

fn allowed(kind: &'static str, policy: SsrfPolicy) -> bool {
    let private = matches!(kind, "private" | "unique-local" | "carrier-grade NAT");
    match policy {
        SsrfPolicy::PublicOnly => false,
        SsrfPolicy::AllowPrivate => private,
        SsrfPolicy::AllowLoopback => private || kind == "loopback",
    }
}

/// Checks a URL's form without resolving it. Returns the parsed URL.
pub fn check_syntax(raw: &str) -> Result<url::Url, SsrfError> {
    let url = url::Url::parse(raw).map_err(|_| SsrfError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SsrfError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(SsrfError::Userinfo);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SsrfError::NoHost);
    }
    Ok(url)
}

/// Checks a URL fully: its form, then every address its host resolves to (with a timeout).
pub async fn check_url(raw: &str, policy: SsrfPolicy) -> Result<url::Url, SsrfError> {
    let url = check_syntax(raw)?;
    let port = url.port_or_known_default().ok_or(SsrfError::Invalid)?;
    let addrs: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(name)) => {
            let lookup = tokio::net::lookup_host((name.to_owned(), port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(found)) => found.map(|sa| sa.ip()).collect(),
                _ => return Err(SsrfError::Unresolvable),
            }
        }
        None => return Err(SsrfError::NoHost),
    };
    if addrs.is_empty() {
        return Err(SsrfError::Unresolvable);
    }
    for ip in addrs {
        if let Some(kind) = classify(ip) {
            if !allowed(kind, policy) {
                return Err(SsrfError::Forbidden(kind));
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_what_it_must() {
        use SsrfPolicy::*;
        for (url, policy) in [
            ("http://169.254.169.254/latest/meta-data", AllowLoopback),
            ("http://[fd00:ec2::254]/", PublicOnly),
            ("http://[fd00:ec2::254]/", AllowLoopback),
            ("http://[fd00:ec2::254]/", AllowPrivate),
            ("http://127.0.0.1:8080/", PublicOnly),
            ("http://localhost/", PublicOnly),
            ("http://10.0.0.5/", PublicOnly),
            ("http://[::ffff:127.0.0.1]/", PublicOnly),
            ("http://[64:ff9b::a9fe:a9fe]/", AllowLoopback),
            ("http://0.0.0.0/", AllowLoopback),
            ("http://100.64.1.1/", PublicOnly),
            ("http://192.0.2.10/", AllowPrivate),
            ("http://224.0.0.1/", AllowLoopback),
            ("http://user:pw@8.8.8.8/", PublicOnly),
            ("file:///etc/passwd", AllowLoopback),
            ("gopher://8.8.8.8/", PublicOnly),
            ("not a url", AllowLoopback),
        ] {
            assert!(
                check_url(url, policy).await.is_err(),
                "{url} under {policy:?}"
            );
        }
    }

    #[tokio::test]
    async fn allows_what_the_policy_allows() {
        use SsrfPolicy::*;
        assert!(check_url("http://8.8.8.8:8000/", PublicOnly).await.is_ok());
        assert!(check_url("https://[2606:4700::1111]/", PublicOnly)
            .await
            .is_ok());
        assert!(check_url("http://10.1.2.3:8080/", AllowPrivate)
            .await
            .is_ok());
        assert!(check_url("http://127.0.0.1:8080/", AllowLoopback)
            .await
            .is_ok());
        assert!(check_url("http://127.0.0.1:8080/", AllowPrivate)
            .await
            .is_err());
    }
}
