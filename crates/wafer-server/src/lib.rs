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
//! - `admission.rs` — per-function concurrency and the server-wide instance cap; `auth.rs` — the bearer
//!   token of the management API and private functions, and its same-origin rule for writes; `metrics.rs` — the Prometheus counters;
//! - `validate.rs` — checks on names and configs, and the paths wafer reserves; `error.rs` — the one
//!   error enum, mapped to status and code in one place;
//! - `containers/` — container functions: the containerd connection, image imports, and each
//!   version's runner with its warm pool;
//! - `config.rs` — the typed configuration the binary builds.

mod admission;
mod app;
mod auth;
mod config;
mod containers;
mod error;
mod invoke;
mod journal;
mod metrics;
mod platform;
mod queue;
mod registry;
mod rollups;
mod routes;
mod schedule;
mod validate;

pub use app::{App, StartError};
pub use config::{Database, Defaults, ExecutionSettings, ServerConfig};
pub use containers::{ContainerSettings, DEFAULT_SOCKET as DEFAULT_CONTAINERD_SOCKET};
pub use error::Error;
pub use routes::router;
pub use wafer_container::pull::Registries;

use std::future::Future;

/// Opens the data directory, binds `config.listen` and serves until `shutdown` resolves.
///
/// Logs one line, `wafer listening on http://ADDR`, once it accepts connections.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let listen = config.listen;
    if config.token.is_none() && !listen.ip().is_loopback() {
        return Err(StartError::Insecure(listen));
    }
    let app = App::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    app.listening_on(addr);
    tracing::info!(node = %app.node, "wafer listening on http://{addr}");
    let served = routes::serve(listener, app.clone(), shutdown).await;
    app.leave().await;
    served.map_err(StartError::Serve)
}
