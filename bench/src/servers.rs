//! The servers under test: wafer (release build, fresh data directory), `wasmtime serve`, and the native
//! hyper ceiling. Each is a child process killed when its handle drops.

use crate::Setup;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The wasmtime version `wasmtime serve` must be: the one wafer embeds.
const WASMTIME_VERSION: &str = "48.0.8";

/// A running `wafer serve` on loopback.
pub struct Wafer {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
    binary: PathBuf,
    extra: Vec<String>,
    http: reqwest::blocking::Client,
}

impl Wafer {
    /// Starts wafer on a fresh data directory with extra `serve` flags, and waits until it answers.
    pub fn start(setup: &Setup, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_binary(&setup.wafer, extra)
    }

    /// Starts the `wafer` binary at `binary` on a fresh data directory with extra `serve` flags.
    pub fn start_binary(binary: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(binary.to_path_buf(), data, extra)
    }

    /// `GET path`'s body as JSON.
    pub fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(self.http.get(self.url(path)).send()?.json()?)
    }

    /// `GET path`'s status and body.
    pub fn get_text(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self.http.get(self.url(path)).send()?;
        Ok((response.status().as_u16(), response.text()?))
    }

    /// Queues an async invocation of `name` with `body`.
    pub fn invoke_async(&self, name: &str, body: String) -> anyhow::Result<()> {
        let response = self
            .http
            .post(self.url(&format!("/v1/functions/{name}/invoke?async=true")))
            .body(body)
            .send()?;
        if response.status().as_u16() != 202 {
            bail!("async invoke: {} {}", response.status(), response.text()?);
        }
        Ok(())
    }

    fn spawn(binary: PathBuf, data: tempfile::TempDir, extra: Vec<String>) -> anyhow::Result<Self> {
        let (child, port) = launch(&binary, data.path(), &extra)?;
        let wafer = Self {
            child,
            port,
            data,
            binary,
            extra,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()?,
        };
        wafer.wait_ready(Duration::from_secs(120))?;
        Ok(wafer)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/healthz")).send() {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        bail!("wafer did not become ready within {timeout:?}")
    }

    /// Once every module has its optimized code, kills the server (SIGKILL) and starts it again on the
    /// same data directory, returning once it answers.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        // Modules still on baseline code have no artifact yet: the next start would compile them.
        self.wait_until("wafer_baseline_modules", 0, Duration::from_secs(600))?;
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.child, self.port) = launch(&self.binary, self.data.path(), &self.extra)?;
        self.wait_ready(Duration::from_secs(120))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Deploys `module` as `name` with a JSON config.
    pub fn deploy(&self, name: &str, module: &[u8], config: &str) -> anyhow::Result<()> {
        let form = reqwest::blocking::multipart::Form::new()
            .part(
                "module",
                reqwest::blocking::multipart::Part::bytes(module.to_vec()),
            )
            .text("config", config.to_string());
        let response = self
            .http
            .post(self.url(&format!("/v1/functions/{name}/versions")))
            .multipart(form)
            .send()?;
        if !response.status().is_success() {
            bail!("deploy {name}: {} {}", response.status(), response.text()?);
        }
        Ok(())
    }

    /// `GET path`, which must succeed.
    pub fn get_ok(&self, path: &str) -> anyhow::Result<()> {
        let response = self.http.get(self.url(path)).send()?;
        if !response.status().is_success() {
            bail!("GET {path}: {} {}", response.status(), response.text()?);
        }
        Ok(())
    }

    /// Waits until `n` compiled artifacts have been loaded (the background loader after a restart).
    pub fn wait_loaded(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        self.wait_metric("wafer_artifact_loads_total", n, timeout)
    }

    /// Waits until metric `name` is exactly `n`.
    pub fn wait_until(&self, name: &str, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.metric(name)? != n {
            if Instant::now() > deadline {
                anyhow::bail!("{name} is not {n} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until metric `name` is at least `n`.
    pub fn wait_metric(&self, name: &str, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.metric(name)? >= n {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{name} did not reach {n} within {timeout:?}")
    }

    /// The value of an unlabelled metric from `/metrics`.
    pub fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let text = self.http.get(self.url("/metrics")).send()?.text()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no metric {name}"))
    }

    /// The server's memory maps (the kernel caps them at `vm.max_map_count`).
    pub fn maps(&self) -> anyhow::Result<usize> {
        let pid = self.child.id();
        Ok(std::fs::read_to_string(format!("/proc/{pid}/maps"))?
            .lines()
            .count())
    }

    /// The server's open file descriptors.
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))?.count())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The server's resident set size, in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.child.id())
    }

    /// Sends `n` concurrent `GET url` and samples the server's RSS until all have answered; returns the
    /// highest sample. Every request must succeed.
    pub fn rss_during_concurrent(
        &self,
        url: &str,
        n: usize,
        expected: Duration,
    ) -> anyhow::Result<u64> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let pid = self.child.id();
        runtime.block_on(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(n)
                .timeout(expected * 10)
                .build()?;
            let requests: Vec<_> = (0..n)
                .map(|_| {
                    let (client, url) = (client.clone(), url.to_string());
                    tokio::spawn(async move { client.get(url).send().await?.error_for_status() })
                })
                .collect();
            let mut peak = 0;
            while !requests.iter().all(|r| r.is_finished()) {
                peak = peak.max(rss_of(pid)?);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for request in requests {
                request.await??;
            }
            Ok(peak)
        })
    }
}

