//! The end-to-end harness: runs the real `wafer serve` on 127.0.0.1:0 with a temporary data directory,
//! and drives it over HTTP and through the `wafer` CLI.
#![allow(dead_code)]

pub mod containers;
pub mod redis;
pub mod registry;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use reqwest::StatusCode;
use serde_json::Value;

/// A running `wafer serve`, killed when dropped.
pub struct Server {
    child: Child,
    data: Arc<tempfile::TempDir>,
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    logs: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
    /// The API token the server was started with (`--token`), sent by every helper.
    pub token: Option<String>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start() -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().expect("temp dir")), &[])
    }

    /// Starts a server with extra `serve` flags.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_in(Arc::new(tempfile::tempdir().expect("temp dir")), args)
    }

    /// Starts a server with extra `serve` flags on the data directory `data`.
    pub fn start_in_dir(data: tempfile::TempDir, args: &[&str]) -> Self {
        Self::start_in(Arc::new(data), args)
    }

    /// Starts a server on a copy of the data directory `data` (a fixture: the original stays as it is).
    pub fn start_on_copy_of(data: &Path) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        copy_dir(data, dir.path());
        Self::start_in(dir, &[])
    }

    fn start_in(data: Arc<tempfile::TempDir>, args: &[&str]) -> Self {
        // Loopback, unless the test names another address.
        let listen: &[&str] = match args.contains(&"--listen") {
            true => &[],
            false => &["--listen", "127.0.0.1:0"],
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_wafer"))
            .env_remove("WAFER_TOKEN")
            .arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env("WAFER_LOG", "info")
            .env("NO_COLOR", "1")
            // Tests count compiles and expect a deploy's artifact on disk once it answers: they get
            // the optimizing compiler alone unless they pass `--baseline-compile-limit` (`tiers.rs`).
            .env("WAFER_BASELINE_COMPILE_LIMIT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wafer serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "wafer serve did not report its address; log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        let token = args
            .iter()
            .position(|a| *a == "--token")
            .and_then(|i| args.get(i + 1))
            .map(|t| t.to_string());
        Self {
            child,
            data,
            url,
            logs,
            http: reqwest::Client::new(),
            token,
        }
    }

    /// Stops this server as a crash would (SIGKILL) and starts another on the same data directory.
    pub fn restart(self) -> Self {
        self.restart_with(&[])
    }

    /// [`Server::restart`], the new server started with `args`.
    pub fn restart_with(mut self, args: &[&str]) -> Self {
        self.stop();
        let data = self.data.clone();
        drop(self);
        Self::start_in(data, args)
    }

    /// Stops this server gracefully (SIGTERM) and starts another on the same data directory with `args`.
    pub fn restart_gracefully_with(mut self, args: &[&str]) -> Self {
        self.terminate();
        let data = self.data.clone();
        drop(self);
        Self::start_in(data, args)
    }

    /// The console's base URL (`http://ADDR`), from the line the server logs for it.
    pub fn console_url(&self) -> String {
        let started = std::time::Instant::now();
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|line| {
                let at = line.find("console on http://")?;
                let url = line[at + "console on ".len()..].split_whitespace().next()?;
                Some(url.trim_end_matches("/ui/").to_string())
            });
            if let Some(url) = found {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the server logged no console address"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, …) to the server.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Kills the server (SIGKILL) and waits for it, keeping its data directory.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit; returns how it exited.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().ok()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Every file under `modules/` (blobs and compiled artifacts).
    pub fn module_files(&self) -> Vec<PathBuf> {
        let dir = self.data_dir().join("modules").join("sha256");
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The server's log so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A request to `path` carrying the server's token, if it has one.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.at(path));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Deploys `module` with `config` as multipart; returns status and JSON body.
    pub async fn deploy(&self, name: &str, module: Vec<u8>, config: Value) -> (StatusCode, Value) {
        self.deploy_parts(name, module, &[("config", config)]).await
    }

    /// Deploys `module` with the given JSON parts (`config`, `variables`); returns status and JSON body.
    pub async fn deploy_parts(
        &self,
        name: &str,
        module: Vec<u8>,
        parts: &[(&str, Value)],
    ) -> (StatusCode, Value) {
        self.deploy_as("module", name, module, parts).await
    }

    /// Deploys `bytes` as the multipart part `part` (`module`, or a container's `image`) with the given
    /// JSON parts; returns status and JSON body.
    pub async fn deploy_as(
        &self,
        part: &str,
        name: &str,
        bytes: Vec<u8>,
        parts: &[(&str, Value)],
    ) -> (StatusCode, Value) {
        let path = format!("/v1/functions/{name}/versions");
        self.deploy_to(&path, part, bytes, parts).await
    }

    /// Deploys `module` with `config` as a candidate (`?promote=false`: the live version stays) and
    /// insists it succeeds.
    pub async fn deploy_candidate(&self, name: &str, module: Vec<u8>, config: Value) -> Value {
        let path = format!("/v1/functions/{name}/versions?promote=false");
        let (status, body) = self
            .deploy_to(&path, "module", module, &[("config", config)])
            .await;
        assert_eq!(status, StatusCode::CREATED, "deploy {name}: {body}");
        body
    }

    /// Posts a deploy to `path`: `bytes` as part `part`, with the given JSON parts.
    async fn deploy_to(
        &self,
        path: &str,
        part: &str,
        bytes: Vec<u8>,
        parts: &[(&str, Value)],
    ) -> (StatusCode, Value) {
        let mut form = reqwest::multipart::Form::new()
            .part(part.to_string(), reqwest::multipart::Part::bytes(bytes));
        for (part, value) in parts {
            form = form.part(
                part.to_string(),
                reqwest::multipart::Part::text(value.to_string()),
            );
        }
        let response = self
            .request(reqwest::Method::POST, path)
            .multipart(form)
            .send()
            .await
            .expect("deploy request");
        json_reply(response).await
    }

    /// Deploys and insists it succeeds.
    pub async fn deploy_ok(&self, name: &str, module: Vec<u8>, config: Value) -> Value {
        let (status, body) = self.deploy(name, module, config).await;
        assert_eq!(status, StatusCode::CREATED, "deploy {name}: {body}");
        body
    }

    /// `GET path` → status and JSON body.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        json_reply(
            self.request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    /// A request to `path` → status, headers and body text.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let response = self
            .request(method, path)
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    /// A request to `path` with extra headers → status, headers and body text.
    pub async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self.request(method, path).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    /// A request to `path` whose answer is JSON → status and JSON body.
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let (status, _, text) = self.call(method, path, body).await;
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value)
    }

    /// Posts `bytes` bytes to `path` and asserts the body was refused with 413.
    pub async fn assert_body_too_large(&self, path: &str, bytes: usize) {
        let (status, body) = self
            .call_json(reqwest::Method::POST, path, &"x".repeat(bytes))
            .await;
        assert_error(
            status,
            &body,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        );
    }

    /// `GET path` → status and body text.
    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (status, _, body) = self.call(reqwest::Method::GET, path, "").await;
        (status, body)
    }

    /// The value of a metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
    }

    /// Runs the `wafer` CLI against this server, with its token.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = wafer_command(&self.url, args);
        if let Some(token) = &self.token {
            command.env("WAFER_TOKEN", token);
        }
        command.output().expect("run wafer")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Copies the files under `from` into `to`, directories included.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

