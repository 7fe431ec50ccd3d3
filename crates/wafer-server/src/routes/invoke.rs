//! The HTTP trigger — `ANY /fn/{name}[/…]`, the routes functions are mounted at, and (as Layotto routes
//! them) any other path with an `id` header naming a proxy-wasm function — and the management API's
//! `POST /v1/functions/{name}/invoke`, sync or async.
//!
//! Under `/fn/{name}` an http component sees the path below the mount (`/fn/hello/x` arrives as `/x`, with
//! `x-forwarded-prefix: /fn/hello`); under one of its own routes it sees the path whole. A WAGI function gets
//! the mount as `SCRIPT_NAME` and the rest as `PATH_INFO` either way. A command function answers any method
//! with its job result as JSON.
//!
//! Each handler only finds the function and the mount and reads the body within the function's cap; the
//! invocation core ([`crate::invoke`]) does the rest, and every call gets an execution record
//! (`x-wafer-execution-id` on the response names it).

use super::extract::{Path, Query};
use super::{client_addr, read_body};
use crate::app::{App, Target};
use crate::error::Error;
use crate::invoke::{self, Invocation};
use crate::queue;
use crate::registry::Entry;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{AsyncAccepted, CommandOutput, ErrorBody, Trigger};
use wafer_engine::Mount;

/// The request header that routes a request to the proxy-wasm function with that id, as in Layotto.
const ID_HEADER: &str = "id";

/// What a call may answer besides what wafer itself says: the function's own status and body.
const GUEST_ANSWER: &str = "The function's own answer, with whatever status it chose; or wafer's \
    ErrorBody when the function could not answer (`trap`, `function_failed`, `memory_limit`, `timeout`…)";

/// `ANY /fn/{name}`.
#[utoipa::path(method(get, post, put, delete, patch), path = "/fn/{name}", operation_id = "callFunction", tag = "invoke",
    params(("name" = String, Path, description = "The function's name, or `NAME:ALIAS` or \
        `NAME:VERSION` to call that instead of `live`")),
    responses((status = 200, description = "The function's response (a command answers with CommandOutput)",
            content_type = "*/*"),
        (status = 404, body = wafer_api::ErrorBody, description = "No such function, alias or version"),
        (status = "default", description = GUEST_ANSWER, content_type = "*/*")))]
pub async fn function_root(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, Error> {
    by_name(&app, &name, request).await
}

/// `ANY /fn/{name}/{*rest}`.
#[utoipa::path(method(get, post, put, delete, patch), path = "/fn/{name}/{rest}", operation_id = "callFunctionPath", tag = "invoke",
    params(("name" = String, Path, description = "The function's name, or `NAME:ALIAS` or \
        `NAME:VERSION`"),
        ("rest" = String, Path, description = "The path the function sees")),
    responses((status = 200, description = "The function's response", content_type = "*/*"),
        (status = 404, body = wafer_api::ErrorBody, description = "No such function, alias or version"),
        (status = "default", description = GUEST_ANSWER, content_type = "*/*")))]
pub async fn function_path(
    State(app): State<Arc<App>>,
    Path((name, _rest)): Path<(String, String)>,
    request: Request,
) -> Result<Response, Error> {
    by_name(&app, &name, request).await
}

/// A call of `/fn/{target}`: the function `target` names, at the alias or version after its `:`.
async fn by_name(app: &Arc<App>, target: &str, request: Request) -> Result<Response, Error> {
    let Target { name, qualifier } = Target::parse(target);
    let live = app
        .named(name)
        .await
        .ok_or_else(|| Error::unknown_function(name))?;
    let entry = app.version_for(live, qualifier).await?;
    let mount = Mount {
        prefix: format!("/fn/{target}"),
        strip_prefix: true,
        client: client_addr(&request),
    };
    Ok(call(app, entry, mount, request, Trigger::Http).await)
}

