//! `--cluster`: the async queue's throughput end to end (the first submission to the last execution
//! recorded `succeeded`) on one node with SQLite and on one, two and three nodes on PostgreSQL, with
//! the submissions' latency (the 202), and the latency from a deploy on one node until every other node
//! serves it. PostgreSQL is a throwaway server the run starts (`initdb` + `pg_ctl`, as the tests do).
//! Writes `bench/results/cluster.md`.

use crate::load::{Run, Wrk};
use crate::servers::Wafer;
use anyhow::{bail, Context};
use std::path::Path;
use std::time::{Duration, Instant};
use wafer_store::conformance::postgres::TestPostgres;

/// How long wrk submits async invocations, per setup.
const SUBMIT_SECONDS: u32 = 5;

/// Connections submitting, split over the nodes.
const CONNECTIONS: u32 = 16;

/// Queue workers per node: a node claims work for its free workers in each commit, so with attempts
/// this short (a fraction of a millisecond) more workers than the default 8 keep the queue moving.
const WORKERS: &str = "32";

/// Deploys timed for the deploy-to-served figure.
const DEPLOYS: usize = 20;

pub fn run(root: &Path, wafer: &Path) -> anyhow::Result<()> {
    let pg =
        TestPostgres::start().context("the cluster benchmark needs PostgreSQL (initdb, pg_ctl)")?;
    let wrk = Wrk::find_or_install()?;
    let module = std::fs::read(root.join("examples/wagi-c/hello.wasm"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = format!(
        "# Cluster mode\n\n`bench/run.sh --cluster`. Async throughput: wrk POSTs async invocations of \
         the WAGI C hello example for {SUBMIT_SECONDS} s over {CONNECTIONS} connections (split over the \
         nodes, one wrk per node); the rate is every invocation submitted over the time from the first \
         submission until the last is recorded `succeeded`. Every node runs {WORKERS} queue workers \
         (`--workers`). The 2-core machine runs PostgreSQL, every node and the load.\n\n| setup | submitted | submitted/s | 202 p50 | \
         202 p99 | all succeeded in | executions/s |\n|---|---|---|---|---|---|---|\n"
    );
    let setups: [(&str, usize, bool); 4] = [
        ("SQLite, 1 node", 1, false),
        ("PostgreSQL, 1 node", 1, true),
        ("PostgreSQL, 2 nodes", 2, true),
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
        let load = throughput(&wrk, &nodes)?;
        let rate = load.submitted as f64 / load.done.as_secs_f64();
        println!(
            "{label}: {} submitted ({:.0}/s, 202 p99 {:.2} ms), all succeeded in {:?}: {rate:.0}/s",
            load.submitted, load.submit_rate, load.p99_ms, load.done
        );
        report.push_str(&format!(
            "| {label} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} s | {rate:.0} |\n",
            load.submitted,
            load.submit_rate,
            load.p50_ms,
            load.p99_ms,
            load.done.as_secs_f64()
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
            // Nodes of one cluster seal secrets with one key.
            let key = "5a".repeat(32);
            // Every record is kept, so the run can count them.
            let mut args = vec![
                "--workers",
                WORKERS,
                "--node-id",
                &id,
                "--retain",
                "1000000",
            ];
            if let Some(url) = database {
                args.extend(["--database", url, "--secrets-key", &key]);
            }
            Wafer::start_binary(wafer, &args)
        })
        .collect()
}

/// One async throughput run's figures.
struct Load {
    /// Invocations acknowledged with 202.
    submitted: u64,
    /// Of them per second, while wrk ran.
    submit_rate: f64,
    /// The worst node's median and 99th percentile 202 latency.
    p50_ms: f64,
    p99_ms: f64,
    /// From the start until the last succeeded.
    done: Duration,
}

/// Submits async invocations to every node at once for [`SUBMIT_SECONDS`] and waits until all have
/// succeeded.
fn throughput(wrk: &Wrk, nodes: &[Wafer]) -> anyhow::Result<Load> {
    let succeeded = || -> anyhow::Result<u64> {
        let stats = nodes[0].get_json("/v1/functions/hello/stats")?;
        Ok(stats["by_status"]["succeeded"].as_u64().unwrap_or(0))
    };
    // The calls that found the function on every node are recorded too.
    let before = succeeded()?;
    let connections = (CONNECTIONS / nodes.len() as u32).max(1);
    let started = Instant::now();
    let runs = std::thread::scope(|scope| {
        let runs: Vec<_> = nodes
            .iter()
            .map(|node| {
                let url = node.url("/v1/functions/hello/invoke?async=true");
                scope.spawn(move || wrk.post(&url, connections, SUBMIT_SECONDS, "job"))
            })
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join()
                    .map_err(|_| anyhow::anyhow!("wrk's thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<Run>>>()
    })?;
    if let Some(failed) = runs.iter().find(|run| run.errors > 0) {
        bail!("{} submissions failed", failed.errors);
    }
    let submitted: u64 = runs.iter().map(|run| run.requests).sum();
    // A stats query counts every record: poll it rarely enough not to slow the queue down.
    wait(Duration::from_millis(20), || {
        Ok(succeeded()? >= before + submitted)
    })?;
    let worst = |figure: fn(&Run) -> f64| runs.iter().map(figure).fold(0.0, f64::max);
    Ok(Load {
        submitted,
        submit_rate: runs.iter().map(|run| run.rps).sum(),
        p50_ms: worst(|run| run.p50_ms),
        p99_ms: worst(|run| run.p99_ms),
        done: started.elapsed(),
    })
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
