//! Per-minute rollups of a function's invocations, and the windows the API serves from them.
//!
//! Every finished attempt, sync or async, counts in its function's rollup for the minute it ended: how
//! many succeeded and failed, and a histogram of durations. Rollups are kept apart from execution
//! records, so the figures stay right when records are pruned (`--retain`) or dropped under load.
//!
//! The histogram has [`DURATION_BUCKETS`] buckets, each √2 wider than the last: bucket 0 holds
//! durations under 0.1 ms, bucket `i` those under 0.1·√2^i ms, and the last everything from about 14
//! minutes up. A percentile read from it is within about 19 % of the true value.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How many duration buckets a rollup has.
pub const DURATION_BUCKETS: usize = 48;

/// The upper bound of bucket 0, in microseconds.
const FIRST_BOUND_US: f64 = 100.0;

/// One minute of one function's finished attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteRollup {
    /// The function.
    pub function: String,
    /// The minute's start, in milliseconds since the Unix epoch (a multiple of 60,000).
    pub minute: i64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (and those retried after failing).
    pub failed: u64,
    /// Attempts by duration bucket ([`duration_bucket`]); [`DURATION_BUCKETS`] long.
    pub durations: Vec<u64>,
}

impl MinuteRollup {
    /// An empty rollup of `function` for the minute holding `at_ms`.
    pub fn new(function: &str, at_ms: i64) -> Self {
        Self {
            function: function.to_string(),
            minute: at_ms - at_ms.rem_euclid(60_000),
            succeeded: 0,
            failed: 0,
            durations: vec![0; DURATION_BUCKETS],
        }
    }

    /// Counts one attempt.
    pub fn record(&mut self, succeeded: bool, duration_us: u64) {
        if succeeded {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        self.durations[duration_bucket(duration_us)] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &MinuteRollup) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        for (mine, theirs) in self.durations.iter_mut().zip(&other.durations) {
            *mine += theirs;
        }
    }
}

/// The bucket a duration falls in.
pub fn duration_bucket(duration_us: u64) -> usize {
    let ratio = duration_us as f64 / FIRST_BOUND_US;
    if ratio < 1.0 {
        return 0;
    }
    let bucket = (ratio.log2() * 2.0).floor() as usize + 1;
    bucket.min(DURATION_BUCKETS - 1)
}

/// The duration that stands for bucket `bucket`, in milliseconds: the geometric middle of its bounds
/// (for the last bucket, its lower bound).
fn bucket_value_ms(bucket: usize) -> f64 {
    let first_ms = FIRST_BOUND_US / 1000.0;
    match bucket {
        0 => first_ms / 2.0,
        b if b == DURATION_BUCKETS - 1 => first_ms * 2f64.powf((b as f64 - 1.0) / 2.0),
        b => first_ms * 2f64.powf((2.0 * b as f64 - 1.0) / 4.0),
    }
}

/// The `q` quantile (0 < q ≤ 1) of the durations in `histogram`, in milliseconds; `None` when it is
/// empty.
pub fn quantile_ms(histogram: &[u64], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(round(bucket_value_ms(bucket)));
        }
    }
    None
}

/// `ms` to three significant decimals, so answers read cleanly.
fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Finished attempts counted over a span: how many, how many failed, and how long they took.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Traffic {
    /// Attempts that ended in the span.
    pub invocations: u64,
    /// Of them, those that succeeded.
    pub succeeded: u64,
    /// Of them, those that failed.
    pub failed: u64,
    /// `failed / invocations`, or 0 without invocations.
    pub error_rate: f64,
    /// The median duration, in milliseconds (within about 19 %).
    pub p50_ms: Option<f64>,
    /// The 99th-percentile duration, in milliseconds (within about 19 %).
    pub p99_ms: Option<f64>,
}

impl Traffic {
    /// The traffic `sum` counts.
    pub fn of(sum: &MinuteRollup) -> Self {
        let invocations = sum.succeeded + sum.failed;
        Self {
            invocations,
            succeeded: sum.succeeded,
            failed: sum.failed,
            error_rate: match invocations {
                0 => 0.0,
                n => sum.failed as f64 / n as f64,
            },
            p50_ms: quantile_ms(&sum.durations, 0.5),
            p99_ms: quantile_ms(&sum.durations, 0.99),
        }
    }
}

/// A function's finished attempts over a window, from its per-minute rollups.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct StatsWindow {
    /// The window's start, in milliseconds since the Unix epoch (the first bucket's start).
    pub since: i64,
    /// Each bucket's length, in seconds (a whole number of minutes).
    pub bucket_seconds: u64,
    /// The whole window.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// The window in buckets, oldest first, every bucket present (empty ones with zero counts).
    pub buckets: Vec<StatsBucket>,
}

/// One bucket of a [`StatsWindow`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct StatsBucket {
    /// Its start, in milliseconds since the Unix epoch.
    pub start: i64,
    /// What ended in it.
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// One function's finished attempts over a window, without buckets: a row of [`TrafficList`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct FunctionTraffic {
    /// The function.
    pub function: String,
    /// What ended in the window.
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Every function's traffic over one window (`GET /v1/stats`): the functions with no attempt in it
/// are left out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TrafficList {
    /// The window's start, in milliseconds since the Unix epoch.
    pub since: i64,
    /// One row per function with attempts, by name.
    pub functions: Vec<FunctionTraffic>,
}

