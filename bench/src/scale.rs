//! Section 5, many functions on one node: 100,000 deployed (10,000 with `--quick`) from a smaller set
//! of distinct modules, with a code cache that holds half of those modules, so calls to random
//! functions load evicted code from disk again.

use crate::report::{mib, Report};
use crate::servers::Wafer;
use crate::{deploy_sharing, ms, small_function, Setup};
use std::time::{Duration, Instant};

/// Calls to random functions after the restart.
const CALLS: usize = 1000;

pub fn run(setup: &Setup, report: &mut Report, quick: bool) -> anyhow::Result<()> {
    let (functions, distinct) = if quick {
        (10_000, 200)
    } else {
        (100_000, 1_000)
    };
    let budget = distinct / 2;
    let modules = (0..distinct)
        .map(small_function)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut wafer = Wafer::start(setup, &["--code-cache-modules", &budget.to_string()])?;
    let setting = format!(
        "{functions} functions from {distinct} distinct WAGI modules, --code-cache-modules {budget}"
    );
    report.scale("setting", setting, "");

    let took = deploy_sharing(&wafer, functions, &modules)?;
    report.scale(
        "deploy, 16 at a time",
        format!("{:.1} s", took.as_secs_f64()),
        &format!("{:.0} deploys/s", functions as f64 / took.as_secs_f64()),
    );
    report.scale("RSS after the deploys", mib(wafer.rss()?), "");

    let started = Instant::now();
    wafer.restart()?;
    let ready = started.elapsed();
    report.scale(
        "process start → ready (every function routable)",
        ms(ready),
        "",
    );
    let loaded = Instant::now();
    wafer.wait_metric(
        "wafer_code_cache_modules",
        budget as u64,
        Duration::from_secs(300),
    )?;
    report.scale(
        "background load until the code cache is full",
        ms(loaded.elapsed()),
        &format!("{budget} modules"),
    );
    report.scale(
        "RSS after the restart, cache full",
        mib(wafer.rss()?),
        &format!("{} memory maps", wafer.maps()?),
    );

    let loads_before = wafer.metric("wafer_artifact_loads_total")?;
    let mut latencies = Vec::with_capacity(CALLS);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for _ in 0..CALLS {
        let i = random.below(functions);
        let started = Instant::now();
        let (status, body) = wafer.get_text(&format!("/fn/f{i}"))?;
        latencies.push(started.elapsed());
        let expected = format!("function {}\n", i % distinct);
        if status != 200 || body != expected {
            anyhow::bail!("/fn/f{i}: {status} {body:?}, expected {expected:?}");
        }
    }
    let loads = wafer.metric("wafer_artifact_loads_total")? - loads_before;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    report.scale(
        "call to a random function, p50",
        ms(at(0.5)),
        &format!("{CALLS} calls one at a time; {loads} of them loaded evicted code from disk"),
    );
    report.scale("call to a random function, p99", ms(at(0.99)), "");
    report.scale(
        "RSS after the calls",
        mib(wafer.rss()?),
        &format!(
            "{} memory maps; {} modules evicted since start",
            wafer.maps()?,
            wafer.metric("wafer_code_cache_evictions_total")?
        ),
    );
    Ok(())
}

/// A small xorshift generator: the same calls in every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