/// Runs the `wafer` CLI with `WAFER_SERVER` pointing at `url` and no token.
/// `program` of the venv `.ci/run` fills (beside the python `WAFER_PYTHON` names, by default
/// `/var/tmp/wafer-venv/bin/python`), if running it with `probe` succeeds; `what` says what it must
/// have. Locally a test without it skips; under `CI=true` it must be there.
pub fn venv_program(program: &str, probe: &[&str], what: &str) -> Option<PathBuf> {
    let python = std::env::var_os("WAFER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/wafer-venv/bin/python"));
    let command = python.with_file_name(program);
    let usable = Command::new(&command)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(command);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no {what} at {} (.ci/run installs it)",
        command.display()
    );
    eprintln!("skipped: no {what} at {}", command.display());
    None
}

pub fn wafer_cli(url: &str, args: &[&str]) -> Output {
    wafer_command(url, args).output().expect("run wafer")
}

fn wafer_command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wafer"));
    command
        .args(args)
        .env("WAFER_SERVER", url)
        .env_remove("WAFER_TOKEN")
        .stdin(Stdio::null());
    command
}

async fn json_reply(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
    };
    (status, value)
}

/// Asserts a wafer JSON error with `status` and `code`.
pub fn assert_error(status: StatusCode, body: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// The bytes of a built example, e.g. `example("wagi-c/hello.wasm")`.
pub fn example(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path);
    std::fs::read(&full)
        .unwrap_or_else(|e| panic!("{}: {e} (run examples/build.sh)", full.display()))
}

