//! Per-process mode: the function runs inside its container's own process, as runwasi's shims run
//! theirs. runwasi's `containerd-shim-wasm` makes the container (namespaces, cgroups, root filesystem)
//! and calls [`run`] inside it.
//!
//! - A `command` runs once, with the container's arguments and environment; its stdout and stderr
//!   become the container's, and its exit code the task's.
//! - An `http`, `wagi` or `proxy-wasm` function serves HTTP on `WAFER_LISTEN`, a fresh instance per
//!   request, until the task is stopped (SIGTERM or SIGINT end it cleanly, with exit code 0).
//!
//! How the container becomes a function (config, limits, listen address) is `wafer_node::function`,
//! the same as in agent mode; here the engine shares the container's memory, so the wasm memory cap
//! leaves it room. The compiled function comes from the node's cache (`cache.rs`) when this module was
//! compiled here before.

use anyhow::Context as _;
use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use std::path::Path;
use std::sync::Arc;
use wafer_api::FunctionConfig;
use wafer_engine::{Engine, EngineOptions};
use wafer_node::function::{self as container, ENGINE_HEADROOM};
use wafer_node::gate::Gate;
use wafer_node::output::{Output, FLUSH};
use wafer_node::serve::{serve, Served, Stop};

/// Runs the container's function; returns the task's exit code.
pub async fn run(ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
    let entrypoint = ctx.entrypoint();
    let wasm = entrypoint.source.as_bytes()?;
    let packaged = match read_config(&Path::new("/").join(wafer_api::oci::CONFIG_PATH))? {
        Some(config) => Some(config),
        None => layer_config(&entrypoint.source)?,
    };
    let kind = container::kind_of(packaged.as_ref(), &wasm);
    let config = packaged.unwrap_or_default();
    let name = entrypoint.name.unwrap_or_else(|| "function".into());
    let engine = Engine::new(&EngineOptions {
        fuel: container::meters_fuel(&config),
        pool: None,
        max_idle: 0,
        // One module per shim process, and its artifact is cached whole: nothing to share per function.
        compile_cache: None,
        // Nothing would move the process to optimized code later: the artifact it caches is Cranelift's.
        baseline_limit: 0,
    })?;
    let function = crate::cache::load_or_compile(&engine, &wasm, kind)?;
    let env = container::container_env(ctx.envs());
    let kind = function.kind();
    let defaults = container::defaults(kind, &config);
    let settings = container::settings(
        &name,
        &defaults,
        &config,
        &env,
        container_memory_limit(),
        ENGINE_HEADROOM,
    )
    .map_err(anyhow::Error::msg)?;
    if !container::serves_http(kind) {
        let output = Output::process();
        return Ok(wafer_node::job::run(&function, ctx.args(), &settings, &output).await);
    }
    // Written by tasks of their own: a log reader that does not keep up costs lines, not requests.
    let (output, writers) = Output::process_queued();
    let listen = container::listen_address(&env).map_err(anyhow::Error::msg)?;
    let max_body = defaults.effective(&config).max_request_bytes;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("[wafer] serving on http://{}", listener.local_addr()?);
    let served = Arc::new(Served {
        function,
        settings,
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        output,
        // The container's cgroup enforces its CPU limit here.
        gate: Gate::new(config.max_concurrency, None),
    });
    serve(listener, served, stopped()).await;
    writers.flush(FLUSH).await;
    eprintln!("[wafer] stopped");
    Ok(0)
}

/// The function's wafer config from the image, or `None` when the image has none.
fn read_config(path: &Path) -> anyhow::Result<Option<FunctionConfig>> {
    match std::fs::read(path) {
        Ok(bytes) => container::parse_config(&bytes)
            .map(Some)
            .map_err(anyhow::Error::msg),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The function's wafer config from its wasm layer's annotation, for a wasm OCI artifact (whose root
/// filesystem is empty), or `None` when the layer has none.
fn layer_config(source: &Source) -> anyhow::Result<Option<FunctionConfig>> {
    let Source::Oci([layer, ..]) = source else {
        return Ok(None);
    };
    let annotations = layer.config.annotations().as_ref();
    match annotations.and_then(|a| a.get(wafer_api::oci::CONFIG_ANNOTATION)) {
        Some(json) => container::parse_config(json.as_bytes())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the layer's {}: {e}", wafer_api::oci::CONFIG_ANNOTATION)),
        None => Ok(None),
    }
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

/// Resolves when the task is asked to stop: gracefully on SIGTERM or SIGINT. As the container's first
/// process, the shim would otherwise ignore SIGTERM.
async fn stopped() -> Stop {
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
            Stop::Graceful
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("[wafer] cannot watch for signals ({e}); stop the task with SIGKILL");
            std::future::pending().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_config_is_the_default_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wafer.json");
        assert_eq!(read_config(&path).unwrap(), None, "absent");
        std::fs::write(&path, r#"{"no_such_field": 1}"#).unwrap();
        assert!(read_config(&path).is_err());
    }
}