impl Drop for Wafer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.data.path().with_extension("log"));
    }
}

/// Starts `wafer serve` on a free loopback port, logging to a file beside the data directory.
fn launch(binary: &Path, data: &Path, extra: &[String]) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?;
    let log = std::fs::File::create(data.with_extension("log"))?;
    let child = Command::new(binary)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .env("WAFER_LOG", "warn")
        .env_remove("WAFER_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start wafer serve")?;
    Ok((child, port))
}

/// A peer server: `wasmtime serve` or the native hyper ceiling.
pub struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    /// `wasmtime serve` on `component`, ready once it answers `GET /`.
    pub fn wasmtime_serve(setup: &Setup, component: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new(&setup.wasmtime)
            .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
            .arg(component)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start wasmtime serve")?;
        Self::ready(child, port)
    }

    /// The native hyper hello-world server.
    pub fn hyper(setup: &Setup) -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new(&setup.hyper)
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start hyper-hello")?;
        Self::ready(child, port)
    }

    fn ready(mut child: Child, port: u16) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/")).send() {
                if r.status().is_success() {
                    return Ok(Self { child, port });
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!("the server exited before answering: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        bail!("the server did not answer within 180 s")
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `wasmtime` at the version wafer embeds: `$WASMTIME`, or on PATH, or installed with cargo.
pub fn wasmtime_binary() -> anyhow::Result<PathBuf> {
    let candidates = [
        std::env::var_os("WASMTIME").map(PathBuf::from),
        Some(PathBuf::from("wasmtime")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/wasmtime")),
    ];
    for candidate in candidates.into_iter().flatten() {
        if version_of(&candidate).is_some_and(|v| v.contains(WASMTIME_VERSION)) {
            return Ok(candidate);
        }
    }
    println!("installing wasmtime-cli {WASMTIME_VERSION} (a long build)…");
    let status = Command::new("cargo")
        .args([
            "install",
            "wasmtime-cli",
            "--version",
            WASMTIME_VERSION,
            "--locked",
        ])
        .status()
        .context("cargo install wasmtime-cli")?;
    if !status.success() {
        bail!("cargo install wasmtime-cli {WASMTIME_VERSION} failed");
    }
    let home = std::env::var_os("HOME").context("HOME")?;
    Ok(PathBuf::from(home).join(".cargo/bin/wasmtime"))
}

/// `BINARY --version`, when it runs.
pub fn version_of(binary: &Path) -> Option<String> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// A loopback port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The resident set size of a process, in bytes, from /proc.
fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("VmRSS missing from /proc status")?;
    Ok(kib * 1024)
}
