//! Logs and metrics. Logs are structured `tracing` events on stderr; metrics are a small
//! Prometheus registry (counters and latency sums) rendered at `/metrics`. Labels are routes and
//! outcomes, never tenants or anything secret.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Installs the global subscriber. `RUST_LOG` filters; the default is `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    /// name → (sum of seconds, count)
    durations: BTreeMap<(&'static str, Labels), (f64, u64)>,
    help: BTreeMap<&'static str, &'static str>,
}

/// A cheap, cloneable metrics registry.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Inner>>);

impl Metrics {
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.lock().help.insert(name, help);
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (name, own(labels));
        *self.lock().counters.entry(key).or_default() += 1;
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: i64) {
        self.lock().gauges.insert((name, own(labels)), value);
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        let mut inner = self.lock();
        let slot = inner.durations.entry((name, own(labels))).or_default();
        slot.0 += seconds;
        slot.1 += 1;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent (plain map updates).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut last = "";
        let mut header = |out: &mut String, name: &'static str, kind: &str| {
            if name != last {
                if let Some(help) = inner.help.get(name) {
                    out.push_str(&format!("# HELP {name} {help}\n"));
                }
                out.push_str(&format!("# TYPE {name} {kind}\n"));
                last = name;
            }
        };
        for ((name, labels), v) in &inner.counters {
            header(&mut out, name, "counter");
            out.push_str(&format!("{name}{} {v}\n", fmt_labels(labels)));
        }
        for ((name, labels), v) in &inner.gauges {
            header(&mut out, name, "gauge");
            out.push_str(&format!("{name}{} {v}\n", fmt_labels(labels)));
        }
        for ((name, labels), (sum, count)) in &inner.durations {
            header(&mut out, name, "summary");
            let l = fmt_labels(labels);
            out.push_str(&format!("{name}_sum{l} {sum}\n{name}_count{l} {count}\n"));
        }
        out
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn fmt_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Middleware: counts requests and their latency by route template, method and status.
pub async fn track_requests(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("route", route.as_str()),
        ("method", method.as_str()),
        ("status", status.as_str()),
    ];
    metrics.inc("http_requests_total", &labels);
    metrics.observe(
        "http_request_duration_seconds",
        &labels[..2],
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Handler for `GET /metrics`.
pub async fn metrics_handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.describe("x_total", "Things.");
        m.inc("x_total", &[("a", "1")]);
        m.inc("x_total", &[("a", "1")]);
        m.set_gauge("g", &[], 5);
        let text = m.render();
        assert!(
            text.contains("# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("g 5\n"), "{text}");
    }
}