/// A WAT guest compiled to binary.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

/// A WAGI module that prints `response` (CGI headers, blank line, body) to stdout and exits.
pub fn wagi_wat(response: &str) -> Vec<u8> {
    wagi_wat_importing("wasi_snapshot_preview1", response)
}

/// [`wagi_wat`], importing `fd_write` from the WASI module named `wasi` (`wasi_unstable` for preview 0).
pub fn wagi_wat_importing(wasi: &str, response: &str) -> Vec<u8> {
    writes_wat(wasi, &[(1, response)])
}

/// A WAGI module that writes `line` to its log (stderr), then prints `response` like [`wagi_wat`].
pub fn wagi_wat_logging(line: &str, response: &str) -> Vec<u8> {
    writes_wat(
        "wasi_snapshot_preview1",
        &[(2, &format!("{line}\n")), (1, response)],
    )
}

/// A module whose `_start` writes each text to its descriptor, in order, with `fd_write` imported from
/// the WASI module named `wasi`.
fn writes_wat(wasi: &str, writes: &[(u32, &str)]) -> Vec<u8> {
    let mut data = String::new();
    let mut calls = String::new();
    let mut offset = 16;
    for (fd, text) in writes {
        let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
        data += &format!("(data (i32.const {offset}) \"{escaped}\")\n");
        calls += &format!(
            "(i32.store (i32.const 0) (i32.const {offset}))
             (i32.store (i32.const 4) (i32.const {len}))
             (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))\n",
            len = text.len()
        );
        offset += text.len();
    }
    wat(&format!(
        r#"(module
            (import "{wasi}" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            {data}
            (func (export "_start") {calls}))"#
    ))
}

/// A WAGI module that waits `ms` milliseconds without using the CPU (a relative clock subscription
/// of `poll_oneoff`, so the host parks it), then prints `response` like [`wagi_wat`].
pub fn sleep_wat(ms: u64, response: &str) -> Vec<u8> {
    let escaped: String = response.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "poll_oneoff"
                (func $poll (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 1024) "{escaped}")
            (func (export "_start")
                ;; One subscription at 4096: the monotonic clock (1), {ms} ms from now.
                (i32.store8 (i32.const 4104) (i32.const 0))
                (i32.store (i32.const 4112) (i32.const 1))
                (i64.store (i32.const 4120) (i64.const {nanos}))
                (i64.store (i32.const 4128) (i64.const 0))
                (i32.store16 (i32.const 4136) (i32.const 0))
                (drop (call $poll (i32.const 4096) (i32.const 4160) (i32.const 1) (i32.const 4200)))
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        nanos = ms * 1_000_000,
        len = response.len()
    ))
}

