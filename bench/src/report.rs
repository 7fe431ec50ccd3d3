//! Collects the figures of a run and renders `bench/results/latest.md`.

use crate::load::Run;
use crate::servers::version_of;
use crate::Setup;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

/// Every figure of one run, with the machine and versions it ran on.
pub struct Report {
    header: Vec<(String, String)>,
    /// (component, concurrency, server) → the runs, in order.
    throughput: BTreeMap<(String, u32, String), Vec<Run>>,
    servers: Vec<String>,
    cold: Vec<(String, Duration, String)>,
    density: Vec<(String, u64, String)>,
    scale: Vec<(String, String, String)>,
    instantiate: Vec<(String, f64)>,
}

impl Report {
    pub fn new(setup: &Setup) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or("unknown".into(), |kib| {
                format!("{:.1} GiB", kib as f64 / 1048576.0)
            });
        let command = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .current_dir(&setup.root)
                .output()
                .ok()
                .map(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
                    text.lines().next().unwrap_or_default().to_string()
                })
                .unwrap_or_default()
        };
        let header = vec![
            (
                "date".into(),
                command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            ),
            (
                "machine".into(),
                format!(
                    "{cpu}, {} cores, {memory}",
                    std::thread::available_parallelism().map_or(0, |n| n.get())
                ),
            ),
            (
                "kernel".into(),
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            ("rustc".into(), command("rustc", &["-V"])),
            (
                "wafer".into(),
                format!(
                    "{} (git {})",
                    version_of(&setup.wafer).unwrap_or_default(),
                    command("git", &["rev-parse", "--short", "HEAD"])
                ),
            ),
            (
                "peer".into(),
                version_of(&setup.wasmtime).unwrap_or_default(),
            ),
            ("load".into(), command("wrk", &["-v"])),
            (
                "runs".into(),
                format!(
                    "{} s each, {} round(s) per server and level, servers alternating; wrk on the \
                     same machine (it shares the cores)",
                    setup.seconds, setup.rounds
                ),
            ),
        ];
        Self {
            header,
            throughput: BTreeMap::new(),
            servers: Vec::new(),
            cold: Vec::new(),
            density: Vec::new(),
            scale: Vec::new(),
            instantiate: Vec::new(),
        }
    }

    pub fn throughput(&mut self, component: &str, server: &str, c: u32, run: Run) {
        if !self.servers.iter().any(|s| s == server) {
            self.servers.push(server.to_string());
        }
        self.throughput
            .entry((component.to_string(), c, server.to_string()))
            .or_default()
            .push(run);
    }

    pub fn cold(&mut self, what: &str, took: Duration, note: &str) {
        println!("{what}: {:.1} ms {note}", took.as_secs_f64() * 1000.0);
        self.cold.push((what.into(), took, note.into()));
    }

    pub fn density(&mut self, what: &str, rss: u64, note: &str) {
        println!("{what}: {} {note}", mib(rss));
        self.density.push((what.into(), rss, note.into()));
    }

    pub fn scale(&mut self, what: &str, value: String, note: &str) {
        println!("{what}: {value} {note}");
        self.scale.push((what.into(), value, note.into()));
    }

    pub fn instantiate(&mut self, what: &str, micros: f64) {
        println!("{what}: {micros:.1} µs");
        self.instantiate.push((what.into(), micros));
    }

    /// The mean of the runs of one server at one level.
    fn mean(&self, component: &str, c: u32, server: &str) -> Option<Run> {
        let runs = self
            .throughput
            .get(&(component.to_string(), c, server.to_string()))?;
        let n = runs.len() as f64;
        Some(Run {
            rps: runs.iter().map(|r| r.rps).sum::<f64>() / n,
            p50_ms: runs.iter().map(|r| r.p50_ms).sum::<f64>() / n,
            p99_ms: runs.iter().map(|r| r.p99_ms).sum::<f64>() / n,
            errors: runs.iter().map(|r| r.errors).sum(),
            requests: runs.iter().map(|r| r.requests).sum(),
        })
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# wafer benchmark results\n\n");
        out.push_str("Written by `cargo run -p bench --release` (see bench/README.md).\n\n");
        for (key, value) in &self.header {
            let _ = writeln!(out, "- **{key}**: {value}");
        }

        out.push_str("\n## 1. Throughput and latency of hello-world wasi:http components\n\n");
        out.push_str(
            "Mean of the rounds. `wafer reuse` lets one instance serve up to 1,000 requests in turn; every \
             other wasm column uses a fresh instance per request.\n\n",
        );
        out.push_str(
            "| component | connections | server | req/s | p50 ms | p99 ms | × wasmtime serve | × native |\n\
             |---|---:|---|---:|---:|---:|---:|---:|\n",
        );
        let mut keys: Vec<(&String, u32)> =
            self.throughput.keys().map(|(c, n, _)| (c, *n)).collect();
        keys.dedup();
        for (component, c) in keys {
            let peer = self.mean(component, c, "wasmtime serve");
            let native = self.mean(component, c, "native hyper");
            for server in &self.servers {
                let Some(run) = self.mean(component, c, server) else {
                    continue;
                };
                let ratio = |base: Option<Run>| {
                    base.filter(|b| b.rps > 0.0)
                        .map_or("".into(), |b| format!("{:.2}", run.rps / b.rps))
                };
                let _ = writeln!(
                    out,
                    "| {component} | {c} | {server} | {:.0}{} | {:.2} | {:.2} | {} | {} |",
                    run.rps,
                    if run.errors > 0 {
                        format!(" ({} errors)", run.errors)
                    } else {
                        String::new()
                    },
                    run.p50_ms,
                    run.p99_ms,
                    ratio(peer),
                    ratio(native),
                );
            }
        }

        out.push_str("\n## 2–3. Cold paths\n\n| what | ms | note |\n|---|---:|---|\n");
        for (what, took, note) in &self.cold {
            let _ = writeln!(
                out,
                "| {what} | {:.1} | {note} |",
                took.as_secs_f64() * 1000.0
            );
        }
        out.push_str("\n## 4. Density (resident memory of the wafer process)\n\n| what | RSS | note |\n|---|---:|---|\n");
        for (what, rss, note) in &self.density {
            let _ = writeln!(out, "| {what} | {} | {note} |", mib(*rss));
        }
        out.push_str(
            "\n## 5. Many functions on one node\n\n| what | value | note |\n|---|---:|---|\n",
        );
        for (what, value, note) in &self.scale {
            let _ = writeln!(out, "| {what} | {value} | {note} |");
        }
        out.push_str(
            "\n## 6. Per-invocation cost inside the engine (criterion, median)\n\n\
             `instantiate` is the time to create the instance from its pre-instantiated form; `invoke` \
             is the whole invocation: new store and host state, instantiate, run, drop.\n\n\
             | what | µs |\n|---|---:|\n",
        );
        for (what, micros) in &self.instantiate {
            let _ = writeln!(out, "| {what} | {micros:.1} |");
        }
        out
    }
}

/// Bytes as MiB, one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}
