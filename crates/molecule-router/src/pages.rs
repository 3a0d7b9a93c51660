//! The router's own answers: tiny, fixed HTML pages. Nothing from the request is echoed into
//! them (the `Host` header is attacker-controlled), and none is cached by browsers or proxies.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

fn page(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n"
    );
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn with_retry_after(mut resp: Response<Body>, secs: &'static str) -> Response<Body> {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    resp
}

/// 404: not an org host, or no such org.
pub fn not_found() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no organization at this address.",
    )
}

/// 503 while the org's tenant is being started.
pub fn starting() -> Response<Body> {
    with_retry_after(
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Starting up",
            "This organization is starting. This page will work in a few seconds.",
        ),
        "2",
    )
}

/// 503: the org exists but does not serve (failed, suspended), or the router cannot learn
/// where it lives.
pub fn unavailable() -> Response<Body> {
    with_retry_after(
        page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "This organization is not available right now.",
        ),
        "30",
    )
}

/// 502: the tenant did not answer.
pub fn bad_gateway() -> Response<Body> {
    page(
        StatusCode::BAD_GATEWAY,
        "Bad gateway",
        "This organization's server did not answer.",
    )
}

/// 504: the tenant did not answer in time.
pub fn gateway_timeout() -> Response<Body> {
    page(
        StatusCode::GATEWAY_TIMEOUT,
        "Gateway timeout",
        "This organization's server did not answer in time.",
    )
}

/// 413: request body over the router's cap.
pub fn too_large() -> Response<Body> {
    page(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request too large",
        "The request body is larger than this service accepts.",
    )
}
