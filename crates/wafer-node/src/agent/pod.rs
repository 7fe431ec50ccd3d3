//! One container's function in the agent, for as long as its shim's connection lasts.
//!
//! The shim sends `Load` with the wasm and the container's output descriptors; the agent reads the
//! binary (within its cap), takes the compiled module ([`Agent::module`]), derives the settings by the
//! same rule as a function in its own process (`crate::function`), with the container's memory limit
//! capping every instance and its CPU limit and `max_concurrency` gating its requests
//! ([`crate::gate`]), and answers `Loaded`. `Start` runs it: a command once, to its exit code; an
//! http function on the listener the shim bound inside the container's network namespace. A signal or
//! the end of the command ends it, and `Exited` says with which code, once its output is written out.
//! The connection closing (the shim gone, or the container deleted) stops it at once and unloads it.
//!
//! A failure here is the container's alone: a bad binary, a trap, a guest that spins until its
//! deadline, a reader that stops draining its logs — each ends or slows only this function.

use super::Agent;
use crate::function::{self, serves_http};
use crate::gate::Gate;
use crate::output::{Output, Writers, FLUSH};
use crate::protocol::{Connection, Load, Reply, Request};
use crate::serve::{serve, Served, Stop};
use std::io::Read as _;
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use wafer_api::oci::sha256_hex;
use wafer_engine::{Function, Settings};

/// A function loaded and not yet started.
struct Loaded {
    function: Function,
    settings: Settings,
    args: Vec<String>,
    max_body: usize,
    gate: Gate,
    output: Output,
    writers: Writers,
}

/// Serves one shim's connection: load, start, signals, and the exit.
pub async fn run(agent: Arc<Agent>, connection: Connection) {
    let connection = Arc::new(connection);
    let mut requests = read_requests(connection.clone());
    let (load, fds) = match requests.recv().await {
        Some((Request::Load(load), fds)) => (*load, fds),
        Some(_) => {
            let message = "expected a load request first".to_string();
            let _ = connection.send(&Reply::Failed { message }, &[]).await;
            return;
        }
        // A shim checking that the agent answers.
        None => return,
    };
    let id = load.id.clone();
    let (lease, loaded) = match load_function(&agent, load, fds).await {
        Ok(loaded) => loaded,
        Err(message) => {
            tracing::warn!(container = %id, "load failed: {message}");
            let _ = connection.send(&Reply::Failed { message }, &[]).await;
            return;
        }
    };
    let kind = loaded.function.kind();
    if connection.send(&Reply::Loaded { kind }, &[]).await.is_err() {
        return;
    }
    agent.loaded.fetch_add(1, Ordering::Relaxed);
    tracing::info!(container = %id, %kind, "loaded");
    let code = lifecycle(&connection, &mut requests, loaded).await;
    agent.loaded.fetch_sub(1, Ordering::Relaxed);
    drop(lease);
    if let Some(code) = code {
        tracing::info!(container = %id, code, "exited");
        let _ = connection.send(&Reply::Exited { code }, &[]).await;
        // Wait for the shim to let go, so the function's end is the connection's.
        while requests.recv().await.is_some() {}
    } else {
        tracing::info!(container = %id, "unloaded: the shim is gone");
    }
}

/// The requests of the connection, read by a task of their own (a frame read is never cut short), until
/// it closes or sends something unreadable.
fn read_requests(connection: Arc<Connection>) -> mpsc::Receiver<(Request, Vec<OwnedFd>)> {
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            match connection.receive::<Request>().await {
                Ok(Some(request)) => {
                    if sender.send(request).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("a shim's connection failed: {e}");
                    return;
                }
            }
        }
    });
    receiver
}

