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

use super::http::{call_depth, Mount, ResponseBody};
use crate::error::InvokeError;
use crate::function::Settings;
use crate::host::platform::{CallDepth, Grants, PlatformError, PlatformHandle};
use crate::host::{self, ModuleState};
use crate::limits::{self, classify, outer_timeout};
use crate::trace::{CpuTimed, Stream, Trace, Tracer, Usage};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use wafer_api::LogLevel;
use wasmtime::{Caller, Extern, Instance, InstancePre, Linker, Module, Store, Val};
use wasmtime_wasi::I32Exit;

/// The root (plugin) context every instance gets.
const ROOT_CONTEXT: i32 = 1;
/// The HTTP context of the one request an instance serves.
const HTTP_CONTEXT: i32 = 2;

/// proxy-wasm status codes.
mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// `proxy_on_request_headers` and the rest return this to let the request go on.
const ACTION_CONTINUE: i32 = 0;

/// Buffer types.
const BUFFER_REQUEST_BODY: i32 = 0;
const BUFFER_RESPONSE_BODY: i32 = 1;
const BUFFER_VM_CONFIGURATION: i32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
const BUFFER_CALL_DATA: i32 = 8;

/// Header map types.
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_REQUEST_TRAILERS: i32 = 1;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;

/// Whether a core module is a proxy-wasm module.
pub(crate) fn is_proxy_wasm(module: &Module) -> bool {
    module
        .exports()
        .any(|e| e.name().starts_with("proxy_abi_version_0_2_") && e.ty().func().is_some())
}

/// A proxy-wasm module, with the id its `proxy_get_id` export gives (read once, on first use).
#[derive(Clone)]
pub(crate) struct ProxyModule {
    pub(crate) pre: InstancePre<ModuleState>,
    id: Arc<OnceCell<Option<String>>>,
}

