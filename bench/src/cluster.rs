//! `--cluster`: the async queue's throughput end to end (submission to the last execution recorded
//! `succeeded`) on one node with SQLite, one node on PostgreSQL and three nodes on PostgreSQL, and the
//! latency from a deploy on one node until every other node serves it. PostgreSQL is a throwaway server
//! the run starts (`initdb` + `pg_ctl`, as the tests do). Writes `bench/results/cluster.md`.

use crate::servers::Wafer;
use anyhow::{bail, Context};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wafer_store::conformance::postgres::TestPostgres;

/// Async invocations per throughput run.
const INVOCATIONS: usize = 3000;

/// Threads submitting them.
const SUBMITTERS: usize = 16;

/// Deploys timed for the deploy-to-served figure.
const DEPLOYS: usize = 20;

pub fn run(root: &Path, wafer: &Path) -> anyhow::Result<()> {
    let pg =
        TestPostgres::start().context("the cluster benchmark needs PostgreSQL (initdb, pg_ctl)")?;
    let module = std::fs::read(root.join("examples/wagi-c/hello.wasm"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = String::from(
        "# Cluster mode\n\n`bench/run.sh --cluster`. Async throughput: invocations of the WAGI C hello \
         example submitted by 16 threads (round robin over the nodes) until the last is recorded \
         `succeeded`; every node runs 8 queue workers. The 2-core machine runs PostgreSQL, every node \
         and the load.\n\n| setup | invocations | submitted in | all succeeded in | executions/s |\n|---|---|---|---|---|\n",
    );
    let setups: [(&str, usize, bool); 3] = [
        ("SQLite, 1 node", 1, false),
        ("PostgreSQL, 1 node", 1, true),
        ("PostgreSQL, 3 nodes", 3, true),
    ];
    let mut three = Vec::new();
    for (label, count, shared) in setups {
        let url = shared.then(|| runtime.block_on(pg.create_database()));
        let nodes = start_nodes(wafer, count, url.as_deref())?;
        nodes[0].deploy("hello", &module, "{}")?;
        for node in &nodes {
            wait(Duration::from_millis(1), || {
                Ok(node.get_text("/fn/hello")?.0 == 200)
            })?;
        }
        let (submitted, done) = throughput(&nodes)?;
        let rate = INVOCATIONS as f64 / done.as_secs_f64();
        println!(
            "{label}: {INVOCATIONS} submitted in {submitted:?}, succeeded in {done:?}: {rate:.0}/s"
        );
        report.push_str(&format!(
            "| {label} | {INVOCATIONS} | {:.2} s | {:.2} s | {rate:.0} |\n",
            submitted.as_secs_f64(),
            done.as_secs_f64()
        ));
        if count == 3 {
            three = nodes;
        }
    }
    let latencies = deploy_to_served(&three, &module)?;
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    println!("deploy on n1 → served by n2 and n3: median {median:?}, max {max:?}");
    report.push_str(&format!(
        "\nDeploy on one node until both others serve the new version ({DEPLOYS} deploys of the WAGI C \
         hello, 3 nodes): median {:.1} ms, max {:.1} ms (the deploy's own time included).\n",
        median.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    ));
    let out = root.join("bench/results/cluster.md");
    std::fs::write(&out, report)?;
    println!("\nwrote {}", out.display());
    Ok(())
}

fn start_nodes(wafer: &Path, count: usize, database: Option<&str>) -> anyhow::Result<Vec<Wafer>> {
    (1..=count)
        .map(|i| {
            let id = format!("n{i}");
            let mut args = vec!["--workers", "8", "--node-id", &id];
            if let Some(url) = database {
                args.extend(["--database", url]);
            }
            Wafer::start_binary(wafer, &args)
        })
        .collect()
}

/// Submits [`INVOCATIONS`] async invocations and waits until all have succeeded: how long the
/// submissions took, and how long until the last succeeded.
fn throughput(nodes: &[Wafer]) -> anyhow::Result<(Duration, Duration)> {
    let succeeded = || -> anyhow::Result<u64> {
        let stats = nodes[0].get_json("/v1/functions/hello/stats")?;
        Ok(stats["by_status"]["succeeded"].as_u64().unwrap_or(0))
    };
    // The calls that found the function on every node are recorded too.
    let before = succeeded()?;
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..SUBMITTERS)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= INVOCATIONS {
                            return Ok(());
                        }
                        nodes[n % nodes.len()].invoke_async("hello", format!("job {n}"))?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
        }
        Ok(())
    })?;
    let submitted = started.elapsed();
    // A stats query reads every record: poll it rarely enough not to slow the queue down.
    wait(Duration::from_millis(20), || {
        Ok(succeeded()? >= before + INVOCATIONS as u64)
    })?;
    Ok((submitted, started.elapsed()))
}

/// The time from the start of each deploy on the first node until every other node serves it, sorted.
fn deploy_to_served(nodes: &[Wafer], module: &[u8]) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    for i in 0..DEPLOYS {
        let env = format!("{{\"env\": {{\"GREETING\": \"v{i}\"}}}}");
        let started = Instant::now();
        nodes[0].deploy("served", module, &env)?;
        for node in &nodes[1..] {
            wait(Duration::from_millis(1), || {
                let (status, body) = node.get_text("/fn/served")?;
                Ok(status == 200 && body.contains(&format!("v{i}")))
            })?;
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

/// Polls `probe` every `every` for up to five minutes.
fn wait(every: Duration, mut probe: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if probe()? {
            return Ok(());
        }
        std::thread::sleep(every);
    }
    bail!("timed out")
}