/// Reads the binary, compiles it (or shares its compiled code) and derives the function's settings.
async fn load_function(
    agent: &Arc<Agent>,
    load: Load,
    fds: Vec<OwnedFd>,
) -> Result<(super::ModuleLease, Loaded), String> {
    let expected = 1 + usize::from(load.stdout) + usize::from(load.stderr);
    if fds.len() != expected {
        return Err(format!(
            "expected {expected} descriptors with the load request, got {}",
            fds.len()
        ));
    }
    let mut fds = fds.into_iter();
    let wasm_fd = fds.next().ok_or("no wasm descriptor")?;
    let stdout = if load.stdout { fds.next() } else { None };
    let stderr = if load.stderr { fds.next() } else { None };
    let cap = agent.options.max_module;
    let wasm = tokio::task::spawn_blocking(move || read_capped(wasm_fd, cap))
        .await
        .map_err(|e| e.to_string())??;
    let digest = sha256_hex(&wasm);
    let config = load.config.clone().unwrap_or_default();
    let kind = function::kind_of(load.config.as_ref(), &wasm);
    let metered = function::meters_fuel(&config);
    let (lease, compiled) = agent.module(Arc::new(wasm), digest, kind, metered).await;
    let function = compiled?.with_own_instances();
    // The engine refuses kind `container` at compile: a loaded function is always a wasm kind.
    let kind = function.kind();
    let env = function::container_env(&load.env);
    let defaults = function::defaults(kind, &config);
    let settings = function::settings(&load.name, &defaults, &config, &env, load.memory_limit, 0)?;
    let max_body = defaults.effective(&config).max_request_bytes;
    let (output, writers) = Output::to_descriptors(stdout, stderr);
    Ok((
        lease,
        Loaded {
            function,
            settings,
            args: load.args,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
            gate: Gate::new(config.max_concurrency, load.cpu_limit),
            output,
            writers,
        },
    ))
}

/// Reads the whole file behind `fd`, refusing one over `cap` bytes.
fn read_capped(fd: OwnedFd, cap: u64) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(cap.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the wasm binary: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!(
            "the wasm binary is over the agent's {cap}-byte limit"
        ));
    }
    Ok(bytes)
}

/// Waits for the start, runs the function until it ends or is stopped, and returns its exit code, or
/// `None` when the shim went away (nobody to tell).
async fn lifecycle(
    connection: &Connection,
    requests: &mut mpsc::Receiver<(Request, Vec<OwnedFd>)>,
    loaded: Loaded,
) -> Option<u32> {
    let listener = loop {
        match requests.recv().await? {
            (Request::Start, fds) => break fds.into_iter().next(),
            (Request::Kill { signal }, _) => return Some(128 + signal),
            (Request::Load(_), _) => {
                let message = "the function is already loaded".to_string();
                connection
                    .send(&Reply::Failed { message }, &[])
                    .await
                    .ok()?;
            }
        }
    };
    let (stop, stopped) = watch::channel(None::<u32>);
    let Loaded {
        function,
        settings,
        args,
        max_body,
        gate,
        output,
        writers,
    } = loaded;
    let mut running = if serves_http(function.kind()) {
        let Some(listener) = listener.and_then(|fd| tcp_listener(fd).ok()) else {
            let message = "a function serving HTTP needs its listening socket".to_string();
            connection
                .send(&Reply::Failed { message }, &[])
                .await
                .ok()?;
            return Some(1);
        };
        let served = Arc::new(Served {
            function,
            settings,
            max_body,
            output,
            gate,
        });
        tokio::spawn(async move {
            let how = serve(listener, served, stop_signal(stopped)).await;
            match how {
                Stop::Graceful => 0,
                Stop::Now => 137,
            }
        })
    } else {
        let mut stopped = stopped;
        tokio::spawn(async move {
            tokio::select! {
                code = crate::job::run(&function, &args, &settings, &output) => code as u32,
                _ = stopped.wait_for(Option::is_some) => 137,
            }
        })
    };
    connection.send(&Reply::Started, &[]).await.ok()?;
    let mut signalled = None;
    let code = loop {
        tokio::select! {
            ended = &mut running => break ended.unwrap_or(1),
            request = requests.recv() => match request {
                Some((Request::Kill { signal }, _)) => {
                    signalled.get_or_insert(signal);
                    let _ = stop.send(Some(signal));
                }
                Some(_) => {
                    let message = "the function is already started".to_string();
                    connection.send(&Reply::Failed { message }, &[]).await.ok()?;
                }
                None => {
                    running.abort();
                    return None;
                }
            },
        }
    };
    writers.flush(FLUSH).await;
    // A graceful stop ends with 0; anything else a signal ended is 128 + that signal.
    Some(match (code, signalled) {
        (137, Some(signal)) => 128 + signal,
        (code, _) => code,
    })
}

/// Resolves with how serving stops once a signal arrives: SIGTERM and SIGINT gracefully, any other at
/// once.
async fn stop_signal(mut stopped: watch::Receiver<Option<u32>>) -> Stop {
    match stopped.wait_for(Option::is_some).await.map(|s| *s) {
        Ok(Some(signal)) if signal == libc::SIGTERM as u32 || signal == libc::SIGINT as u32 => {
            Stop::Graceful
        }
        _ => Stop::Now,
    }
}

/// The listening socket the shim passed, for tokio.
fn tcp_listener(fd: OwnedFd) -> std::io::Result<tokio::net::TcpListener> {
    let listener = std::net::TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}