impl ProxyModule {
    pub(crate) fn new(pre: InstancePre<ModuleState>) -> Self {
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

/// A response the guest sent with `proxy_send_local_response`.
struct LocalResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Per-invocation state the host calls work on.
pub(crate) struct ProxyCtx {
    request_headers: Vec<(String, String)>,
    request_trailers: Vec<(String, String)>,
    request_body: Vec<u8>,
    response_headers: Vec<(String, String)>,
    response_trailers: Vec<(String, String)>,
    response_body: Vec<u8>,
    call_data: Vec<u8>,
    local: Option<LocalResponse>,
    properties: Vec<(String, Vec<u8>)>,
    caller: String,
    grants: Grants,
    platform: PlatformHandle,
    depth: CallDepth,
    log: crate::host::output::CappedOutput,
}

impl ProxyCtx {
    fn new(settings: &Settings, depth: CallDepth) -> Self {
        Self {
            request_headers: Vec::new(),
            request_trailers: Vec::new(),
            request_body: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            response_body: Vec::new(),
            call_data: Vec::new(),
            local: None,
            properties: vec![
                ("plugin_name".into(), settings.name.clone().into_bytes()),
                ("plugin_root_id".into(), settings.name.clone().into_bytes()),
            ],
            caller: settings.name.clone(),
            grants: settings.grants.clone(),
            platform: settings.platform.clone(),
            depth,
            log: crate::host::output::CappedOutput::new(settings.limits.stderr_bytes),
        }
    }

    fn buffer(&mut self, kind: i32) -> Option<&mut Vec<u8>> {
        match kind {
            BUFFER_REQUEST_BODY => Some(&mut self.request_body),
            BUFFER_RESPONSE_BODY => Some(&mut self.response_body),
            BUFFER_CALL_DATA => Some(&mut self.call_data),
            _ => None,
        }
    }

    fn map(&mut self, kind: i32) -> Option<&mut Vec<(String, String)>> {
        match kind {
            MAP_REQUEST_HEADERS => Some(&mut self.request_headers),
            MAP_REQUEST_TRAILERS => Some(&mut self.request_trailers),
            MAP_RESPONSE_HEADERS => Some(&mut self.response_headers),
            MAP_RESPONSE_TRAILERS => Some(&mut self.response_trailers),
            _ => None,
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.log.log(level, message);
    }
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
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| InvokeError::BadResponse(e.to_string()))
}

/// Instantiates the module, starts its root context and carries out `plan`. Returns whether the last
/// request callback paused, the captured stdio, what the run used, and the context.
async fn run(
    pre: &InstancePre<ModuleState>,
    settings: &Settings,
    ctx: ProxyCtx,
    plan: Plan,
) -> (Result<bool, InvokeError>, host::Stdio, Usage, ProxyCtx) {
    let limits = &settings.limits;
    let args = std::slice::from_ref(&settings.name);
    let (mut builder, stdio) = host::wasi_builder(args, &settings.env, Bytes::new(), limits);
    let mut state = ModuleState::new(builder.build_p1(), limits);
    state.proxy = Some(Box::new(ctx));
    let mut store = Store::new(pre.module().engine(), state);
    limits::apply(&mut store, limits);
    let mut instantiate = Duration::ZERO;
    let work = async {
        let started = Instant::now();
        let instance = pre.instantiate_async(&mut store).await?;
        instantiate = started.elapsed();
        start(&mut store, &instance).await?;
        // wafer passes no VM or plugin configuration: both buffers are empty.
        call(
            &mut store,
            &instance,
            "proxy_on_context_create",
            &[ROOT_CONTEXT, 0],
        )
        .await?;
        let started = call(
            &mut store,
            &instance,
            "proxy_on_vm_start",
            &[ROOT_CONTEXT, 0],
        )
        .await?;
        let configured = call(
            &mut store,
            &instance,
            "proxy_on_configure",
            &[ROOT_CONTEXT, 0],
        )
        .await?;
        if started == Some(0) || configured == Some(0) {
            return Err(wasmtime::Error::msg(
                "the module refused to start (proxy_on_vm_start or proxy_on_configure returned false)",
            ));
        }
        match plan {
            Plan::GetId => {
                call(&mut store, &instance, "proxy_get_id", &[]).await?;
                Ok(false)
            }
            Plan::Request => request(&mut store, &instance).await,
        }
    };
    let (outcome, cpu) = CpuTimed::new(tokio::time::timeout(outer_timeout(limits), work)).await;
    let result = match outcome {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(paused)) => Ok(paused),
        Ok(Err(e)) => Err(match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => {
                InvokeError::Failed(format!("the module exited with code {code}"))
            }
            None => classify(e, limits),
        }),
    };
    let usage = limits::usage(&mut store, limits, instantiate, cpu);
    let ctx = store
        .data_mut()
        .proxy
        .take()
        .map_or_else(|| ProxyCtx::new(settings, CallDepth::default()), |c| *c);
    (result, stdio, usage, ctx)
}

