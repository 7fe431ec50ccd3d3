//! wafer's benchmark: one run that measures wafer against `wasmtime serve` and a native hyper server on
//! this machine, and writes `bench/results/latest.md`.
//!
//! `cargo run -p bench --release` (or `bench/run.sh`); `--quick` for shorter load runs; `--cluster` for
//! cluster mode's figures alone (`cluster.rs`); `--scale` for the many-functions figures alone
//! (`scale.rs`), printed rather than written; `--soak` for ten minutes of mixed load with the server's
//! memory, descriptors and WAL sampled (`soak.rs`). See bench/README.md for what each figure means.

mod cluster;
mod load;
mod report;
mod scale;
mod servers;
mod soak;

use anyhow::{bail, Context};
use load::Wrk;
use report::Report;
use servers::{Peer, Wafer};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the run measures with, and how long.
pub struct Setup {
    /// The workspace root.
    pub root: PathBuf,
    /// The cargo target directory the run builds into.
    pub target: PathBuf,
    /// The release `wafer` binary.
    pub wafer: PathBuf,
    /// The native ceiling.
    pub hyper: PathBuf,
    /// `wasmtime` 48, for `wasmtime serve`.
    pub wasmtime: PathBuf,
    /// The load generator.
    pub wrk: Wrk,
    /// Length of one load run.
    pub seconds: u32,
    /// Client connections, one load run each.
    pub concurrency: Vec<u32>,
    /// Runs of each server at each level, alternating between servers.
    pub rounds: u32,
}

/// The hello-world wasi:http components measured under every server, and whether they can serve more
/// than one request per instance. componentize-js 0.23 (StarlingMonkey) cannot: an instance's second
/// request returns without a response, so the JavaScript component runs without `reuse` only.
const COMPONENTS: &[(&str, &str, bool)] = &[
    ("C (minimal)", "bench/guests/hello-c/hello.wasm", true),
    (
        "C (streamed writes)",
        "bench/guests/stream-c/stream.wasm",
        true,
    ),
    ("Python", "examples/http-python/hello.wasm", true),
    ("JavaScript", "examples/http-js/hello.wasm", false),
];

/// Requests one instance may serve in the `reuse` runs.
const REUSE: u32 = 1000;

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let root = workspace_root()?;
    let target = target_dir()?;
    if std::env::args().any(|a| a == "--cluster") {
        return cluster::run(&root, &build_wafer(&root, &target)?);
    }
    if std::env::args().any(|a| a == "--soak") {
        return soak::run(&root, &build_wafer(&root, &target)?, quick);
    }
    let setup = Setup {
        wafer: build_wafer(&root, &target)?,
        hyper: target.join("release/hyper-hello"),
        wasmtime: servers::wasmtime_binary()?,
        wrk: Wrk::find_or_install()?,
        seconds: if quick { 2 } else { 5 },
        concurrency: if quick { vec![16] } else { vec![1, 16, 64] },
        rounds: if quick { 1 } else { 2 },
        root,
        target,
    };
    let mut report = Report::new(&setup);
    if std::env::args().any(|a| a == "--scale") {
        scale::run(&setup, &mut report, quick)?;
        println!("\n{}", report.markdown());
        return Ok(());
    }
    throughput(&setup, &mut report)?;
    wagi(&setup, &mut report)?;
    cold_paths(&setup, &mut report)?;
    density(&setup, &mut report, quick)?;
    scale::run(&setup, &mut report, quick)?;
    instantiate(&setup, &mut report, quick)?;
    let out = setup.root.join("bench/results/latest.md");
    std::fs::create_dir_all(out.parent().context("results dir")?)?;
    std::fs::write(&out, report.markdown())?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// 1. Requests per second and latency of the same components under wafer, wafer with `reuse`,