/// Every path nothing else matched: the proxy-wasm function its `id` header names, a function's route,
/// or 404.
pub async fn routed(State(app): State<Arc<App>>, request: Request) -> Result<Response, Error> {
    let id = request
        .headers()
        .get(ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(live) = match id {
        Some(id) => app.by_proxy_id(&id).await,
        None => None,
    } {
        let entry = app.version_for(live, None).await?;
        let mount = Mount {
            prefix: String::new(),
            strip_prefix: true,
            client: client_addr(&request),
        };
        return Ok(call(&app, entry, mount, request, Trigger::Http).await);
    }
    let Some((route, live)) = app.routed(request.uri().path()).await else {
        return Err(Error::NotFound(format!(
            "no function is mounted at {}",
            request.uri().path()
        )));
    };
    let entry = app.version_for(live, None).await?;
    let mount = Mount {
        prefix: route,
        strip_prefix: false,
        client: client_addr(&request),
    };
    Ok(call(&app, entry, mount, request, Trigger::Http).await)
}

/// How an invocation through the API runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvokeQuery {
    /// Store the request and answer 202 at once; a queue worker runs it, with retries.
    #[serde(default, rename = "async")]
    run_async: bool,
    /// With `async=true`: where to POST the finished execution (its host must be allowed).
    callback_url: Option<String>,
    /// The alias or version to call instead of `live` (an async call resolves it when it runs).
    qualifier: Option<String>,
}

/// `POST /v1/functions/{name}/invoke`: calls the live version, or the one `qualifier` names. Synchronously, a command answers with its
/// exit code and output as JSON and an http or wagi function with its own response; with `async=true`
/// the request is stored and 202 names the execution to poll.
#[utoipa::path(post, path = "/v1/functions/{name}/invoke", operation_id = "invoke", tag = "invoke",
    params(("name" = String, Path, description = "The function's name"), InvokeQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "With `async=true`: a submission \
            with the same key (1 to 255 visible ASCII characters) for this function within 24 hours is \
            the same execution")),
    request_body(description = "Handed to the function: the HTTP request body, or a command's stdin",
        content((Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The function's own response, or a command's CommandOutput; \
            `x-wafer-version` names the version that answered",
         content((CommandOutput = "application/json"), (Vec<u8> = "*/*"))),
        (status = 202, body = AsyncAccepted, description = "Queued (or, for an idempotency key seen \
            within a day, the first submission's execution)",
         links(("execution" = (operation_id = "getExecution",
             parameters(("id" = "$response.body#/execution_id")),
             description = "The execution's record: its status, and once it ends its answer")))),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such function, alias or version"),
        (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The idempotency key came with another request"),
        (status = 429, body = ErrorBody, description = "At the function's concurrency limit, or \
            `max_queued` executions wait (`queue_full`)"),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody),
        (status = "default", description = GUEST_ANSWER, content_type = "*/*")))]
pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    request: Request,
) -> Result<Response, Error> {
    let live = app
        .named(&name)
        .await
        .ok_or_else(|| Error::unknown_function(&name))?;
    let qualifier = query.qualifier.as_deref();
    let entry = app.version_for(live, qualifier).await?;
    if query.run_async {
        let (parts, body) = request.into_parts();
        let body = read_body(body, entry.max_request_bytes, "the request body").await?;
        let submission = queue::Submission {
            callback_url: query.callback_url,
            qualifier: query.qualifier,
        };
        let accepted = queue::submit(&app, &entry, &parts, body, submission).await?;
        return Ok((StatusCode::ACCEPTED, Json(accepted)).into_response());
    }
    if query.callback_url.is_some() {
        return Err(Error::InvalidRequest(
            "callback_url needs async=true".into(),
        ));
    }
    let mount = Mount {
        prefix: format!("/v1/functions/{name}/invoke"),
        strip_prefix: true,
        client: client_addr(&request),
    };
    Ok(call(&app, entry, mount, request, Trigger::Api).await)
}

/// A synchronous call of `entry` through the invocation core, with the body read within the function's
/// cap (a body past it is a call refused with 413, and recorded).
async fn call(
    app: &Arc<App>,
    entry: Arc<Entry>,
    mount: Mount,
    request: Request,
    trigger: Trigger,
) -> Response {
    let (parts, body) = request.into_parts();
    let invocation = match read_body(body, entry.max_request_bytes, "the request body").await {
        Ok(body) => Invocation::new(entry, parts, body, mount, trigger),
        Err(e) => Invocation::unread(entry, parts, e, mount, trigger),
    };
    let version = invocation.entry.version;
    // Boxed: the invocation's future holds the engine's whole state machine, kilobytes that each
    // future above it (this one, the handlers', axum's and tower's) would otherwise copy again as it
    // is moved. Boxed here it is copied once: 6% fewer instructions per WAGI request, counted. (Boxing
    // this whole function instead saves only 4%: its own state is copied with it.)
    let (id, answer) = Box::pin(invoke::call(app, invocation)).await;
    invoke::respond(&id, version, answer).map(Body::new)
}
