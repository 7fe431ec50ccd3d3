//! The `proxy-wasm` ABI (0.2.x, as Layotto's FaaS runs it): a core module exporting
//! `proxy_abi_version_0_2_*` serves an HTTP request through the proxy-wasm HTTP context callbacks.
//!
//! Each request gets a fresh instance, driven the way a proxy drives one filter:
//! 1. `_initialize` (or `_start`, where a Go toolchain runs `main` to register its contexts);
//! 2. root context 1: `proxy_on_context_create(1, 0)`, `proxy_on_vm_start`, `proxy_on_configure`;
//! 3. HTTP context 2: `proxy_on_context_create(2, 1)`, `proxy_on_request_headers`, then
//!    `proxy_on_request_body` when there is a body;
//! 4. `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
//!
//! The function answers with `proxy_send_local_response`, or else with the response headers and body it
//! set (status 200 unless it set `:status`). As Layotto's HTTP front end does, a request without a body
//! hands the guest its query string as the body (`?name=book1` arrives as `name=book1`).
//!
//! Besides the standard host calls (buffers, header maps, properties, logging, time), Layotto's Runtime ABI
//! is provided: `proxy_get_state(store, key)` reads a key-value store granted to the function, and
//! `proxy_invoke_service(id, method, param)` calls another deployed function (by proxy-wasm id or name)
//! with `param` as its request body and returns its response body. A module exporting `proxy_get_id`
//! names itself with it (the id it stores as call data), and is reachable by that id as well as its name.
//! Any other `proxy_*` import links and answers `Unimplemented` (shared data and queues, metrics, HTTP and
//! gRPC callouts, timers), so filters that merely mention them still run.

mod context;
mod host_calls;
mod memory;
mod runtime_abi;

pub(crate) use context::ProxyState;
pub(crate) use host_calls::linker_for;

use super::http::{call_depth, Mount, ResponseBody};
use crate::error::InvokeError;
use crate::host;
use crate::host::platform::CallDepth;
use crate::run::{bounded, Ended};
use crate::settings::Settings;
use crate::trace::{Stream, Trace, Tracer, Usage};
use bytes::Bytes;
use context::ProxyCtx;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use memory::len_i32;
use std::sync::Arc;
use tokio::sync::OnceCell;
use wasmtime::{Instance, InstancePre, Module, Store, Val};
use wasmtime_wasi::I32Exit;

/// The root (plugin) context every instance gets.
const ROOT_CONTEXT: i32 = 1;
/// The HTTP context of the one request an instance serves.
const HTTP_CONTEXT: i32 = 2;

/// `proxy_on_request_headers` and the rest return this to let the request go on.
const ACTION_CONTINUE: i32 = 0;

/// Whether a core module is a proxy-wasm module.
pub(crate) fn is_proxy_wasm(module: &Module) -> bool {
    module
        .exports()
        .any(|e| e.name().starts_with("proxy_abi_version_0_2_") && e.ty().func().is_some())
}

/// A proxy-wasm module, with the id its `proxy_get_id` export gives (read once, on first use).
#[derive(Clone)]
pub(crate) struct ProxyModule {
    pub(crate) pre: InstancePre<ProxyState>,
    id: Arc<OnceCell<Option<String>>>,
}

impl ProxyModule {
    pub(crate) fn new(pre: InstancePre<ProxyState>) -> Self {
        Self {
            pre,
            id: Arc::new(OnceCell::new()),
        }
    }

    /// The id the module gives itself through `proxy_get_id`, if it exports one.
    pub(crate) async fn id(&self, settings: &Settings) -> Result<Option<String>, InvokeError> {
        if self.pre.module().get_export("proxy_get_id").is_none() {
            return Ok(None);
        }
        self.id
            .get_or_try_init(|| async {
                let ctx = ProxyCtx::new(settings, CallDepth::default());
                let (result, _, _, ctx) = run(&self.pre, settings, ctx, Plan::GetId).await;
                result?;
                let id = String::from_utf8_lossy(&ctx.call_data).trim().to_string();
                Ok((!id.is_empty()).then_some(id))
            })
            .await
            .cloned()
    }
}