///    `wasmtime serve`, and the native ceiling, runs alternating.
fn throughput(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let hyper = Peer::hyper(setup)?;
    for &(label, path, reusable) in COMPONENTS {
        let wasm = setup.root.join(path);
        let wafer = Wafer::start(setup, &[])?;
        wafer.deploy("hello", &std::fs::read(&wasm)?, "{}")?;
        let peer = Peer::wasmtime_serve(setup, &wasm)?;
        let mut targets = vec![("wafer", wafer.url("/fn/hello"))];
        if reusable {
            let config = format!("{{\"reuse\":{REUSE}}}");
            wafer.deploy("hello-reuse", &std::fs::read(&wasm)?, &config)?;
            targets.push(("wafer reuse", wafer.url("/fn/hello-reuse")));
        }
        targets.push(("wasmtime serve", peer.url("/")));
        targets.push(("native hyper", hyper.url("/")));
        for &c in &setup.concurrency {
            for url in targets.iter().map(|(_, url)| url) {
                setup.wrk.warm_up(url)?;
            }
            for round in 0..setup.rounds {
                for (server, url) in &targets {
                    let run = setup.wrk.run(url, c, setup.seconds)?;
                    println!("{label:12} {server:15} c={c:<3} round {round}: {run}");
                    report.throughput(label, server, c, run);
                }
            }
        }
    }
    Ok(())
}

/// 2. The WAGI hello example under wafer.
fn wagi(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let wafer = Wafer::start(setup, &[])?;
    wafer.deploy(
        "hello",
        &std::fs::read(setup.root.join("examples/wagi-c/hello.wasm"))?,
        "{}",
    )?;
    let url = wafer.url("/fn/hello");
    setup.wrk.warm_up(&url)?;
    for &c in &setup.concurrency {
        for _ in 0..setup.rounds {
            let run = setup.wrk.run(&url, c, setup.seconds)?;
            println!("WAGI C hello c={c:<3}: {run}");
            report.throughput("WAGI C hello", "wafer", c, run);
        }
    }
    Ok(())
}

