//! The HTTP trigger: `ANY /fn/{name}[/…]` and the routes functions are mounted at.
//!
//! Under `/fn/{name}` an http component sees the path below the mount (`/fn/hello/x` arrives as `/x`, with
//! `x-forwarded-prefix: /fn/hello`); under one of its own routes it sees the path whole. A WAGI function gets
//! the mount as `SCRIPT_NAME` and the rest as `PATH_INFO` either way. A command function answers any method
//! with its job result as JSON.

use crate::app::App;
use crate::error::ApiError;
use crate::registry::Entry;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use wafer_api::Kind;
use wafer_engine::Mount;

/// The header on a command function's job reply, so clients know to read it as exit code and output.
pub const KIND_HEADER: &str = "x-wafer-kind";

/// `ANY /fn/{name}`.
pub async fn function_root(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    by_name(&app, &name, request).await
}

/// `ANY /fn/{name}/{*rest}`.
pub async fn function_path(
    State(app): State<Arc<App>>,
    Path((name, _rest)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    by_name(&app, &name, request).await
}

async fn by_name(app: &App, name: &str, request: Request) -> Result<Response, ApiError> {
    let entry = app
        .registry
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("function `{name}` does not exist")))?;
    let mount = Mount {
        prefix: format!("/fn/{name}"),
        strip_prefix: true,
        client: client_addr(&request),
    };
    call(app, &entry, mount, request).await
}

/// Every path nothing else matched: a function's route, or 404.
pub async fn routed(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let Some((route, entry)) = app.registry.route(request.uri().path()) else {
        return Err(ApiError::not_found(format!(
            "no function is mounted at {}",
            request.uri().path()
        )));
    };
    let mount = Mount {
        prefix: route,
        strip_prefix: false,
        client: client_addr(&request),
    };
    call(&app, &entry, mount, request).await
}

/// Calls a live function with a request, within its body cap and concurrency limits, and records the
/// call in the metrics.
pub async fn call(
    app: &App,
    entry: &Entry,
    mount: Mount,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let result = run(app, entry, mount, request).await;
    let status = match &result {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    app.metrics.invocation(
        &entry.settings.name,
        entry.function.kind().as_str(),
        status.as_u16(),
        started.elapsed(),
    );
    result
}

async fn run(
    app: &App,
    entry: &Entry,
    mount: Mount,
    request: Request,
) -> Result<Response, ApiError> {
    if entry.private {
        crate::auth::check(app, &request)?;
    }
    let (parts, body) = request.into_parts();
    let body = read_body(body, entry.max_request_bytes, "the request body").await?;
    let permit = app
        .admission
        .admit(&entry.settings.name, entry.slots.as_ref())
        .await?;
    let function = &entry.function;
    if function.kind() == Kind::Command {
        let output = function
            .run_command(body, &[], &entry.settings, wafer_engine::Tracer::discard())
            .await?;
        return Ok(([(KIND_HEADER, Kind::Command.as_str())], Json(output)).into_response());
    }
    let request = http::Request::from_parts(parts, body);
    let response = function
        .serve_http(
            request,
            &mount,
            &entry.settings,
            wafer_engine::Tracer::discard(),
        )
        .await?;
    // The instance may still be streaming the body: keep its slots until the body is done.
    Ok(response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &permit;
            frame
        }))
    }))
}

/// Reads a whole body, refusing it with 413 past `limit` bytes.
pub async fn read_body(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if is_length_limit(&*e) => Err(ApiError::too_large(format!(
            "{what} is larger than the limit of {limit} bytes"
        ))),
        Err(e) => Err(ApiError::bad_request(
            "invalid_request",
            format!("cannot read {what}: {e}"),
        )),
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
pub fn client_addr(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}
