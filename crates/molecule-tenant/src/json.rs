//! JSON the way the original platform's clients expect it (contract 1.2): compact, integral
//! floats without a fraction (`100`, not `100.0`), `<`, `>` and `&` escaped inside strings,
//! RFC 3339 timestamps with trailing fractional zeros trimmed.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A JSON response in the original's encoding.
pub struct GoJson<T>(pub StatusCode, pub T);

pub fn ok<T: Serialize>(body: T) -> GoJson<T> {
    GoJson(StatusCode::OK, body)
}

impl<T: Serialize> IntoResponse for GoJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_string(&self.1) {
            Ok(text) => (
                self.0,
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                escape_html(&text),
            )
                .into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}

/// Go escapes these inside strings; in JSON they can only occur inside strings, so a global
/// replacement is exact.
fn escape_html(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// An `f64` that serialises like Go's encoder: integral values print as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoFloat(pub f64);

impl Serialize for GoFloat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() && self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// Rewrites integral floats inside a JSON value as integers, recursively.
pub fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
                Value::from(f as i64)
            } else {
                Value::Number(n)
            }
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

/// Stored JSON text as a value (`null` when absent or unreadable), normalised.
pub fn stored(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .map(normalize)
        .unwrap_or(Value::Null)
}

/// RFC 3339 in UTC with the fraction's trailing zeros trimmed, as Go prints `time.Time`.
pub fn go_time(ms: i64) -> String {
    let full = molecule_shared::rfc3339(ms);
    // `...SS.mmmZ` → trim zeros in the fraction, and the dot if nothing is left.
    let (head, frac) = full
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((&full, ""));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{frac}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_go() {
        #[derive(Serialize)]
        struct S {
            x: GoFloat,
            y: GoFloat,
            name: String,
        }
        let resp = serde_json::to_string(&S {
            x: GoFloat(100.0),
            y: GoFloat(0.8),
            name: "<a&b>".into(),
        })
        .unwrap();
        assert_eq!(
            escape_html(&resp),
            r#"{"x":100,"y":0.8,"name":"\u003ca\u0026b\u003e"}"#
        );
        assert_eq!(
            normalize(serde_json::json!({"a": [1.0, 2.5]})),
            serde_json::json!({"a": [1, 2.5]})
        );
        assert_eq!(go_time(1_776_600_000_120), "2026-04-19T12:00:00.12Z");
        assert_eq!(go_time(1_776_600_000_000), "2026-04-19T12:00:00Z");
    }
}
