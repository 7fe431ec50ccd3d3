//! The HTTP trigger: `ANY /fn/{name}[/…]`, the routes functions are mounted at, and (as Layotto routes
//! them) any other path with an `id` header naming a proxy-wasm function.
//!
//! Under `/fn/{name}` an http component sees the path below the mount (`/fn/hello/x` arrives as `/x`, with
//! `x-forwarded-prefix: /fn/hello`); under one of its own routes it sees the path whole. A WAGI function gets
//! the mount as `SCRIPT_NAME` and the rest as `PATH_INFO` either way. A command function answers any method
//! with its job result as JSON.
//!
//! Every call gets an execution record (`x-wafer-execution-id` on the response names it), written through
//! the journal once the instance is gone; [`execute`] is the step the async queue shares.

use crate::admission::Permit;
use crate::app::App;
use crate::error::ApiError;
use crate::journal;
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
use wafer_api::{CommandOutput, ExecutionStatus, Kind, Trigger};
use wafer_engine::{Mount, Tracer};
use wafer_store::{Attempt, NewExecution, Write};

/// The header on a command function's job reply, so clients know to read it as exit code and output.
pub const KIND_HEADER: &str = "x-wafer-kind";

/// `ANY /fn/{name}`.
#[utoipa::path(method(get, post, put, delete, patch), path = "/fn/{name}", tag = "invoke",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, description = "The function's response (a command answers with CommandOutput)"),
        (status = 404, body = wafer_api::ErrorBody)))]
pub async fn function_root(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    by_name(&app, &name, request).await
}

/// `ANY /fn/{name}/{*rest}`.
#[utoipa::path(method(get, post, put, delete, patch), path = "/fn/{name}/{rest}", tag = "invoke",
    params(("name" = String, Path, description = "The function's name"),
        ("rest" = String, Path, description = "The path the function sees")),
    responses((status = 200, description = "The function's response"),
        (status = 404, body = wafer_api::ErrorBody)))]
pub async fn function_path(
    State(app): State<Arc<App>>,
    Path((name, _rest)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    by_name(&app, &name, request).await
}

async fn by_name(app: &Arc<App>, name: &str, request: Request) -> Result<Response, ApiError> {
    let entry = app
        .registry
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("function `{name}` does not exist")))?;
    let mount = Mount {
        prefix: format!("/fn/{name}"),
        strip_prefix: true,
        client: client_addr(&request),
    };
    call(app, &entry, mount, request, Trigger::Http).await
}

/// The request header that routes a request to the proxy-wasm function with that id, as in Layotto.
pub const ID_HEADER: &str = "id";

/// Every path nothing else matched: the proxy-wasm function its `id` header names, a function's route,
/// or 404.
pub async fn routed(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let id = request
        .headers()
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(entry) = match id {
        Some(id) => app.by_proxy_id(&id).await,
        None => None,
    } {
        let mount = Mount {
            prefix: String::new(),
            strip_prefix: true,
            client: client_addr(&request),
        };
        return call(&app, &entry, mount, request, Trigger::Http).await;
    }
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
    call(&app, &entry, mount, request, Trigger::Http).await
}

/// The header naming the execution record of a call.
pub const EXECUTION_HEADER: &str = "x-wafer-execution-id";

/// What a function answered.
pub enum Answer {
    /// An http or wagi response, with the admission permit its body holds until it is sent.
    Http(http::Response<wafer_engine::ResponseBody>, Permit),
    /// A command's job result.
    Command(CommandOutput),
}

impl Answer {
    /// The HTTP status the caller sees.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Http(response, _) => response.status().as_u16(),
            Answer::Command(_) => 200,
        }
    }
}

