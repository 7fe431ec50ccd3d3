//! `--soak`: a mixed workload against one release `wafer serve` for ten minutes (one with `--quick`),
//! sampling the server's resident memory, open file descriptors and SQLite WAL every ten seconds.
//! Writes `bench/results/soak.md`.
//!
//! The workload, all at once:
//! - sync calls: four clients calling the WAGI hello example back to back;
//! - async: one client submitting the hello example to the queue (each must be acknowledged);
//! - deploys: a new version of one function every two seconds, its configuration (a secret
//!   included) changed with each, and the function deleted and deployed anew every tenth time;
//! - a hostile function: one client calling a guest that spins until its 100 ms timeout (504).
//!
//! Every answer must be the one expected; anything else is counted and reported. The figures after the
//! first fifth of the run (warm-up) should be flat: the report gives each one's first and last sample
//! after warm-up and its highest.

use crate::servers::Wafer;
use anyhow::Context;
use reqwest::blocking::Client;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the server is sampled.
const EVERY: Duration = Duration::from_secs(10);

/// What the workload has done, by kind, and what went wrong.
#[derive(Default)]
struct Counts {
    sync: AtomicU64,
    submitted: AtomicU64,
    deploys: AtomicU64,
    hostile: AtomicU64,
    unexpected: AtomicU64,
}

/// One sample of the server.
struct Sample {
    at: Duration,
    rss: u64,
    fds: usize,
    wal: u64,
    sync: u64,
    submitted: u64,
    deploys: u64,
    hostile: u64,
}

pub fn run(root: &Path, wafer_binary: &Path, quick: bool) -> anyhow::Result<()> {
    let minutes = if quick { 1 } else { 10 };
    let wafer = Wafer::start_binary(wafer_binary, &["--workers", "4"])?;
    let read = |path: &str| std::fs::read(root.join(path)).with_context(|| path.to_string());
    let hello = read("examples/wagi-c/hello.wasm")?;
    let sleep = read("bench/guests/sleep/sleep.wasm")?;
    wafer.deploy("hello", &hello, "{}")?;
    let spinner = wat::parse_str(r#"(module (func (export "_start") (loop (br 0))))"#)?;
    wafer.deploy("hostile", &spinner, r#"{"timeout_ms": 100}"#)?;
    wafer.deploy("churn", &hello, "{}")?;

    let (stop, counts) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Counts::default()),
    );
    let mut workers = Vec::new();
    for _ in 0..4 {
        let url = wafer.url("/fn/hello?name=soak");
        let get = move |http: &Client| http.get(&url).send();
        workers.push(caller(
            &stop,
            &counts,
            |c| &c.sync,
            200,
            Duration::ZERO,
            get,
        )?);
    }
    let url = wafer.url("/v1/functions/hello/invoke?async=true");
    let submit = move |http: &Client| http.post(&url).body("x").send();
    let pause = Duration::from_millis(10);
    workers.push(caller(
        &stop,
        &counts,
        |c| &c.submitted,
        202,
        pause,
        submit,
    )?);
    let url = wafer.url("/fn/hostile");
    let spin = move |http: &Client| http.get(&url).send();
    workers.push(caller(
        &stop,
        &counts,
        |c| &c.hostile,
        504,
        Duration::ZERO,
        spin,
    )?);
    {
        let (stop, counts, http) = (stop.clone(), counts.clone(), client()?);
        let base = wafer.url("");
        workers.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if n.is_multiple_of(10) {
                    let deleted = http.delete(format!("{base}/v1/functions/churn")).send();
                    expect(&counts, &counts.deploys, deleted, 204);
                }
                let module = if n.is_multiple_of(2) { &hello } else { &sleep };
                let config = format!(
                    r#"{{"variables": {{"N": "{n}"}}, "secrets": {{"TOKEN": "secret-{n}"}}}}"#
                );
                let form = reqwest::blocking::multipart::Form::new()
                    .part(
                        "module",
                        reqwest::blocking::multipart::Part::bytes(module.clone()),
                    )
                    .text("variables", config);
                let deployed = http
                    .post(format!("{base}/v1/functions/churn/versions"))
                    .multipart(form)
                    .send();
                expect(&counts, &counts.deploys, deployed, 201);
                std::thread::sleep(Duration::from_secs(2));
            }
        }));
    }

    let (started, end) = (Instant::now(), Duration::from_secs(60 * minutes));
    let mut samples = Vec::new();
    while started.elapsed() < end {
        std::thread::sleep(EVERY);
        let sample = Sample {
            at: started.elapsed(),
            rss: wafer.rss()?,
            fds: wafer.open_fds()?,
            wal: std::fs::metadata(wafer.data_dir().join("wafer.db-wal")).map_or(0, |m| m.len()),
            sync: counts.sync.load(Ordering::Relaxed),
            submitted: counts.submitted.load(Ordering::Relaxed),
            deploys: counts.deploys.load(Ordering::Relaxed),
            hostile: counts.hostile.load(Ordering::Relaxed),
        };
        println!(
            "{:>4}s  rss {:>6.1} MiB  fds {:>4}  wal {:>6.1} MiB  sync {:>8}  async {:>7}  deploys {:>4}  hostile {:>5}  unexpected {}",
            sample.at.as_secs(),
            mib(sample.rss),
            sample.fds,
            mib(sample.wal),
            sample.sync,
            sample.submitted,
            sample.deploys,
            sample.hostile,
            counts.unexpected.load(Ordering::Relaxed),
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let report = report(&samples, &counts, minutes);
    let out = root.join("bench/results/soak.md");
    std::fs::write(&out, &report)?;
    println!("\n{report}\nwrote {}", out.display());
    Ok(())
}

/// An HTTP client for one of the workload's threads.
fn client() -> reqwest::Result<Client> {
    Client::builder().timeout(Duration::from_secs(30)).build()
}

/// A client thread sending `request` until `stop`, with `pause` between requests, counting each
/// answer under `kind` when its status is `want`.
fn caller(
    stop: &Arc<AtomicBool>,
    counts: &Arc<Counts>,
    kind: fn(&Counts) -> &AtomicU64,
    want: u16,
    pause: Duration,
    request: impl Fn(&Client) -> reqwest::Result<reqwest::blocking::Response> + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let (stop, counts) = (stop.clone(), counts.clone());
    let http = client()?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            expect(&counts, kind(&counts), request(&http), want);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    }))
}

