//! The function inside its container: compiled once at start, then run as its kind says.
//!
//! - A `command` runs once, with the container's arguments and environment; its stdout and stderr
//!   become the container's, and its exit code the task's. Its standard input is empty: runwasi's shim
//!   never closes a container's stdin (it has no CloseIO), so a program reading it would wait forever.
//! - An `http`, `wagi` or `proxy-wasm` function serves HTTP on `WAFER_LISTEN` (from the container's
//!   environment, default `0.0.0.0:80`), a fresh instance per request, until the task is stopped
//!   (SIGTERM or SIGINT end it cleanly, with exit code 0).
//!
//! Limits come from the function's wafer config, which `wafer package` writes to `/wafer.json` in the
//! image ([`wafer_api::oci::CONFIG_PATH`]), by the engine's one rule ([`FunctionDefaults::settings`],
//! as `wafer serve` applies it), and from the container: the wasm memory cap never exceeds the
//! container's memory limit (less room for the engine), so a guest that grows past it traps instead of
//! being killed by the kernel. The compiled function comes from the node's cache (`cache.rs`) when this
//! module was compiled here before.

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use wafer_api::{ErrorBody, FunctionConfig, Kind};
use wafer_engine::{
    Engine, EngineOptions, Function, FunctionDefaults, InvokeError, LogLine, Mount, Settings,
    Stream, Tracer,
};

/// The address an HTTP function listens on unless the container sets `WAFER_LISTEN`.
const DEFAULT_LISTEN: &str = "0.0.0.0:80";

/// Memory the engine keeps for itself out of the container's limit (compiled code, buffers).
const ENGINE_HEADROOM: u64 = 48 << 20;

/// How long a `command` may run when its config sets no timeout (a day, in ms): jobs are expected to take
/// a while.
const DEFAULT_JOB_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Runs the container's function; returns the task's exit code.
pub async fn run(ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
    let entrypoint = ctx.entrypoint();
    let wasm = entrypoint.source.as_bytes()?;
    let packaged = read_config(&Path::new("/").join(wafer_api::oci::CONFIG_PATH))?;
    // An image not made by `wafer package` runs as runwasi's shims run it: a WASI module is a command.
    let kind = match &packaged {
        Some(config) => config.kind,
        None => (!wafer_engine::is_component(&wasm)).then_some(Kind::Command),
    };
    let config = packaged.unwrap_or_default();
    let name = entrypoint.name.unwrap_or_else(|| "function".into());
    let engine = Engine::new(&EngineOptions {
        fuel: meters_fuel(&config),
        pool: None,
        max_idle: 0,
    })?;
    let function = crate::cache::load_or_compile(&engine, &wasm, kind)?;
    let env = container_env(ctx.envs());
    let kind = function.kind();
    let defaults = defaults(kind, &config);
    let settings = settings(&name, &defaults, &config, &env, container_memory_limit())?;
    match kind {
        Kind::Command => run_job(&function, ctx.args(), &settings).await,
        Kind::Container => {
            anyhow::bail!("a container function's image is run by runc, not by this shim")
        }
        Kind::Http | Kind::Wagi | Kind::ProxyWasm => {
            let listen = env
                .iter()
                .find(|(k, _)| k == "WAFER_LISTEN")
                .map_or(DEFAULT_LISTEN, |(_, v)| v.as_str());
            let listen: SocketAddr = listen
                .parse()
                .with_context(|| format!("WAFER_LISTEN `{listen}` is not an address:port"))?;
            let max_body = defaults.effective(&config).max_request_bytes;
            serve(function, settings, listen, max_body).await?;
            Ok(0)
        }
    }
}

/// The function's wafer config from the image, or `None` when the image has none.
fn read_config(path: &Path) -> anyhow::Result<Option<FunctionConfig>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not a valid wafer function config", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The container's `KEY=VALUE` environment as pairs.
fn container_env(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the engine meters fuel: only when the config bounds it, since metering slows every guest.
fn meters_fuel(config: &FunctionConfig) -> bool {
    config.fuel.is_some()
}

/// What a container's function gets for what its config leaves unset: the server's defaults, but a
/// day's timeout for a `command` (a job), and fuel only when the config sets it.
fn defaults(kind: Kind, config: &FunctionConfig) -> FunctionDefaults {
    let standard = FunctionDefaults::default();
    FunctionDefaults {
        timeout_ms: match kind {
            Kind::Command => DEFAULT_JOB_TIMEOUT_MS,
            _ => standard.timeout_ms,
        },
        fuel: meters_fuel(config),
        ..standard
    }
}

/// What each invocation gets: the engine's rule over the container's environment, under `defaults`,
/// with the memory cap kept within the container's memory.
fn settings(
    name: &str,
    defaults: &FunctionDefaults,
    config: &FunctionConfig,
    container_env: &[(String, String)],
    container_memory: Option<u64>,
) -> anyhow::Result<Settings> {
    let mut settings = defaults
        .settings(name, config, container_env.iter().cloned())
        .map_err(|e| anyhow::anyhow!("allowed_outbound_hosts: {e}"))?;
    if let Some(limit) = container_memory {
        let room = limit.saturating_sub(ENGINE_HEADROOM).max(limit / 2);
        settings.limits.memory_bytes = settings.limits.memory_bytes.min(room);
    }
    Ok(settings)
}

/// The memory limit of the container's cgroup (v2 or v1), when it has one.
fn container_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next()?, fields.next()?);
        if controllers.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates.iter().find_map(|file| {
        let limit: u64 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        // "max" (v2) does not parse; v1 says "no limit" with a number near 2^63.
        (limit < 1 << 60).then_some(limit)
    })
}