/// Calls a live function with a request, synchronously: within its body cap and concurrency limits, with
/// an execution record (kept once the instance is gone) and metrics.
pub async fn call(
    app: &Arc<App>,
    entry: &Arc<Entry>,
    mount: Mount,
    request: Request,
    trigger: Trigger,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let started_at = journal::now_ms();
    let id = journal::new_id();
    let (tracer, trace) = Tracer::channel();
    let result = async {
        if entry.private {
            crate::auth::check(app, &request)?;
        }
        let (parts, body) = request.into_parts();
        let body = read_body(body, entry.max_request_bytes, "the request body").await?;
        execute(app, entry, parts, body, &mount, &id, tracer).await
    }
    .await;
    let status = match &result {
        Ok(answer) => answer.status(),
        Err(e) => e.status().as_u16(),
    };
    app.metrics.invocation(
        &entry.settings.name,
        entry.kind.as_str(),
        status,
        started.elapsed(),
    );
    let (exit_code, output) = match &result {
        Ok(Answer::Command(output)) => (
            Some(output.exit_code),
            Some(output.stdout.clone().into_bytes()),
        ),
        _ => (None, None),
    };
    let attempt = Attempt {
        status: Some(if succeeded(status, exit_code) {
            ExecutionStatus::Succeeded
        } else {
            ExecutionStatus::Failed
        }),
        version: entry.version,
        started_at,
        http_status: Some(status),
        exit_code,
        error: result.as_ref().err().map(ApiError::describe),
        ..Attempt::default()
    };
    tokio::spawn(record_sync(
        app.clone(),
        entry.clone(),
        id.clone(),
        trigger,
        attempt,
        output,
        started,
        trace,
    ));
    let mut response = match result {
        Ok(Answer::Command(output)) => {
            ([(KIND_HEADER, Kind::Command.as_str())], Json(output)).into_response()
        }
        // The instance may still be streaming the body: keep its slots until the body is done.
        Ok(Answer::Http(response, permit)) => response.map(|body| {
            Body::new(body.map_frame(move |frame| {
                let _held = &permit;
                frame
            }))
        }),
        Err(e) => e.into_response(),
    };
    if let Ok(value) = http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(EXECUTION_HEADER, value);
    }
    Ok(response)
}

/// Stores a sync execution's record once its instance is gone and its trace is in.
#[allow(clippy::too_many_arguments)]
async fn record_sync(
    app: Arc<App>,
    entry: Arc<Entry>,
    id: String,
    trigger: Trigger,
    mut attempt: Attempt,
    output: Option<Vec<u8>>,
    started: Instant,
    trace: tokio::sync::oneshot::Receiver<wafer_engine::Trace>,
) {
    let trace = trace.await.ok();
    journal::close_attempt(
        &mut attempt,
        started,
        trace.as_ref(),
        output,
        &app.config.executions,
    );
    app.journal.record(Write::Insert(NewExecution {
        id,
        function: entry.settings.name.clone(),
        version: entry.version,
        trigger,
        max_attempts: 1,
        queued_at: attempt.started_at,
        request: None,
        body: Vec::new(),
        callback_url: None,
        attempt: Some(attempt),
    }));
}

/// Whether an answer counts as success: a 1xx–3xx status, and exit code 0 for a command.
pub fn succeeded(status: u16, exit_code: Option<i32>) -> bool {
    status < 400 && exit_code.unwrap_or(0) == 0
}

/// Runs a live function on a request whose body has been read: admission, then a fresh instance. The
/// guest sees the execution id in the `x-wafer-execution-id` request header.
pub async fn execute(
    app: &App,
    entry: &Entry,
    mut parts: http::request::Parts,
    body: Bytes,
    mount: &Mount,
    id: &str,
    tracer: Tracer,
) -> Result<Answer, ApiError> {
    let permit = app
        .admission
        .admit(&entry.settings.name, entry.slots.as_ref())
        .await?;
    let function = app.function(entry).await?;
    let cold = entry.cold.swap(false, std::sync::atomic::Ordering::Relaxed);
    app.metrics.start(&entry.settings.name, cold);
    if function.kind() == Kind::Command {
        let output = function
            .run_command(body, &[], &entry.settings, tracer)
            .await?;
        return Ok(Answer::Command(output));
    }
    if let Ok(value) = http::HeaderValue::from_str(id) {
        parts.headers.insert(EXECUTION_HEADER, value);
    }
    let request = http::Request::from_parts(parts, body);
    let response = function
        .serve_http(request, mount, &entry.settings, tracer)
        .await?;
    Ok(Answer::Http(response, permit))
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
