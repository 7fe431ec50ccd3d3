//! Everything HTTP, and the only part of the server that knows axum: the router, its middleware (the
//! request-head caps; the management API's guard, `guard.rs`: credentials, scopes, the same-origin
//! rule for writes and the audit log), reading bodies within their caps, and errors as responses.
//! Handlers turn a request into a call of the server's core and its result into a response.
//!
//! - `functions.rs` — deploy, list, get, delete, versions and rollback under `/v1/functions`; `apps.rs`
//!   — several functions deployed as one;
//! - `invoke.rs` — the HTTP trigger (`/fn/{name}`, function routes, Layotto's `id` header) and the API's
//!   invoke, sync or async;
//! - `executions.rs` — execution records, logs (listed or followed) and stats;
//! - `state.rs` — key-value stores and function configuration;
//! - `keys.rs` — API keys and the audit log; `guard.rs` — who may call the management API, and the
//!   audit log's writes;
//! - `ops.rs` — `/healthz` and `/metrics`; `openapi.rs` — `/api/openapi.json` and `/api/docs`;
//! - `console.rs` — the web console's page and assets, on a listener of its own.

mod aliases;
mod apps;
mod console;
mod executions;
mod extract;
mod functions;
mod guard;
mod invoke;
mod keys;
mod lambda;
mod letters;
mod openapi;
mod ops;
mod state;

use crate::app::App;
use crate::error::Error;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The longest request target accepted, path and query (414 past it).
const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes accepted, names and values together (431 past it).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The HTTP routes of a wafer server's main listener: the API, its description, functions' triggers
/// (`/fn` and their routes), and `/ui`, which sends a browser to the console's own listener.
pub fn router(app: Arc<App>) -> Router {
    api(&app)
        .route("/fn/{name}", any(invoke::function_root))
        // A site under the gateway is reached at its root with the slash (its relative links need it).
        .route("/fn/{name}/", any(invoke::function_root))
        .route("/fn/{name}/{*rest}", any(invoke::function_path))
        .route("/ui", get(console::elsewhere))
        .route("/ui/", get(console::elsewhere))
        .route("/2015-03-31/functions", get(lambda::list))
        .route("/2015-03-31/functions/{name}", get(lambda::get))
        .route(
            "/2015-03-31/functions/{name}/invocations",
            axum::routing::post(lambda::invoke),
        )
        .fallback(invoke::routed)
        .layer(axum::middleware::from_fn(request_head))
        .with_state(app)
}

/// The HTTP routes of the console's listener: the console, the API it calls and its description —
/// and no function's page, so nothing a guest serves shares the console's origin.
pub fn console_router(app: Arc<App>) -> Router {
    api(&app)
        .merge(console::routes())
        .fallback(|| async { Error::NotFound("nothing here: the console is at /ui/".into()) })
        .layer(axum::middleware::from_fn(request_head))
        .with_state(app)
}

/// The management API behind its guard (`guard.rs`), `/healthz`, and the API's description.
fn api(app: &Arc<App>) -> Router<Arc<App>> {
    let module_limit = app.config.defaults.max_module_bytes;
    let (management, document) = openapi::management().split_for_parts();
    let document = openapi::render(&document);
    let management = management
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            guard::authorize,
        ))
        .layer(DefaultBodyLimit::max(module_limit));
    management
        .route("/healthz", get(ops::healthz))
        .route(
            "/api/openapi.json",
            get(openapi::openapi_json).layer(Extension(document)),
        )
        .route("/api/docs", get(openapi::docs))
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without TCP_NODELAY, a response whose body follows its head in a second write waits for the
    // client's delayed ACK (40 ms on Linux) whenever the head is still unacknowledged.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
        }
    });
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.response().map(Body::from)
    }
}

/// Middleware: refuses requests whose target or headers are over the caps, before any routing.
async fn request_head(request: Request, next: Next) -> Result<Response, Error> {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Err(Error::UriTooLong(format!(
            "the request target is {uri_bytes} bytes; the limit is {MAX_URI_BYTES}"
        )));
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(Error::HeadersTooLarge(format!(
            "the request headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    Ok(next.run(request).await)
}

/// Reads a whole body, refusing it with 413 past `limit` bytes.
async fn read_body(body: Body, limit: usize, what: &str) -> Result<Bytes, Error> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_length_limit(&*e) => Err(crate::invoke::too_large(what, limit)),
        Err(e) => Err(Error::InvalidRequest(format!("cannot read {what}: {e}"))),
    }
}

/// Whether an error, or any error it wraps, is a body length limit.
fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The client's address, when the server recorded it.
fn client_addr(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}