impl TrafficList {
    /// The traffic of every function in `rollups` from `since_ms` on.
    pub fn from_minutes(rollups: &[MinuteRollup], since_ms: i64) -> Self {
        let since = since_ms - since_ms.rem_euclid(60_000);
        let mut totals: std::collections::BTreeMap<&str, MinuteRollup> = Default::default();
        for rollup in rollups.iter().filter(|r| r.minute >= since) {
            totals
                .entry(&rollup.function)
                .or_insert_with(|| MinuteRollup::new(&rollup.function, since))
                .add(rollup);
        }
        let functions = totals
            .into_values()
            .map(|total| FunctionTraffic {
                traffic: Traffic::of(&total),
                function: total.function,
            })
            .collect();
        Self { since, functions }
    }
}

impl StatsWindow {
    /// The window from `since_ms` to `now_ms` in buckets of `bucket_minutes`, from the per-minute
    /// `rollups` (any order; those outside the window are left out).
    pub fn from_minutes(
        rollups: &[MinuteRollup],
        since_ms: i64,
        now_ms: i64,
        bucket_minutes: u64,
    ) -> Self {
        let width = 60_000 * bucket_minutes.max(1) as i64;
        let since = since_ms - since_ms.rem_euclid(60_000);
        let count = ((now_ms - since).max(0) / width + 1) as usize;
        let mut sums: Vec<MinuteRollup> = (0..count)
            .map(|i| MinuteRollup::new("", since + i as i64 * width))
            .collect();
        let mut total = MinuteRollup::new("", since);
        for rollup in rollups {
            if rollup.minute < since {
                continue;
            }
            let index = ((rollup.minute - since) / width) as usize;
            if let Some(sum) = sums.get_mut(index) {
                sum.add(rollup);
                total.add(rollup);
            }
        }
        Self {
            since,
            bucket_seconds: 60 * bucket_minutes.max(1),
            traffic: Traffic::of(&total),
            buckets: sums
                .iter()
                .enumerate()
                .map(|(i, sum)| StatsBucket {
                    start: since + i as i64 * width,
                    traffic: Traffic::of(sum),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_buckets_a_root_two_apart() {
        assert_eq!(duration_bucket(0), 0);
        assert_eq!(duration_bucket(99), 0);
        assert_eq!(duration_bucket(100), 1);
        assert_eq!(duration_bucket(141), 1);
        assert_eq!(duration_bucket(142), 2);
        assert_eq!(duration_bucket(200), 3);
        assert_eq!(duration_bucket(u64::MAX), DURATION_BUCKETS - 1);
        // The last bucket starts past ten minutes.
        assert!(bucket_value_ms(DURATION_BUCKETS - 1) > 600_000.0);
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut rollup = MinuteRollup::new("f", 0);
        for ms in 1..=100u64 {
            rollup.record(ms % 10 != 0, ms * 1000);
        }
        let p50 = quantile_ms(&rollup.durations, 0.5).unwrap();
        let p99 = quantile_ms(&rollup.durations, 0.99).unwrap();
        assert!((50.0 / 1.2..=50.0 * 1.2).contains(&p50), "{p50}");
        assert!((99.0 / 1.2..=99.0 * 1.2).contains(&p99), "{p99}");
        assert_eq!(quantile_ms(&[0; DURATION_BUCKETS], 0.5), None);
        assert_eq!((rollup.succeeded, rollup.failed), (90, 10));
    }

    #[test]
    fn traffic_lists_every_function_with_attempts_once() {
        let mut f1 = MinuteRollup::new("f", 120_000);
        f1.record(true, 1_000);
        let mut f2 = MinuteRollup::new("f", 180_000);
        f2.record(false, 1_000);
        let mut g = MinuteRollup::new("g", 0);
        g.record(true, 1_000);
        let list = TrafficList::from_minutes(&[f2, g, f1], 60_000);
        assert_eq!(list.since, 60_000);
        assert_eq!(list.functions.len(), 1, "g's minute is before the window");
        let f = &list.functions[0];
        assert_eq!(
            (f.function.as_str(), f.traffic.invocations, f.traffic.failed),
            ("f", 2, 1)
        );
        assert_eq!(f.traffic.error_rate, 0.5);
    }

    #[test]
    fn a_window_sums_minutes_into_buckets_and_fills_the_gaps() {
        let minute = |m: i64, ok: u64, bad: u64| {
            let mut r = MinuteRollup::new("f", m * 60_000);
            for _ in 0..ok {
                r.record(true, 1_000);
            }
            for _ in 0..bad {
                r.record(false, 100_000);
            }
            r
        };
        let rollups = [
            minute(0, 9, 0),
            minute(10, 1, 1),
            minute(12, 2, 2),
            minute(3, 5, 5),
        ];
        // 10:00 to 14:30 in buckets of two minutes: 10-11, 12-13, 14.
        let window = StatsWindow::from_minutes(&rollups, 10 * 60_000 + 5, 14 * 60_000 + 30_000, 2);
        assert_eq!(window.since, 600_000);
        assert_eq!(window.bucket_seconds, 120);
        assert_eq!(window.buckets.len(), 3);
        let total = &window.traffic;
        assert_eq!(
            (total.invocations, total.succeeded, total.failed),
            (6, 3, 3)
        );
        assert_eq!(total.error_rate, 0.5);
        assert_eq!(window.buckets[0].traffic.succeeded, 1);
        assert_eq!(window.buckets[1].traffic.failed, 2);
        assert_eq!(window.buckets[2].traffic.invocations, 0);
        assert_eq!(window.buckets[2].traffic.p50_ms, None);
        assert!(total.p99_ms.unwrap() > 80.0);
    }
}