/// What a run does once the root context is up.
enum Plan {
    /// Calls `proxy_get_id`.
    GetId,
    /// Serves the request in the context's buffers.
    Request,
}

/// Serves one request with a fresh instance.
pub(crate) async fn serve(
    module: &ProxyModule,
    request: Request<Bytes>,
    mount: &Mount,
    settings: &Settings,
    tracer: Tracer,
) -> Result<Response<ResponseBody>, InvokeError> {
    let depth = call_depth(&request);
    let (parts, body) = request.into_parts();
    let mut ctx = ProxyCtx::new(settings, depth);
    let path = match parts.uri.query() {
        Some(query) => format!("{}?{query}", mount.rest(parts.uri.path())),
        None => mount.rest(parts.uri.path()).to_string(),
    };
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    ctx.request_headers = vec![
        (":method".into(), parts.method.to_string()),
        (":path".into(), path.clone()),
        (":authority".into(), authority),
        (":scheme".into(), "http".into()),
    ];
    ctx.request_headers.extend(
        parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))),
    );
    ctx.request_body = if body.is_empty() {
        parts.uri.query().unwrap_or_default().as_bytes().to_vec()
    } else {
        body.to_vec()
    };
    ctx.properties
        .push(("request\0path".into(), path.into_bytes()));
    ctx.properties.push((
        "request\0method".into(),
        parts.method.to_string().into_bytes(),
    ));
    if let Some(client) = mount.client {
        ctx.properties
            .push(("source\0address".into(), client.to_string().into_bytes()));
    }
    let (result, stdio, usage, ctx) = run(&module.pre, settings, ctx, Plan::Request).await;
    let mut trace = Trace::new(
        usage,
        &[
            (Stream::Stdout, &stdio.stdout),
            (Stream::Stderr, &stdio.stderr),
        ],
    );
    let logged = Trace::new(Usage::default(), &[(Stream::Log, &ctx.log)]);
    trace.logs.extend(logged.logs);
    trace.logs_truncated |= logged.logs_truncated;
    tracer.send(trace);
    let paused = result?;
    respond(ctx, paused, settings)
}

/// The HTTP response a finished run gives.
fn respond(
    ctx: ProxyCtx,
    paused: bool,
    settings: &Settings,
) -> Result<Response<ResponseBody>, InvokeError> {
    let (status, headers, body) = match ctx.local {
        Some(local) => (local.status, local.headers, local.body),
        None if paused && ctx.response_body.is_empty() => {
            return Err(InvokeError::Failed(
                "the function paused the request without answering it (see its log)".into(),
            ))
        }
        None => {
            let status = ctx
                .response_headers
                .iter()
                .find(|(k, _)| k == ":status")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(200);
            (status, ctx.response_headers, ctx.response_body)
        }
    };
    if body.len() > settings.limits.response_bytes {
        return Err(InvokeError::BadResponse(format!(
            "the response is larger than the limit of {} bytes",
            settings.limits.response_bytes
        )));
    }
    let status = StatusCode::from_u16(status)
        .map_err(|_| InvokeError::BadResponse(format!("invalid status {status}")))?;
    let mut response = Response::builder().status(status);
    for (name, value) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(InvokeError::BadResponse(format!(
                "invalid response header {name:?}"
            )));
        };
        if name != http::header::CONTENT_LENGTH {
            response = response.header(name, value);
        }
    }
    response
        .body(super::http::full(body))
        .map_err(|e| InvokeError::BadResponse(e.to_string()))
}