/// 3. Deploy → first response with the compile cache cold and warm, first call after a restart, and
///    start-up with 1,000 functions.
fn cold_paths(setup: &Setup, report: &mut Report) -> anyhow::Result<()> {
    let examples = [
        ("C (WAGI)", "examples/wagi-c/hello.wasm"),
        ("Python", "examples/http-python/hello.wasm"),
    ];
    let mut wafer = Wafer::start(setup, &[])?;
    for (label, path) in examples {
        let module = std::fs::read(setup.root.join(path))?;
        let baselines = wafer.metric("wafer_baseline_compilations_total")?;
        let started = Instant::now();
        wafer.deploy(&name_of(label), &module, "{}")?;
        let deployed = started.elapsed();
        wafer.get_ok(&format!("/fn/{}", name_of(label)))?;
        let answered = started.elapsed();
        let baseline = wafer.metric("wafer_baseline_compilations_total")? > baselines;
        let tier = match baseline {
            true => "; baseline code",
            false => "",
        };
        report.cold(
            &format!("deploy → first response, {label}"),
            answered,
            &format!("deploy {}{tier}", ms(deployed)),
        );
        if baseline {
            wafer.wait_until("wafer_baseline_modules", 0, Duration::from_secs(600))?;
            report.cold(
                &format!("deploy → optimized code in place, {label}"),
                started.elapsed(),
                "the optimizing compile, in the background",
            );
        }
    }
    // The node has now compiled a C module and a Python component: the next ones take the functions
    // they share with those (libc, libpython, the componentize-py runtime) from the compile cache.
    let warm = [
        (
            "a second C function",
            "bench/guests/sleep/sleep.wasm",
            "?ms=0",
        ),
        (
            "a second Python app",
            "examples/kv-python/app.wasm",
            "/config",
        ),
    ];
    for (label, path, call) in warm {
        let module = std::fs::read(setup.root.join(path))?;
        let (hits, misses, baselines) = (
            wafer.metric("wafer_compile_cache_hits_total")?,
            wafer.metric("wafer_compile_cache_misses_total")?,
            wafer.metric("wafer_baseline_compilations_total")?,
        );
        let started = Instant::now();
        wafer.deploy(&name_of(label), &module, "{}")?;
        let deployed = started.elapsed();
        wafer.get_ok(&format!("/fn/{}{call}", name_of(label)))?;
        let took = started.elapsed();
        // Baseline code first: the compile cache serves the optimizing compile that follows.
        let tier = match wafer.metric("wafer_baseline_compilations_total")? > baselines {
            true => "baseline code; its optimizing compile took ",
            false => "",
        };
        wafer.wait_until("wafer_baseline_modules", 0, Duration::from_secs(600))?;
        let hits = wafer.metric("wafer_compile_cache_hits_total")? - hits;
        let misses = wafer.metric("wafer_compile_cache_misses_total")? - misses;
        report.cold(
            &format!("deploy → first response, {label} (compile cache warm)"),
            took,
            &format!(
                "deploy {}; {tier}{hits} of {} wasm functions from the compile cache",
                ms(deployed),
                hits + misses
            ),
        );
    }
    let started = Instant::now();
    wafer.restart()?;
    report.cold("restart → ready (4 functions)", started.elapsed(), "");
    for (label, _) in examples {
        let started = Instant::now();
        wafer.get_ok(&format!("/fn/{}", name_of(label)))?;
        report.cold(
            &format!("first call after restart, {label}"),
            started.elapsed(),
            "loaded from its compiled artifact",
        );
    }
    drop(wafer);

    let mut wafer = Wafer::start(setup, &[])?;
    let deployed = deploy_many(&wafer, 1000)?;
    println!("deployed 1,000 functions in {}", ms(deployed));
    let started = Instant::now();
    wafer.restart()?;
    let ready = started.elapsed();
    wafer.wait_loaded(1000, Duration::from_secs(300))?;
    report.cold(
        "process start → ready, 1,000 functions",
        ready,
        &format!(
            "all 1,000 loaded in the background after {}",
            ms(started.elapsed())
        ),
    );
    Ok(())
}

/// 4. Resident memory with 10,000 deployed functions (2,000 with `--quick`), and under many concurrent
///    slow invocations.
fn density(setup: &Setup, report: &mut Report, quick: bool) -> anyhow::Result<()> {
    let functions = if quick { 2_000 } else { 10_000 };
    let mut wafer = Wafer::start(setup, &[])?;
    let idle = wafer.rss()?;
    report.density("idle, no functions", idle, "");
    let started = Instant::now();
    deploy_many(&wafer, functions)?;
    let took = started.elapsed();
    report.density(
        &format!("{} functions deployed", thousands(functions)),
        wafer.rss()?,
        &format!("deployed in {}", ms(took)),
    );
    wafer.restart()?;
    wafer.wait_loaded(functions as u64, Duration::from_secs(600))?;
    report.density(
        &format!(
            "{} functions after a restart, all loaded",
            thousands(functions)
        ),
        wafer.rss()?,
        "",
    );
    drop(wafer);

    let concurrent = 1000;
    let wafer = Wafer::start(setup, &["--max-instances", "2000"])?;
    wafer.deploy(
        "sleep",
        &std::fs::read(setup.root.join("bench/guests/sleep/sleep.wasm"))?,
        "{}",
    )?;
    let base = wafer.rss()?;
    let peak = wafer.rss_during_concurrent(
        &wafer.url("/fn/sleep?ms=3000"),
        concurrent,
        Duration::from_secs(3),
    )?;
    report.density(
        &format!("{concurrent} concurrent invocations sleeping 3 s (WAGI C)"),
        peak,
        &format!(
            "{} before; {} KiB per invocation",
            report::mib(base),
            peak.saturating_sub(base) / 1024 / concurrent as u64
        ),
    );
    Ok(())
}