/// Runs a `command` function once: the container's arguments in, its stdout and stderr out.
async fn run_job(function: &Function, args: &[String], settings: &Settings) -> anyhow::Result<i32> {
    let args = args.get(1..).unwrap_or_default();
    let result = function
        .run_command(Default::default(), args, settings, Tracer::discard())
        .await;
    match result {
        Ok(output) => {
            std::io::stdout().write_all(output.stdout.as_bytes())?;
            std::io::stderr().write_all(output.stderr.as_bytes())?;
            if output.stdout_truncated {
                eprintln!("[wafer] stdout past the function's response cap was dropped");
            }
            Ok(output.exit_code)
        }
        Err(e) => {
            eprintln!("[wafer] {e}");
            Ok(exit_code(&e))
        }
    }
}

/// The task's exit code for a failed run: 137 for memory (as for a container the kernel killed), 124
/// for a timeout (as `timeout(1)`), 1 otherwise.
fn exit_code(error: &InvokeError) -> i32 {
    match error {
        InvokeError::MemoryLimit(_) => 137,
        InvokeError::Timeout(_) => 124,
        _ => 1,
    }
}

/// What every request handler shares.
struct Served {
    function: Function,
    settings: Settings,
    max_body: usize,
}

/// Serves HTTP with the function until SIGTERM or SIGINT.
async fn serve(
    function: Function,
    settings: Settings,
    listen: SocketAddr,
    max_body: u64,
) -> anyhow::Result<()> {
    let served = Arc::new(Served {
        function,
        settings,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
    });
    let app = axum::Router::new().fallback(handle).with_state(served);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("[wafer] serving on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped())
    .await?;
    eprintln!("[wafer] stopped");
    Ok(())
}

/// Resolves when the task is asked to stop. As the container's first process, the shim would otherwise
/// ignore SIGTERM.
async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("[wafer] cannot watch for signals ({e}); stop the task with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}

/// One request: read the body within the cap, run the function, answer; its log lines go to the
/// container's output once the instance is gone.
async fn handle(
    State(served): State<Arc<Served>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, served.max_body).await {
        Ok(body) => body,
        Err(_) => {
            return error_response(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over {} bytes", served.max_body),
            )
        }
    };
    let mount = Mount {
        prefix: String::new(),
        strip_prefix: false,
        client: Some(client),
    };
    let (tracer, trace) = Tracer::channel();
    let request = http::Request::from_parts(parts, body);
    let result = served
        .function
        .serve_http(request, &mount, &served.settings, tracer)
        .await;
    tokio::spawn(async move {
        if let Ok(trace) = trace.await {
            trace.logs.iter().for_each(print_line);
        }
    });
    match result {
        Ok(response) => response.map(Body::new),
        Err(e) => {
            let (status, code) = e.status();
            eprintln!("[wafer] {e}");
            error_response(status, code, e.to_string())
        }
    }
}

fn error_response(status: http::StatusCode, code: &str, message: String) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// A guest's log line on the container's output: stdout lines on stdout, the rest on stderr.
fn print_line(line: &LogLine) {
    match line.stream {
        Stream::Stdout => println!("{}", line.text),
        Stream::Stderr | Stream::Log => eprintln!("[{}] {}", line.level, line.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_config_env_wins_and_memory_fits_the_container() {
        let config: FunctionConfig =
            serde_json::from_str(r#"{"env": {"A": "config"}, "memory_mb": 512}"#).unwrap();
        let env = container_env(&["A=container".into(), "B=container".into(), "bad".into()]);
        let settings =
            |kind, memory| settings("f", &defaults(kind, &config), &config, &env, memory).unwrap();
        let job = settings(Kind::Command, Some(256 << 20));
        assert_eq!(
            job.env,
            [
                ("B".to_string(), "container".to_string()),
                ("A".to_string(), "config".to_string())
            ]
        );
        assert_eq!(job.limits.memory_bytes, (256 - 48) << 20);
        assert_eq!(
            job.limits.timeout,
            Duration::from_millis(DEFAULT_JOB_TIMEOUT_MS)
        );
        assert_eq!(job.limits.fuel, None);
        let small = settings(Kind::Http, Some(64 << 20));
        assert_eq!(small.limits.memory_bytes, 32 << 20);
        assert_eq!(
            small.limits.timeout,
            wafer_engine::Limits::default().timeout
        );
        let unlimited = settings(Kind::Http, None);
        assert_eq!(unlimited.limits.memory_bytes, 512 << 20);
        let metered: FunctionConfig = serde_json::from_str(r#"{"fuel": 1000}"#).unwrap();
        let limits = defaults(Kind::Command, &metered).limits(&metered);
        assert_eq!(limits.fuel, Some(1000), "as `wafer serve --fuel` meters it");
    }

    #[test]
    fn a_missing_config_is_the_default_and_a_bad_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("wafer-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wafer.json");
        assert_eq!(read_config(&path).unwrap(), None, "absent");
        std::fs::write(&path, r#"{"no_such_field": 1}"#).unwrap();
        assert!(read_config(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
