//! HTTP plumbing shared by every server and client: the one error type that maps to
//! `{"error": "..."}` responses, a JSON extractor whose errors never echo input values, and
//! capped reads of upstream bodies.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

/// Every error an API handler can return. The message is sent to the client, so it must never
/// contain a secret; `Internal` is logged with its cause chain and answered with a generic text.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(err.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = format!("{err:#}"), "request failed");
        }
        let status = self.status();
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The bearer credential of a request, or "" when there is none.
pub fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        })
        .unwrap_or("")
}

/// Fallback for unknown paths: a JSON 404 rather than an empty body.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Fallback for known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A JSON body. Unlike `axum::Json`, its errors are `{"error": ...}` with the right status, and
/// never quote a value from the body (a wrongly typed field could be a secret).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let mime = v.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType(
                "expected a body with content-type application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(
                        "request body is larger than this route accepts".into(),
                    )
                } else {
                    ApiError::BadRequest("request body could not be read".into())
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A query string. Its errors are `{"error": ...}` 400s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|_| ApiError::BadRequest("invalid query string".into()))
    }
}

/// Parses JSON with an error that names the problem and its position but no input value.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        let text = redact_quoted(&e.to_string());
        match e.classify() {
            serde_json::error::Category::Data => {
                ApiError::Unprocessable(format!("invalid request body: {text}"))
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {text}")),
        }
    })
}

/// Replaces every double-quoted segment of a serde message (where serde puts string values) with
/// a marker. Field names are in backticks and stay.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for c in message.chars() {
        if c == '"' {
            if !inside {
                out.push_str("<value>");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("response body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the response body failed: {0}")]
    Transport(String),
}

/// Reads an upstream response body, refusing more than `cap` bytes.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n as usize > cap) {
        return Err(ReadError::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ReadError::Transport(without_url(&e)))?
    {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error's text without the URL it carries (URLs can hold query tokens).
pub fn without_url(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_decode() {
        "response could not be decoded"
    } else if err.is_body() {
        "body error"
    } else if err.is_request() {
        "request error"
    } else {
        "transport error"
    };
    kind.to_owned()
}

/// The structured `error` field of an upstream error body, or a description of the body's size.
/// Never the raw body: upstreams may echo what they were sent.
pub fn upstream_error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => b.error,
        Err(_) => format!("<unstructured body, {} bytes>", body.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        n: u32,
        name: String,
    }

    #[test]
    fn json_errors_never_quote_values() {
        let err = parse_json::<Body>(br#"{"n":"super-secret-value","name":"x"}"#).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(!text.contains("super-secret"), "{text}");
        let err = parse_json::<Body>(br#"{"n":1}"#).unwrap_err();
        assert!(err.to_string().contains("`name`"), "{err}");
        let err = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn upstream_errors_are_structured_or_summarised() {
        assert_eq!(upstream_error_text(br#"{"error":"nope"}"#), "nope");
        assert_eq!(
            upstream_error_text(b"Bearer abc echoed"),
            "<unstructured body, 17 bytes>"
        );
    }
}