/// Instantiates the module, starts its root context and carries out `plan`. Returns whether the last
/// request callback paused, the captured stdio, what the run used, and the context.
async fn run(
    pre: &InstancePre<ProxyState>,
    settings: &Settings,
    ctx: ProxyCtx,
    plan: Plan,
) -> (Result<bool, InvokeError>, host::Stdio, Usage, ProxyCtx) {
    let limits = &settings.limits;
    let args = std::slice::from_ref(&settings.name);
    let (mut builder, stdio) = host::wasi_builder(args, &settings.env, Bytes::new(), settings);
    let state = ProxyState::new(builder.build_p1(), ctx, limits);
    let mut store = Store::new(pre.module().engine(), state);
    let run = bounded(
        &mut store,
        limits,
        async |store| pre.instantiate_async(store).await,
        async |store, instance| {
            start(store, &instance).await?;
            // wafer passes no VM or plugin configuration: both buffers are empty.
            call(store, &instance, "proxy_on_context_create", &[ROOT_CONTEXT, 0]).await?;
            let started = call(store, &instance, "proxy_on_vm_start", &[ROOT_CONTEXT, 0]).await?;
            let configured =
                call(store, &instance, "proxy_on_configure", &[ROOT_CONTEXT, 0]).await?;
            if started == Some(0) || configured == Some(0) {
                return Err(wasmtime::Error::msg(
                    "the module refused to start (proxy_on_vm_start or proxy_on_configure returned false)",
                ));
            }
            match plan {
                Plan::GetId => {
                    call(store, &instance, "proxy_get_id", &[]).await?;
                    Ok(false)
                }
                Plan::Request => request(store, &instance).await,
            }
        },
    )
    .await;
    let result = run.ended.and_then(|ended| match ended {
        Ended::Returned(paused) => Ok(paused),
        Ended::Exited(code) => Err(InvokeError::Failed(format!(
            "the module exited with code {code}"
        ))),
    });
    (result, stdio, run.usage, store.into_data().ctx)
}

/// Runs the module's initialisation: `_initialize`, or `_start` (which may exit with code 0).
async fn start(store: &mut Store<ProxyState>, instance: &Instance) -> wasmtime::Result<()> {
    for entry in ["_initialize", "_start"] {
        if instance.get_func(&mut *store, entry).is_some() {
            return match call(store, instance, entry, &[]).await {
                Err(e) if matches!(e.downcast_ref::<I32Exit>(), Some(I32Exit(0))) => Ok(()),
                other => other.map(|_| ()),
            };
        }
    }
    Ok(())
}

/// The request callbacks, then the end of the stream. Returns whether the last request callback paused.
async fn request(store: &mut Store<ProxyState>, instance: &Instance) -> wasmtime::Result<bool> {
    let ctx = &store.data().ctx;
    let (headers, body_len) = (ctx.request_headers.len(), ctx.request_body.len());
    let has_body = body_len > 0;
    call(
        &mut *store,
        instance,
        "proxy_on_context_create",
        &[HTTP_CONTEXT, ROOT_CONTEXT],
    )
    .await?;
    let mut action = call(
        &mut *store,
        instance,
        "proxy_on_request_headers",
        &[HTTP_CONTEXT, len_i32(headers), i32::from(!has_body)],
    )
    .await?;
    if has_body && store.data().ctx.local.is_none() {
        action = call(
            &mut *store,
            instance,
            "proxy_on_request_body",
            &[HTTP_CONTEXT, len_i32(body_len), 1],
        )
        .await?;
    }
    for done in ["proxy_on_done", "proxy_on_log", "proxy_on_delete"] {
        call(&mut *store, instance, done, &[HTTP_CONTEXT]).await?;
    }
    Ok(action.is_some_and(|a| a != ACTION_CONTINUE))
}

/// Calls export `name` if the module has it, with as many of `args` as it takes (as i32 or i64), and
/// returns its first result as i32. `None` when it is not exported or returns nothing.
async fn call(
    store: &mut Store<ProxyState>,
    instance: &Instance,
    name: &str,
    args: &[i32],
) -> wasmtime::Result<Option<i32>> {
    let Some(func) = instance.get_func(&mut *store, name) else {
        return Ok(None);
    };
    let ty = func.ty(&*store);
    let params: Vec<Val> = ty
        .params()
        .enumerate()
        .map(|(i, p)| {
            let arg = args.get(i).copied().unwrap_or(0);
            match p {
                wasmtime::ValType::I64 => Val::I64(i64::from(arg)),
                _ => Val::I32(arg),
            }
        })
        .collect();
    let mut results: Vec<Val> = ty
        .results()
        .map(|r| Val::default_for_ty(&r).unwrap_or(Val::I32(0)))
        .collect();
    func.call_async(&mut *store, &params, &mut results).await?;
    Ok(results.first().and_then(|v| match v {
        Val::I32(x) => Some(*x),
        Val::I64(x) => Some(*x as i32),
        _ => None,
    }))
}