/// Runs the module's initialisation: `_initialize`, or `_start` (which may exit with code 0).
async fn start(store: &mut Store<ModuleState>, instance: &Instance) -> wasmtime::Result<()> {
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
async fn request(store: &mut Store<ModuleState>, instance: &Instance) -> wasmtime::Result<bool> {
    let (headers, body_len) = {
        let ctx = store.data().proxy.as_ref().ok_or_else(no_ctx)?;
        (ctx.request_headers.len(), ctx.request_body.len())
    };
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
    let answered = |store: &Store<ModuleState>| {
        store
            .data()
            .proxy
            .as_ref()
            .is_some_and(|c| c.local.is_some())
    };
    if has_body && !answered(store) {
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

fn no_ctx() -> wasmtime::Error {
    wasmtime::Error::msg("proxy-wasm state missing")
}

fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Calls export `name` if the module has it, with as many of `args` as it takes (as i32 or i64), and
/// returns its first result as i32. `None` when it is not exported or returns nothing.
async fn call(
    store: &mut Store<ModuleState>,
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

// ---- host calls ----

type Ctx<'a> = Caller<'a, ModuleState>;

fn memory(caller: &mut Ctx<'_>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let memory = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    let mut out = vec![0; len as u32 as usize];
    memory
        .read(&*caller, ptr as u32 as usize, &mut out)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)?;
    Ok(out)
}

fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String, i32> {
    read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let memory = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)
}

fn ctx<'a>(caller: &'a mut Ctx<'_>) -> Result<&'a mut ProxyCtx, i32> {
    caller
        .data_mut()
        .proxy
        .as_deref_mut()
        .ok_or(status::INTERNAL_FAILURE)
}

fn status_of(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(status::OK)
}

/// Copies `data` into memory the guest allocates (with `proxy_on_memory_allocate` or `malloc`) and
/// stores its address and length at `ret_ptr` and `ret_len`. A trap in the allocator ends the call.
async fn give(
    caller: &mut Ctx<'_>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let address = if data.is_empty() {
        0
    } else {
        let allocate = caller
            .get_export("proxy_on_memory_allocate")
            .or_else(|| caller.get_export("malloc"))
            .and_then(Extern::into_func);
        let Some(allocate) = allocate else {
            return Ok(status::INTERNAL_FAILURE);
        };
        let allocate = allocate.typed::<i32, i32>(&*caller)?;
        let address = allocate
            .call_async(&mut *caller, len_i32(data.len()))
            .await?;
        if address == 0 {
            return Ok(status::INTERNAL_FAILURE);
        }
        if let Err(code) = write(caller, address, data) {
            return Ok(code);
        }
        address
    };
    let written = write(caller, ret_ptr, &address.to_le_bytes())
        .and_then(|()| write(caller, ret_len, &len_i32(data.len()).to_le_bytes()));
    Ok(status_of(written))
}

/// Encodes header pairs as proxy-wasm does: a count, each key and value length, then each key and value
/// followed by a NUL.
fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes header pairs encoded as [`encode_pairs`] does.
fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    if count > bytes.len() / 8 {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

/// Replaces `size` bytes at `start` of `buffer` with `data`, as proxy-wasm's `set_buffer_bytes` does:
/// `start` past the end appends, and the range is clamped to the buffer.
fn splice(buffer: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
    let start = start.min(buffer.len());
    let end = start.saturating_add(size).min(buffer.len());
    buffer.splice(start..end, data.iter().copied());
}

/// The host calls wafer implements.
fn add_to_linker(linker: &mut Linker<ModuleState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32| -> i32 {
            let message = match read_string(&mut caller, ptr, len) {
                Ok(m) => m,
                Err(code) => return code,
            };
            // proxy-wasm numbers its levels as wafer ranks them: trace 0 to critical 5.
            let level = LogLevel::from_rank(level.into());
            status_of(ctx(&mut caller).map(|c| c.log(level, &message)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, ret: i32| -> i32 {
            status_of(write(&mut caller, ret, &1i32.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, ret: i32| -> i32 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            status_of(write(&mut caller, ret, &now.to_le_bytes()))
        },
    )?;
    for name in [
        "proxy_set_tick_period_milliseconds",
        "proxy_set_effective_context",
        "proxy_continue_stream",
        "proxy_close_stream",
    ] {
        linker.func_wrap("env", name, |_: Ctx<'_>, _: i32| -> i32 { status::OK })?;
    }
    for name in [
        "proxy_done",
        "proxy_continue_request",
        "proxy_continue_response",
        "proxy_clear_route_cache",
    ] {
        linker.func_wrap("env", name, |_: Ctx<'_>| -> i32 { status::OK })?;
    }
    linker.func_wrap_async(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>, (kind, start, max, ret_ptr, ret_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let data = {
                    let Ok(c) = ctx(&mut caller) else {
                        return Ok(status::INTERNAL_FAILURE);
                    };
                    let buffer = match kind {
                        BUFFER_VM_CONFIGURATION | BUFFER_PLUGIN_CONFIGURATION => Vec::new(),
                        _ => match c.buffer(kind) {
                            Some(b) => b.clone(),
                            None => return Ok(status::NOT_FOUND),
                        },
                    };
                    let start = (start as u32 as usize).min(buffer.len());
                    let end = start.saturating_add(max as u32 as usize).min(buffer.len());
                    buffer[start..end].to_vec()
                };
                give(&mut caller, &data, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Ctx<'_>, kind: i32, ret_len: i32, ret_flags: i32| -> i32 {
            let len = match ctx(&mut caller).map(|c| c.buffer(kind).map(|b| b.len())) {
                Ok(Some(len)) => len,
                Ok(None) => return status::NOT_FOUND,
                Err(code) => return code,
            };
            status_of(
                write(&mut caller, ret_len, &len_u32(len).to_le_bytes())
                    .and_then(|()| write(&mut caller, ret_flags, &1u32.to_le_bytes())),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            let data = match read(&mut caller, ptr, len) {
                Ok(d) => d,
                Err(code) => return code,
            };
            match ctx(&mut caller).map(|c| c.buffer(kind)) {
                Ok(Some(buffer)) => {
                    splice(buffer, start as u32 as usize, size as u32 as usize, &data);
                    status::OK
                }
                Ok(None) => status::NOT_FOUND,
                Err(code) => code,
            }
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, (kind, ret_ptr, ret_len): (i32, i32, i32)| {
            Box::new(async move {
                let encoded = match ctx(&mut caller).map(|c| c.map(kind).map(|m| encode_pairs(m))) {
                    Ok(Some(e)) => e,
                    Ok(None) => return Ok(status::NOT_FOUND),
                    Err(code) => return Ok(code),
                };
                give(&mut caller, &encoded, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, kind: i32, ptr: i32, len: i32| -> i32 {
            let Some(pairs) = read(&mut caller, ptr, len)
                .ok()
                .and_then(|b| decode_pairs(&b))
            else {
                return status::BAD_ARGUMENT;
            };
            match ctx(&mut caller).map(|c| c.map(kind)) {
                Ok(Some(map)) => {
                    *map = pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect();
                    status::OK
                }
                Ok(None) => status::NOT_FOUND,
                Err(code) => code,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Ctx<'_>, kind: i32, ret: i32| -> i32 {
            let size = match ctx(&mut caller).map(|c| c.map(kind).map(|m| encode_pairs(m).len())) {
                Ok(Some(size)) => size,
                Ok(None) => return status::NOT_FOUND,
                Err(code) => return code,
            };
            status_of(write(&mut caller, ret, &len_u32(size).to_le_bytes()))
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>,
         (kind, key_ptr, key_len, ret_ptr, ret_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let key = match read_string(&mut caller, key_ptr, key_len) {
                    Ok(k) => k.to_ascii_lowercase(),
                    Err(code) => return Ok(code),
                };
                let value = match ctx(&mut caller).map(|c| {
                    c.map(kind)
                        .map(|m| m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()))
                }) {
                    Ok(Some(Some(v))) => v,
                    Ok(_) => return Ok(status::NOT_FOUND),
                    Err(code) => return Ok(code),
                };
                give(&mut caller, value.as_bytes(), ret_ptr, ret_len).await
            })
        },
    )?;
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Ctx<'_>,
                  kind: i32,
                  key_ptr: i32,
                  key_len: i32,
                  value_ptr: i32,
                  value_len: i32|
                  -> i32 {
                let (key, value) = match (
                    read_string(&mut caller, key_ptr, key_len),
                    read_string(&mut caller, value_ptr, value_len),
                ) {
                    (Ok(k), Ok(v)) => (k.to_ascii_lowercase(), v),
                    (Err(code), _) | (_, Err(code)) => return code,
                };
                match ctx(&mut caller).map(|c| c.map(kind)) {
                    Ok(Some(map)) => {
                        if replace {
                            map.retain(|(k, _)| *k != key);
                        }
                        map.push((key, value));
                        status::OK
                    }
                    Ok(None) => status::NOT_FOUND,
                    Err(code) => code,
                }
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, kind: i32, key_ptr: i32, key_len: i32| -> i32 {
            let key = match read_string(&mut caller, key_ptr, key_len) {
                Ok(k) => k.to_ascii_lowercase(),
                Err(code) => return code,
            };
            match ctx(&mut caller).map(|c| c.map(kind)) {
                Ok(Some(map)) => {
                    map.retain(|(k, _)| *k != key);
                    status::OK
                }
                Ok(None) => status::NOT_FOUND,
                Err(code) => code,
            }
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_>, (path_ptr, path_len, ret_ptr, ret_len): (i32, i32, i32, i32)| {
            Box::new(async move {
                let path = match read_string(&mut caller, path_ptr, path_len) {
                    Ok(p) => p.trim_end_matches('\0').to_string(),
                    Err(code) => return Ok(code),
                };
                let value = match ctx(&mut caller).map(|c| {
                    c.properties
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == path)
                        .map(|(_, v)| v.clone())
                }) {
                    Ok(Some(v)) => v,
                    Ok(None) => return Ok(status::NOT_FOUND),
                    Err(code) => return Ok(code),
                };
                give(&mut caller, &value, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Ctx<'_>,
         path_ptr: i32,
         path_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> i32 {
            let (path, value) = match (
                read_string(&mut caller, path_ptr, path_len),
                read(&mut caller, value_ptr, value_len),
            ) {
                (Ok(p), Ok(v)) => (p.trim_end_matches('\0').to_string(), v),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            status_of(ctx(&mut caller).map(|c| c.properties.push((path, value))))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status_code: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> i32 {
            let body = match read(&mut caller, body_ptr, body_len) {
                Ok(b) => b,
                Err(code) => return code,
            };
            let headers = if headers_len == 0 {
                Vec::new()
            } else {
                match read(&mut caller, headers_ptr, headers_len)
                    .ok()
                    .and_then(|b| decode_pairs(&b))
                {
                    Some(h) => h,
                    None => return status::BAD_ARGUMENT,
                }
            };
            let Ok(status_code) = u16::try_from(status_code) else {
                return status::BAD_ARGUMENT;
            };
            status_of(ctx(&mut caller).map(|c| {
                c.local = Some(LocalResponse {
                    status: status_code,
                    headers,
                    body,
                })
            }))
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_get_state",
        |mut caller: Ctx<'_>,
         (store_ptr, store_len, key_ptr, key_len, ret_ptr, ret_len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let (store, key) = match (
                    read_string(&mut caller, store_ptr, store_len),
                    read_string(&mut caller, key_ptr, key_len),
                ) {
                    (Ok(s), Ok(k)) => (s, k),
                    (Err(code), _) | (_, Err(code)) => return Ok(code),
                };
                let (grants, platform) = match ctx(&mut caller) {
                    Ok(c) => (c.grants.clone(), c.platform.clone()),
                    Err(code) => return Ok(code),
                };
                let got = async {
                    grants.store(&store)?;
                    platform.get()?.kv_get(&store, &key).await
                }
                .await;
                match got {
                    // As Layotto answers for a missing key: success, with no data.
                    Ok(value) => {
                        give(&mut caller, &value.unwrap_or_default(), ret_ptr, ret_len).await
                    }
                    Err(e) => Ok(failed(&mut caller, "proxy_get_state", &e)),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_invoke_service",
        |mut caller: Ctx<'_>,
         (id_ptr, id_len, method_ptr, method_len, param_ptr, param_len, ret_ptr, ret_len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let (target, method, param) = match (
                    read_string(&mut caller, id_ptr, id_len),
                    read_string(&mut caller, method_ptr, method_len),
                    read(&mut caller, param_ptr, param_len),
                ) {
                    (Ok(t), Ok(m), Ok(p)) => (t, m, p),
                    (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return Ok(code),
                };
                let (caller_name, grants, platform, depth) = match ctx(&mut caller) {
                    Ok(c) => (
                        c.caller.clone(),
                        c.grants.clone(),
                        c.platform.clone(),
                        c.depth,
                    ),
                    Err(code) => return Ok(code),
                };
                let answered = async {
                    grants.function(&target)?;
                    let path = format!("/{}", method.trim_start_matches('/'));
                    let request = Request::post(path)
                        .header("id", target.as_str())
                        .body(Bytes::from(param))
                        .map_err(|e| PlatformError::Refused(e.to_string()))?;
                    let response = platform
                        .get()?
                        .call(&caller_name, &target, request, depth.0 + 1)
                        .await?;
                    if response.status().is_success() {
                        Ok(response.into_body())
                    } else {
                        Err(PlatformError::Failed(format!(
                            "`{target}` answered {}: {}",
                            response.status(),
                            String::from_utf8_lossy(response.body())
                        )))
                    }
                }
                .await;
                match answered {
                    Ok(body) => give(&mut caller, &body, ret_ptr, ret_len).await,
                    Err(e) => Ok(failed(&mut caller, "proxy_invoke_service", &e)),
                }
            })
        },
    )?;
    Ok(())
}

/// Logs why a Runtime ABI call failed and returns the status the guest gets.
fn failed(caller: &mut Ctx<'_>, call: &str, error: &PlatformError) -> i32 {
    if let Ok(c) = ctx(caller) {
        c.log(LogLevel::Error, &format!("{call} failed: {error}"));
    }
    match error {
        PlatformError::NotFound(_) => status::NOT_FOUND,
        PlatformError::Denied(_) | PlatformError::Refused(_) | PlatformError::TooDeep(_) => {
            status::BAD_ARGUMENT
        }
        PlatformError::Failed(_) => status::INTERNAL_FAILURE,
    }
}

/// A linker for `module`: `wasi` (the WASI imports), the host calls above, and an `Unimplemented` stub
/// for each other `proxy_*` function it imports.
pub(crate) fn linker_for(
    wasi: &Linker<ModuleState>,
    module: &Module,
) -> wasmtime::Result<Linker<ModuleState>> {
    let mut linker = wasi.clone();
    for import in module.imports() {
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        if import.module() != "env" || !import.name().starts_with("proxy_") {
            continue;
        }
        let returns_status =
            ty.results().len() == 1 && matches!(ty.results().next(), Some(wasmtime::ValType::I32));
        linker.func_new("env", import.name(), ty, move |_, _, results| {
            if returns_status {
                results[0] = Val::I32(status::UNIMPLEMENTED);
            } else {
                for r in results.iter_mut() {
                    *r = Val::I32(0);
                }
            }
            Ok(())
        })?;
    }
    linker.allow_shadowing(true);
    add_to_linker(&mut linker)?;
    Ok(linker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_pairs_round_trip() {
        let pairs = vec![
            (":path".to_string(), "/x?y=1".to_string()),
            ("id".to_string(), "id_1".to_string()),
            ("empty".to_string(), String::new()),
        ];
        assert_eq!(decode_pairs(&encode_pairs(&pairs)), Some(pairs));
        assert_eq!(decode_pairs(&encode_pairs(&[])), Some(vec![]));
        assert_eq!(decode_pairs(&[9, 0, 0, 0, 1]), None);
    }

    #[test]
    fn buffer_writes_prepend_append_and_replace() {
        let mut b = b"world".to_vec();
        splice(&mut b, 0, 0, b"hello ");
        assert_eq!(b, b"hello world");
        splice(&mut b, i32::MAX as usize, 0, b"!");
        assert_eq!(b, b"hello world!");
        splice(&mut b, 0, usize::MAX, b"bye");
        assert_eq!(b, b"bye");
    }
}