/// 6. The per-invocation cost inside the engine, from the criterion benchmark in wafer-engine (shorter
///    warm-up and measurement with `--quick`).
fn instantiate(setup: &Setup, report: &mut Report, quick: bool) -> anyhow::Result<()> {
    let mut args = vec!["bench", "-p", "wafer-engine", "--bench", "instantiate"];
    if quick {
        args.extend(["--", "--warm-up-time", "1", "--measurement-time", "2"]);
    }
    let status = std::process::Command::new("cargo")
        .current_dir(&setup.root)
        .args(&args)
        .status()
        .context("cargo bench")?;
    if !status.success() {
        bail!("cargo bench -p wafer-engine failed");
    }
    let criterion = setup.target.join("criterion");
    for group in ["instantiate", "invoke"] {
        let dir = criterion.join(group);
        let mut ids: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.filter_map(|e| Some(e.ok()?.path())).collect(),
            Err(e) => bail!("no criterion results in {}: {e}", dir.display()),
        };
        ids.sort();
        for kind in ids.iter().filter(|p| p.is_dir()) {
            for allocator in std::fs::read_dir(kind)?.filter_map(|e| Some(e.ok()?.path())) {
                let estimates = allocator.join("new/estimates.json");
                let Ok(text) = std::fs::read_to_string(&estimates) else {
                    continue;
                };
                let json: serde_json::Value = serde_json::from_str(&text)?;
                let median_ns = json["median"]["point_estimate"]
                    .as_f64()
                    .unwrap_or(f64::NAN);
                report.instantiate(
                    &format!("{group} {} ({})", file_name(kind), file_name(&allocator)),
                    median_ns / 1000.0,
                );
            }
        }
    }
    Ok(())
}

/// Deploys `n` small distinct WAGI functions, 16 at a time; returns how long it took.
fn deploy_many(wafer: &Wafer, n: usize) -> anyhow::Result<Duration> {
    let modules = (0..n)
        .map(small_function)
        .collect::<anyhow::Result<Vec<_>>>()?;
    deploy_sharing(wafer, n, &modules)
}

/// Deploys `n` functions `f0`, `f1`, …, 16 at a time, function `i` from `modules[i % modules.len()]`;
/// returns how long it took.
pub fn deploy_sharing(wafer: &Wafer, n: usize, modules: &[Vec<u8>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|worker| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for i in (worker..n).step_by(16) {
                        wafer.deploy(&format!("f{i}"), &modules[i % modules.len()], "{}")?;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("deploy thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(started.elapsed())
}

/// A small WAGI module of its own (its number is in its data), so each is compiled and loaded on its own.
pub fn small_function(i: usize) -> anyhow::Result<Vec<u8>> {
    let response = format!("Content-Type: text/plain\n\nfunction {i}\n");
    let escaped: String = response.bytes().map(|b| format!("\\{b:02x}")).collect();
    Ok(wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "{escaped}")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = response.len()
    ))?)
}

fn name_of(label: &str) -> String {
    label
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The workspace root: two levels above this crate's manifest.
fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("workspace root")
}

/// The target directory this binary was built into (`…/release/bench`).
fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .context("target directory")
}

/// Builds the release `wafer` binary (and the hyper ceiling) into the run's target directory.
fn build_wafer(root: &Path, target: &Path) -> anyhow::Result<PathBuf> {
    let status = std::process::Command::new("cargo")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--release", "-p", "wafer", "-p", "bench"])
        .status()
        .context("cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(target.join("release/wafer"))
}

/// `n` with a comma between thousands: 10000 → "10,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_separated_by_commas() {
        let cases = [
            (0, "0"),
            (999, "999"),
            (2_000, "2,000"),
            (100_000, "100,000"),
        ];
        for (n, text) in cases {
            assert_eq!(super::thousands(n), text);
        }
    }
}