/// A module whose `_start` traps at once (`unreachable`).
pub fn trap_wat() -> Vec<u8> {
    wat(r#"(module (func (export "_start") unreachable))"#)
}

/// A module whose `_start` never returns.
pub fn spin_wat() -> Vec<u8> {
    wat(r#"(module (func (export "_start") (loop (br 0))))"#)
}

/// A module that writes `chunks` × 64 KiB of `x` to stdout, then exits.
pub fn flood_wat(chunks: u32) -> Vec<u8> {
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 1024) "{}")
            (func (export "_start") (local $i i32)
                (i32.store (i32.const 0) (i32.const 1024))
                (i32.store (i32.const 4) (i32.const 65536))
                (loop
                    (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if 0 (i32.lt_u (local.get $i) (i32.const {chunks}))))))"#,
        "x".repeat(65536)
    ))
}

/// stdout of a CLI run as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr of a CLI run as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The bytes of a test fixture, e.g. `fixture("flaky.wasm")`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run examples/build.sh test-fixtures)",
            path.display()
        )
    })
}

/// Polls `probe` every 50 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Server {
    /// Waits until execution `id` is in a final state (succeeded, failed, dead or expired) and
    /// returns it.
    pub async fn finished_execution(&self, id: &str) -> Value {
        wait_for(
            &format!("execution {id} to finish"),
            Duration::from_secs(60),
            || async {
                let (status, body) = self.get_json(&format!("/v1/executions/{id}")).await;
                let done = status == StatusCode::OK
                    && matches!(
                        body["status"].as_str(),
                        Some("succeeded" | "failed" | "dead" | "expired")
                    );
                done.then_some(body)
            },
        )
        .await
    }

    /// Queues an async invocation of `name` (`query` is appended after `async=true`); returns its id.
    pub async fn invoke_async(&self, name: &str, query: &str, body: &str) -> String {
        let (status, reply) = self
            .call_json(
                reqwest::Method::POST,
                &format!("/v1/functions/{name}/invoke?async=true{query}"),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{reply}");
        reply["execution_id"]
            .as_str()
            .expect("execution_id")
            .to_string()
    }
}

/// A local HTTP server that answers 200 to every request and keeps each JSON body it was sent.
pub struct CallbackSink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The bodies received, in order.
    pub received: Arc<Mutex<Vec<Value>>>,
}

impl CallbackSink {
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// A sink on loopback port `port` (0: any free one).
    pub fn start_on(port: u16) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut reader = BufReader::new(stream);
                    let mut length = 0;
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                        line.clear();
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_ok() {
                        if let Ok(value) = serde_json::from_slice(&body) {
                            sink.lock().unwrap().push(value);
                        }
                    }
                    let _ = reader.get_mut().write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        Self { url, received }
    }

    /// The bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits for the record of execution `id` (`what` says what it is) and returns it.
    pub async fn record_of(&self, id: &str, what: &str) -> Value {
        wait_for(what, Duration::from_secs(60), || async {
            self.bodies().into_iter().find(|b| b["id"] == id)
        })
        .await
    }
}

/// A WAGI module that answers with its whole environment, NUL-separated.
pub fn env_dumper() -> Vec<u8> {
    let header = "Content-Type: text/plain\n\n";
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "environ_get" (func $get (param i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 64) "{header}")
            (func (export "_start")
                (drop (call $sizes (i32.const 0) (i32.const 4)))
                (drop (call $get (i32.const 1024) (i32.const 8192)))
                ;; Two writes: fd_write may write only its first buffer.
                (i32.store (i32.const 16) (i32.const 64))
                (i32.store (i32.const 20) (i32.const {len}))
                (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))
                (i32.store (i32.const 16) (i32.const 8192))
                (i32.store (i32.const 20) (i32.load (i32.const 4)))
                (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))))"#,
        header = header.escape_default(),
        len = header.len()
    ))
}
