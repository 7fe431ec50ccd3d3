//! Invocation and compile metrics, rendered in Prometheus' text format by `/metrics` (`ops.rs`).
//!
//! Recording takes one short mutex per invocation; the label sets are small (functions × kinds ×
//! statuses), so a map of counters and fixed-bucket histograms is all that is needed.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Upper bounds of the duration histograms' buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// A fixed-bucket histogram of durations.
#[derive(Default)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`] (not cumulative; summed when rendered).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

#[derive(Default)]
struct Inner {
    invocations: HashMap<(String, &'static str, u16), u64>,
    durations: HashMap<(String, &'static str), Histogram>,
    compiles: Histogram,
    starts: HashMap<(String, &'static str), u64>,
    retries: HashMap<String, u64>,
    dead: HashMap<String, u64>,
    expired: HashMap<String, u64>,
    full: HashMap<String, u64>,
    callbacks: HashMap<&'static str, u64>,
    destinations: HashMap<&'static str, u64>,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records one finished invocation of `function` (of `kind`) that answered `status`.
    pub fn invocation(&self, function: &str, kind: &'static str, status: u16, took: Duration) {
        let mut inner = self.inner();
        *inner
            .invocations
            .entry((function.to_string(), kind, status))
            .or_default() += 1;
        inner
            .durations
            .entry((function.to_string(), kind))
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Records an instance start: `cold` for the first of a loaded version, warm after.
    pub fn start(&self, function: &str, cold: bool) {
        let start = if cold { "cold" } else { "warm" };
        *self
            .inner()
            .starts
            .entry((function.to_string(), start))
            .or_default() += 1;
    }

    /// Records a failed async attempt that will be retried.
    pub fn retry(&self, function: &str) {
        *self
            .inner()
            .retries
            .entry(function.to_string())
            .or_default() += 1;
    }

    /// Records an async execution that failed its last attempt.
    pub fn dead(&self, function: &str) {
        *self.inner().dead.entry(function.to_string()).or_default() += 1;
    }

    /// Records an async execution that waited past its `max_event_age_ms` and was not run.
    pub fn expired(&self, function: &str) {
        *self
            .inner()
            .expired
            .entry(function.to_string())
            .or_default() += 1;
    }

    /// Records an async submission refused because `function` had `max_queued` waiting.
    pub fn refused_full(&self, function: &str) {
        *self.inner().full.entry(function.to_string()).or_default() += 1;
    }

    /// Records a callback delivery attempt.
    pub fn callback(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        *self.inner().callbacks.entry(result).or_default() += 1;
    }

    /// Records a destination delivery: `delivered`, `failed` (to be tried again or given up), or
    /// `none` (no destination for that end, or the chain was too long).
    pub fn destination(&self, result: &'static str) {
        *self.inner().destinations.entry(result).or_default() += 1;
    }

    /// Records one compilation of a wasm binary.
    pub fn compile(&self, took: Duration) {
        self.inner().compiles.observe(took.as_secs_f64());
    }

    /// Appends the metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let inner = self.inner();
        out.push_str(
            "# HELP wafer_invocations_total Function invocations by the status they answered.\n",
        );
        out.push_str("# TYPE wafer_invocations_total counter\n");
        let mut invocations: Vec<_> = inner.invocations.iter().collect();
        invocations.sort();
        for ((function, kind, status), n) in invocations {
            let _ = writeln!(
                out,
                "wafer_invocations_total{{function=\"{function}\",kind=\"{kind}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP wafer_invocation_duration_seconds Time from a call's arrival to its response head.\n");
        out.push_str("# TYPE wafer_invocation_duration_seconds histogram\n");
        let mut durations: Vec<_> = inner.durations.iter().collect();
        durations.sort_by(|a, b| a.0.cmp(b.0));
        for ((function, kind), histogram) in durations {
            let labels = format!("function=\"{function}\",kind=\"{kind}\"");
            histogram.render(out, "wafer_invocation_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP wafer_compile_seconds Time to compile a wasm binary to optimized machine code, at \
             deploy or after its baseline code.\n",
        );
        out.push_str("# TYPE wafer_compile_seconds histogram\n");
        inner.compiles.render(out, "wafer_compile_seconds", "");
        let counters = |out: &mut String, name: &str, help: &str, rows: Vec<(String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, n) in rows {
                let _ = writeln!(out, "{name}{{{labels}}} {n}");
            }
        };
        let by_function = |map: &HashMap<String, u64>| {
            let mut rows: Vec<_> = map
                .iter()
                .map(|(f, n)| (format!("function=\"{f}\""), *n))
                .collect();
            rows.sort();
            rows
        };
        let mut starts: Vec<_> = inner
            .starts
            .iter()
            .map(|((f, start), n)| (format!("function=\"{f}\",start=\"{start}\""), *n))
            .collect();
        starts.sort();
        counters(
            out,
            "wafer_instance_starts_total",
            "Instances started: cold for the first call of a loaded version, warm after.",
            starts,
        );
        counters(
            out,
            "wafer_retries_total",
            "Failed async or cron attempts queued to run again.",
            by_function(&inner.retries),
        );
        counters(
            out,
            "wafer_dead_executions_total",
            "Async or cron executions that failed every attempt.",
            by_function(&inner.dead),
        );
        counters(
            out,
            "wafer_expired_executions_total",
            "Async executions that waited past their max_event_age_ms and were not run.",
            by_function(&inner.expired),
        );
        counters(
            out,
            "wafer_queue_full_total",
            "Async submissions refused because the function had max_queued executions waiting.",
            by_function(&inner.full),
        );
        let by_result = |map: &HashMap<&'static str, u64>| {
            let mut rows: Vec<_> = map
                .iter()
                .map(|(result, n)| (format!("result=\"{result}\""), *n))
                .collect();
            rows.sort();
            rows
        };
        counters(
            out,
            "wafer_callbacks_total",
            "Callback deliveries tried, by result.",
            by_result(&inner.callbacks),
        );
        counters(
            out,
            "wafer_destinations_total",
            "Destination deliveries tried, by result.",
            by_result(&inner.destinations),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render() {
        let metrics = Metrics::default();
        metrics.invocation("a", "wagi", 200, Duration::from_millis(2));
        metrics.invocation("a", "wagi", 200, Duration::from_millis(20));
        metrics.invocation("a", "wagi", 504, Duration::from_secs(40));
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains(
                "wafer_invocations_total{function=\"a\",kind=\"wagi\",status=\"200\"} 2\n"
            ),
            "{out}"
        );
        assert!(out
            .contains("wafer_invocations_total{function=\"a\",kind=\"wagi\",status=\"504\"} 1\n"));
        assert!(out.contains("wafer_invocation_duration_seconds_bucket{function=\"a\",kind=\"wagi\",le=\"0.0025\"} 1\n"));
        assert!(out.contains("wafer_invocation_duration_seconds_bucket{function=\"a\",kind=\"wagi\",le=\"0.025\"} 2\n"));
        assert!(out.contains(
            "wafer_invocation_duration_seconds_bucket{function=\"a\",kind=\"wagi\",le=\"30\"} 2\n"
        ));
        assert!(out.contains("wafer_invocation_duration_seconds_bucket{function=\"a\",kind=\"wagi\",le=\"+Inf\"} 3\n"));
        assert!(out
            .contains("wafer_invocation_duration_seconds_count{function=\"a\",kind=\"wagi\"} 3\n"));
        assert!(out.contains("wafer_compile_seconds_count 0\n"));
    }
}
