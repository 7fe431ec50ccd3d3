//! The wafer server: one axum app serving the management API and the HTTP trigger over the engine and the
//! store.
//!
//! - `app.rs` — shared state and the operations that change it (deploy, rollback, delete, start-up load);
//! - `registry.rs` — live functions by name and route, read on every request;
//! - `api.rs` — the `/v1` management endpoints; `executions.rs` — execution records, logs and stats;
//!   `trigger.rs` — `/fn/{name}` and function routes; `ops.rs` — `/healthz` and `/metrics`, with
//!   `metrics.rs` recording invocations and compiles; `openapi.rs` — `/api/openapi.json` and `/api/docs`;
//! - `journal.rs` — the batched writer of execution records; `queue.rs` — async invocations, their
//!   workers, retries and callbacks; `schedule.rs` — the cron trigger;
//! - `admission.rs` — per-function concurrency and the server-wide instance cap;
//! - `auth.rs` — the bearer token of the management API and private functions;
//! - `validate.rs` — checks on names and configs; `error.rs` — every failure's status and code, in one place;
//! - `config.rs` — the typed configuration the binary builds.

mod admission;
mod api;
mod app;
mod auth;
mod config;
mod error;
mod executions;
mod journal;
mod metrics;
mod openapi;
mod ops;
mod platform;
mod queue;
mod registry;
mod schedule;
mod state_api;
mod trigger;
mod validate;

pub use app::{App, StartError};
pub use config::{Defaults, ExecutionSettings, ServerConfig};
pub use error::ApiError;

use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get};
use axum::{Extension, Router};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The HTTP routes of a wafer server.
pub fn router(app: Arc<App>) -> Router {
    let module_limit = app.config.defaults.max_module_bytes;
    let (management, document) = openapi::management().split_for_parts();
    let document = openapi::Document(
        document
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
            .into(),
    );
    let management = management
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(module_limit));
    management
        .route("/healthz", get(ops::healthz))
        .route(
            "/api/openapi.json",
            get(openapi::openapi_json).layer(Extension(document)),
        )
        .route("/api/docs", get(openapi::docs))
        .route("/fn/{name}", any(trigger::function_root))
        .route("/fn/{name}/{*rest}", any(trigger::function_path))
        .fallback(trigger::routed)
        .layer(axum::middleware::from_fn(validate::request_head))
        .with_state(app)
}

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
    // Without TCP_NODELAY, a response whose body follows its head in a second write waits for the
    // client's delayed ACK (40 ms on Linux) whenever the head is still unacknowledged.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    tracing::info!("wafer listening on http://{addr}");
    axum::serve(
        listener,
        router(app).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(StartError::Serve)
}