/// Counts `response` under `kind` when its status is `want`, as unexpected otherwise.
fn expect(
    counts: &Counts,
    kind: &AtomicU64,
    response: reqwest::Result<reqwest::blocking::Response>,
    want: u16,
) {
    match response {
        Ok(r) if r.status().as_u16() == want => {
            kind.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => {
            counts.unexpected.fetch_add(1, Ordering::Relaxed);
            eprintln!("unexpected: {} (wanted {want})", r.status());
        }
        Err(e) => {
            counts.unexpected.fetch_add(1, Ordering::Relaxed);
            eprintln!("unexpected: {e}");
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The report: every sample, then each figure's course after warm-up.
fn report(samples: &[Sample], counts: &Counts, minutes: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Soak: {minutes} minutes of mixed load on one node\n\n\
         Release build, SQLite, 4 queue workers. Four clients call the WAGI hello back to back; one \
         submits it to the queue every 10 ms; one deploys a new version of a function every 2 s (its \
         variables and a secret changed each time; the function deleted and made anew every tenth \
         time); one calls a guest that spins until its 100 ms timeout. Sampled every {} s.\n",
        EVERY.as_secs()
    );
    let _ = writeln!(
        out,
        "| at | RSS (MiB) | open fds | WAL (MiB) | sync calls | async submitted | deploys | hostile calls |\n|---|---|---|---|---|---|---|---|"
    );
    for s in samples {
        let _ = writeln!(
            out,
            "| {} s | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
            s.at.as_secs(),
            mib(s.rss),
            s.fds,
            mib(s.wal),
            s.sync,
            s.submitted,
            s.deploys,
            s.hostile
        );
    }
    let warm = &samples[samples.len() / 5..];
    if let (Some(first), Some(last)) = (warm.first(), warm.last()) {
        let peak = |f: fn(&Sample) -> f64| warm.iter().map(f).fold(0.0, f64::max);
        let _ = writeln!(
            out,
            "\nAfter warm-up (from {} s): RSS {:.1} → {:.1} MiB (highest {:.1}); open fds {} → {} \
             (highest {}); WAL {:.1} → {:.1} MiB (highest {:.1}).",
            first.at.as_secs(),
            mib(first.rss),
            mib(last.rss),
            peak(|s| mib(s.rss)),
            first.fds,
            last.fds,
            peak(|s| s.fds as f64),
            mib(first.wal),
            mib(last.wal),
            peak(|s| mib(s.wal)),
        );
    }
    let _ = writeln!(
        out,
        "\nAnswers other than the expected (200 sync, 202 async, 201/204 deploys, 504 hostile): {}.",
        counts.unexpected.load(Ordering::Relaxed)
    );
    out
}
