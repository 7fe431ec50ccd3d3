//! The wafer server: the management API and the HTTP trigger over the engine and the stores.
//!
//! - `routes/` — everything HTTP, and the only part that knows axum: the router, its middleware, and one
//!   file of handlers per area (functions, invoke, executions, state, operations, the API description);
//! - `invoke/` — the invocation core every trigger goes through (HTTP, the API, the queue, cron and
//!   in-process calls): checks, admission, a fresh instance, and the execution record;
//! - `app/` — shared state and its start (`mod.rs`), the live registry's build-up (`live.rs`), the
//!   operations that change what is deployed (`changes.rs`), and keeping in step with the other nodes
//!   of a shared database (`cluster.rs`); `registry.rs` — live functions by name and route, read on
//!   every request;
//! - `journal.rs` — the batched writer of execution records; `rollups.rs` — finished attempts counted
//!   per function and minute, flushed to the store; `queue.rs` — async invocations, their
//!   workers, leases, retries and callbacks; `schedule.rs` — the cron trigger;
//! - `platform.rs` — the engine's [`wafer_engine::Platform`]: key-value stores and function-to-function
//!   calls;
//! - `admission.rs` — per-function concurrency and the server-wide instance cap; `auth/` —
//!   who a request comes from (the token, API keys with scopes, a loopback client) and what they may
//!   do, and the same-origin rule for writes; `metrics.rs` — the Prometheus counters;
//! - `validate.rs` — checks on names and configs, and the paths wafer reserves; `error.rs` — the one
//!   error enum, mapped to status and code in one place;
//! - `containers/` — container functions: the containerd connection, image imports, and each
//!   version's runner with its warm pool;
//! - `config.rs` — the typed configuration the binary builds.

mod admission;
mod app;
mod auth;
mod code;
mod config;
mod containers;
mod error;
mod invoke;
mod journal;
mod lambda;
mod metrics;
mod platform;
mod queue;
mod registry;
mod rollups;
mod routes;
mod schedule;
mod validate;

pub use app::{App, StartError};
pub use code::CodeBudget;
pub use config::{
    ConsoleListen, Database, Defaults, ExecutionSettings, ServerConfig, DEFAULT_GRACE,
};
pub use containers::{ContainerSettings, DEFAULT_SOCKET as DEFAULT_CONTAINERD_SOCKET};
pub use error::Error;
pub use routes::router;
pub use wafer_container::pull::Registries;

use std::future::Future;
use std::net::SocketAddr;

/// Binds `config.listen` (and the console's listener), then opens the data directory, and serves
/// until `shutdown` resolves.
///
/// Logs one line, `wafer listening on http://ADDR`, once it accepts connections, and one for the
/// console, `console on http://ADDR/ui/`.
///
/// Once `shutdown` resolves it drains: the listeners accept no more connections and the queue claims
/// no more work; requests in flight and running async attempts have `config.grace` to finish, and the
/// claims of attempts still running then go back to the queue (see [`queue::stop`]). The execution
/// journal is flushed and the node leaves its cluster before this returns.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listen = config.listen;
    let public = |addr: SocketAddr| !addr.ip().to_canonical().is_loopback();
    let console_public = matches!(config.console, ConsoleListen::At(at) if public(at));
    if config.token.is_none() && (public(listen) || console_public) {
        tracing::info!(
            "no token: clients on this host may do everything, and clients on other hosts need an API \
             key for the management API and private functions (`wafer keys create`)"
        );
    }
    let console_at = config.console;
    // The listeners are bound before the node opens its store and starts its background work, so a
    // taken address stops the start with that one error. Connections made meanwhile wait in the
    // backlog until the node serves.
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|reason| StartError::Bind { addr, reason })
    };
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    let console = match console_at {
        ConsoleListen::Off => None,
        ConsoleListen::At(at) => Some(bind(at).await?),
        ConsoleListen::Beside => {
            let next = SocketAddr::new(addr.ip(), addr.port().saturating_add(1));
            let beside = match addr.port() {
                0 | u16::MAX => None,
                _ => tokio::net::TcpListener::bind(next).await.ok(),
            };
            match beside {
                Some(listener) => Some(listener),
                None => Some(bind(SocketAddr::new(addr.ip(), 0)).await?),
            }
        }
    };
    let app = App::open(config).await?;
    app.listening_on(addr);
    tracing::info!(node = %app.node, "wafer listening on http://{addr}");
    if let Some(console) = &console {
        let at = console.local_addr().map_err(StartError::Serve)?;
        app.console_on(at);
        tracing::info!("console on http://{at}/ui/");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let main = routes::serve(
        listener,
        routes::router(app.clone()),
        until_stopped(stopped.clone()),
    );
    let console = async {
        match console {
            Some(listener) => {
                let router = routes::console_router(app.clone());
                routes::serve(listener, router, until_stopped(stopped.clone())).await
            }
            None => Ok(()),
        }
    };
    let served = async { tokio::join!(main, console) };
    tokio::pin!(served);
    let ended_early = tokio::select! {
        results = &mut served => Some(results),
        _ = until_stopped(stopped.clone()) => None,
    };
    // Stopping: the listeners accept no more, the queue claims no more; requests in flight and running
    // attempts have the grace period to finish.
    let grace = app.config.grace;
    tracing::info!("stopping: requests in flight and running attempts have {grace:?} to finish");
    let deadline = tokio::time::Instant::now() + grace;
    let http = async {
        match ended_early {
            Some(results) => Some(results),
            None => tokio::time::timeout_at(deadline, &mut served).await.ok(),
        }
    };
    let (results, queue) = tokio::join!(http, queue::stop(&app, deadline));
    if results.is_none() {
        tracing::warn!("requests still in flight after {grace:?} were cut off");
    }
    if let Err(e) = app.journal.flush().await {
        tracing::error!("cannot flush the execution journal: {e}");
    }
    app.leave().await;
    tracing::info!(
        attempts = queue.running,
        released = queue.released,
        "stopped"
    );
    let (served, console_served) = results.unwrap_or((Ok(()), Ok(())));
    served.and(console_served).map_err(StartError::Serve)
}
