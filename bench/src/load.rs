//! The load generator: Debian's `wrk`, on loopback, with its latency distribution.

use anyhow::{bail, Context};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `wrk`, found or installed.
pub struct Wrk {
    path: PathBuf,
}

/// One load run's figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Responses with a status outside 2xx/3xx, and socket errors.
    pub errors: u64,
    /// Requests answered.
    pub requests: u64,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms{}",
            self.rps,
            self.p50_ms,
            self.p99_ms,
            if self.errors > 0 {
                format!("  ({} errors)", self.errors)
            } else {
                String::new()
            }
        )
    }
}

impl Wrk {
    /// `wrk` on PATH, installed from Debian's packages when missing.
    pub fn find_or_install() -> anyhow::Result<Self> {
        let path = PathBuf::from("wrk");
        if Command::new(&path).arg("-v").output().is_ok() {
            return Ok(Self { path });
        }
        println!("installing wrk…");
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("apt-get install wrk")?;
        if !status.success() {
            bail!("apt-get install wrk failed");
        }
        Ok(Self { path })
    }

    /// A short run to fault in code paths and caches before measuring.
    pub fn warm_up(&self, url: &str) -> anyhow::Result<()> {
        self.run(url, 4, 1).map(drop)
    }

    /// `c` connections for `seconds` against `url`.
    pub fn run(&self, url: &str, c: u32, seconds: u32) -> anyhow::Result<Run> {
        self.load(url, c, seconds, None)
    }

    /// `c` connections POSTing `body` to `url` for `seconds`.
    pub fn post(&self, url: &str, c: u32, seconds: u32, body: &str) -> anyhow::Result<Run> {
        let mut script = tempfile::Builder::new().suffix(".lua").tempfile()?;
        // A Lua long string holds the body as it is.
        writeln!(script, "wrk.method = \"POST\"\nwrk.body = [==[{body}]==]")?;
        self.load(url, c, seconds, Some(script.path()))
    }

    fn load(&self, url: &str, c: u32, seconds: u32, script: Option<&Path>) -> anyhow::Result<Run> {
        let mut command = Command::new(&self.path);
        command.args([
            "-t",
            &c.clamp(1, 2).to_string(),
            "-c",
            &c.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
        ]);
        if let Some(script) = script {
            command.arg("-s").arg(script);
        }
        let output = command.arg(url).output().context("run wrk")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        parse(&text).with_context(|| format!("cannot read wrk's report:\n{text}"))
    }
}

/// Reads requests/s, the 50% and 99% latency lines and the error counts from wrk's report.
fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(n)) => run.rps = n.parse().ok()?,
            (Some("50%"), Some(t)) => run.p50_ms = millis(t)?,
            (Some("99%"), Some(t)) => run.p99_ms = millis(t)?,
            (Some(n), Some("requests")) => run.requests = n.parse().ok()?,
            (Some("Non-2xx"), _) => run.errors += line.rsplit(' ').next()?.parse::<u64>().ok()?,
            (Some("Socket"), Some("errors:")) => {
                run.errors += line
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    (run.rps > 0.0).then_some(run)
}

/// `812.00us`, `1.23ms`, `2.00s` → milliseconds.
fn millis(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 5s test @ http://127.0.0.1:1/\n  1 threads and 16 connections\n  \
            Latency Distribution\n     50%  812.00us\n     75%    1.00ms\n     90%    1.50ms\n     \
            99%    3.21ms\n  20000 requests in 5.00s, 2.00MB read\n  \
            Socket errors: connect 0, read 2, write 0, timeout 1\n  \
            Non-2xx or 3xx responses: 4\nRequests/sec:   4000.50\nTransfer/sec:    400.00KB\n";
        let run = parse(report).unwrap();
        assert_eq!(run.rps, 4000.5);
        assert!((run.p50_ms - 0.812).abs() < 1e-9);
        assert_eq!(run.p99_ms, 3.21);
        assert_eq!(run.errors, 7);
        assert_eq!(run.requests, 20000);
        assert_eq!(millis("2.00s"), Some(2000.0));
    }
}
