//! Router metrics: plain atomics on the request path (no lock per request), rendered as
//! Prometheus text at `http://<base-domain>/metrics`. Labels are outcomes, never slugs.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How a request to `<slug>.<base-domain>` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Proxied to the tenant on a fresh lookup.
    Routed,
    /// Proxied on the last known route because the CP was down, slow or being asked.
    Stale,
    /// 404: the host is not `<slug>.<base-domain>`, or the CP does not know the slug.
    Unknown,
    /// 503 "starting up": the org exists, its tenant does not serve yet.
    Provisioning,
    /// 503: the org is failed or suspended, or the CP is unreachable and the slug never seen.
    Unavailable,
    /// 502/504/413: the tenant refused, timed out or the request body was over the cap.
    BackendError,
}

const OUTCOMES: [(Outcome, &str); 6] = [
    (Outcome::Routed, "routed"),
    (Outcome::Stale, "stale"),
    (Outcome::Unknown, "unknown"),
    (Outcome::Provisioning, "provisioning"),
    (Outcome::Unavailable, "unavailable"),
    (Outcome::BackendError, "backend_error"),
];

/// Upper bounds (seconds) of the lookup latency histogram.
const BUCKETS: [f64; 8] = [0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0];

#[derive(Default)]
pub struct RouterMetrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// found, not_found, error
    lookups: [AtomicU64; 3],
    lookup_buckets: [AtomicU64; BUCKETS.len()],
    lookup_micros_sum: AtomicU64,
    lookup_count: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub enum LookupResult {
    Found = 0,
    NotFound = 1,
    Error = 2,
}

impl RouterMetrics {
    pub fn outcome(&self, outcome: Outcome) {
        self.outcomes[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn cache(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Relaxed);
        }
    }

    pub fn lookup(&self, result: LookupResult, took: Duration) {
        self.lookups[result as usize].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.lookup_buckets[i].fetch_add(1, Relaxed);
        }
        self.lookup_micros_sum
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.lookup_count.fetch_add(1, Relaxed);
    }

    pub fn count(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize].load(Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP router_requests_total Requests to org hosts by outcome.\n");
        out.push_str("# TYPE router_requests_total counter\n");
        for (o, name) in OUTCOMES {
            let _ = writeln!(
                out,
                "router_requests_total{{outcome=\"{name}\"}} {}",
                self.count(o)
            );
        }
        let hits = self.cache_hits.load(Relaxed);
        let misses = self.cache_misses.load(Relaxed);
        out.push_str("# TYPE router_cache_requests_total counter\n");
        let _ = writeln!(out, "router_cache_requests_total{{result=\"hit\"}} {hits}");
        let _ = writeln!(
            out,
            "router_cache_requests_total{{result=\"miss\"}} {misses}"
        );
        out.push_str("# HELP router_cache_hit_ratio Cache hits over lookups asked of the cache.\n");
        out.push_str("# TYPE router_cache_hit_ratio gauge\n");
        let ratio = if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        };
        let _ = writeln!(out, "router_cache_hit_ratio {ratio:.4}");
        out.push_str("# HELP router_cp_lookups_total Lookups sent to the control plane.\n");
        out.push_str("# TYPE router_cp_lookups_total counter\n");
        for (i, name) in ["found", "not_found", "error"].iter().enumerate() {
            let _ = writeln!(
                out,
                "router_cp_lookups_total{{result=\"{name}\"}} {}",
                self.lookups[i].load(Relaxed)
            );
        }
        out.push_str("# TYPE router_cp_lookup_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.lookup_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "router_cp_lookup_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.lookup_count.load(Relaxed);
        let sum = self.lookup_micros_sum.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "router_cp_lookup_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "router_cp_lookup_duration_seconds_sum {sum}");
        let _ = writeln!(out, "router_cp_lookup_duration_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_outcomes_ratio_and_histogram() {
        let m = RouterMetrics::default();
        m.outcome(Outcome::Routed);
        m.outcome(Outcome::Stale);
        m.outcome(Outcome::Stale);
        m.cache(true);
        m.cache(true);
        m.cache(true);
        m.cache(false);
        m.lookup(LookupResult::Found, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("router_requests_total{outcome=\"stale\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("router_cache_hit_ratio 0.7500\n"), "{text}");
        assert!(
            text.contains("router_cp_lookups_total{result=\"found\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("router_cp_lookup_duration_seconds_bucket{le=\"0.0025\"} 0\n")
                && text.contains("router_cp_lookup_duration_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
    }
}
