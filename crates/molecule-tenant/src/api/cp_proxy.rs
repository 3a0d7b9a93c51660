//! `/cp/*` → `CP_UPSTREAM_URL`, for the browser's control-plane calls. Only an allowlist of
//! prefixes is forwarded, checked on the *normalised* path (the original checked the raw path,
//! so `/cp/auth/../admin/x` got through); anything else is a 404 with an empty body and
//! nothing leaves.

use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

const BODY_CAP: usize = 1024 * 1024;
const RESPONSE_CAP: usize = 4 * 1024 * 1024;

/// Hop-by-hop headers (RFC 9110 7.6.1), never forwarded.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path, decoded, if it is in normal form (no dot segments, no empty segments, no
/// backslashes, no encoded slashes) and on the allowlist.
pub fn allowed(raw_path: &str) -> bool {
    let Some(path) = percent_decode(raw_path) else {
        return false;
    };
    let lower = raw_path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if segments.iter().any(|s| *s == "." || *s == "..")
        || segments[..segments.len().saturating_sub(1)]
            .iter()
            .any(|s| s.is_empty())
    {
        return false;
    }
    let prefix_with_rest = |p: &str| path.strip_prefix(p).is_some_and(|rest| !rest.is_empty());
    let exact_or_child = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    prefix_with_rest("/cp/auth/")
        || exact_or_child("/cp/orgs")
        || prefix_with_rest("/cp/billing/")
        || exact_or_child("/cp/templates")
        || prefix_with_rest("/cp/legal/")
}

pub async fn forward(State(state): State<AppState>, req: Request) -> Response {
    let Some(upstream) = state.config.cp_upstream_url.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !allowed(req.uri().path()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut url = upstream;
    url.set_path(req.uri().path());
    url.set_query(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    let Ok(body) = axum::body::to_bytes(req.into_body(), BODY_CAP).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let mut out = state
        .http
        .request(method, url)
        .timeout(std::time::Duration::from_secs(30))
        .body(body);
    for (name, value) in headers.iter() {
        if !HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let unavailable = || (StatusCode::BAD_GATEWAY, "control plane unavailable").into_response();
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %molecule_shared::http::without_url(&e), "cp proxy upstream failed");
            return unavailable();
        }
    };
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let Ok(bytes) = molecule_shared::http::read_capped(resp, RESPONSE_CAP).await else {
        return unavailable();
    };
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in resp_headers.iter() {
        if !HOP.contains(&name.as_str()) {
            builder = builder.header(HeaderName::from(name), value);
        }
    }
    builder
        .body(AxumBody::from(bytes))
        .unwrap_or_else(|_| unavailable())
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn allowlist_on_the_normalised_path() {
        for ok in [
            "/cp/auth/me",
            "/cp/orgs",
            "/cp/orgs/acme",
            "/cp/billing/checkout",
            "/cp/templates",
            "/cp/templates/x",
            "/cp/legal/terms",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for bad in [
            "/cp/auth",
            "/cp/authsomething",
            "/cp/orgsabc",
            "/cp/",
            "/cp/admin/orgs",
            "/cp/workspaces/provision",
            "/cp/tenants/config",
            "/cp/auth/../admin/x",
            "/cp/auth/%2e%2e/admin/x",
            "/cp/orgs/..",
            "/cp/auth//x",
            "/cp/auth/%2fadmin",
            "/cp/auth/x\\..\\admin",
            "/cp/legal/%zz",
        ] {
            assert!(!allowed(bad), "{bad}");
        }
    }
}
