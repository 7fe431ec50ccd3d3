//! Spin 1's HTTP modules: core modules exporting `handle-http-request` in the pre-component canonical
//! ABI of Spin's `spin-http` interface (with `canonical_abi_realloc`/`canonical_abi_free`), as the
//! Rust, Go (TinyGo), JavaScript and TypeScript SDKs of Spin 1.x built them and `spin up` still runs
//! them. They run as kind `http`, in a fresh instance per request, with WASI preview1 and Spin 1's
//! `spin-config`, `key-value`, `wasi-outbound-http` and `outbound-redis` imports (`imports.rs`) under
//! the function's grants.

mod imports;
mod memory;
mod redis;

use crate::abi::http::{Mount, ResponseBody};
use crate::error::InvokeError;
use crate::host;
use crate::host::outbound::OutboundPolicy;
use crate::host::output::CappedOutput;
use crate::host::platform::Guest as Platform;
use crate::limits::{Limited, MemoryLimiter};
use crate::run::{bounded, Ended};
use crate::settings::Settings;
use crate::trace::{Stream, Trace, Tracer};
use bytes::Bytes;
use memory::Guest;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::{InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;

/// The export that makes a core module a Spin 1 HTTP handler.
pub(crate) const EXPORT: &str = "handle-http-request";

/// Whether `module` is a Spin 1 HTTP module (it may export `_start` too, as TinyGo's do).
pub(crate) fn is_spin1(module: &Module) -> bool {
    module
        .exports()
        .any(|e| e.name() == EXPORT && e.ty().func().is_some())
}

/// Store data of a Spin 1 module's run.
pub(crate) struct Spin1State {
    pub(crate) wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    variables: Arc<BTreeMap<String, String>>,
    platform: Platform,
    policy: OutboundPolicy,
    log: CappedOutput,
    /// Key-value stores opened, by handle (index); `None` once closed.
    stores: Vec<Option<String>>,
    /// Redis connections, by the address the guest named.
    redis: std::collections::HashMap<String, crate::host::spin::redis::Connection>,
}

impl Limited for Spin1State {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

/// A pre-instantiated Spin 1 module.
#[derive(Clone)]
pub(crate) struct Spin1Module {
    pre: InstancePre<Spin1State>,
}

/// Adds Spin 1's interfaces to a linker that has WASI preview1.
pub(crate) fn add_to_linker(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    imports::add_to_linker(linker)
}

impl Spin1Module {
    pub(crate) fn new(pre: InstancePre<Spin1State>) -> Self {
        Self { pre }
    }
}

/// Spin 1's `method` enum.
fn method_index(method: &http::Method) -> Option<i32> {
    Some(match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::DELETE => 3,
        http::Method::PATCH => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => return None,
    })
}

/// The headers a Spin 1 component gets: the request's, then Spin's own describing how it was reached.
fn headers(parts: &http::request::Parts, mount: &Mount) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let route = if mount.prefix.is_empty() {
        "/"
    } else {
        mount.prefix.as_str()
    };
    let wildcard = format!("{}/...", route.trim_end_matches('/'));
    for (name, value) in [
        ("spin-full-url", format!("http://{host}{path_and_query}")),
        ("spin-path-info", mount.rest(parts.uri.path()).to_string()),
        ("spin-matched-route", wildcard.clone()),
        ("spin-base-path", "/".to_string()),
        ("spin-raw-component-route", wildcard),
        ("spin-component-route", route.to_string()),
        (
            "spin-client-addr",
            mount.client.map(|a| a.to_string()).unwrap_or_default(),
        ),
    ] {
        headers.push((name.to_string(), value));
    }
    headers
}

/// Serves one request in a fresh instance.
pub(crate) async fn serve(
    module: &Spin1Module,
    request: http::Request<Bytes>,
    mount: &Mount,
    settings: &Settings,
    tracer: Tracer,
) -> Result<http::Response<ResponseBody>, InvokeError> {
    let (parts, body) = request.into_parts();
    let Some(method) = method_index(&parts.method) else {
        // Spin 1's interface has no other methods: the module is never called.
        let text = format!(
            "a Spin 1 module takes GET, POST, PUT, DELETE, PATCH, HEAD and OPTIONS, not {}\n",
            parts.method
        );
        let mut response = http::Response::new(crate::abi::http::full(text));
        *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
        return Ok(response);
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let headers = headers(&parts, mount);
    let depth = parts
        .extensions
        .get::<host::platform::CallDepth>()
        .copied()
        .unwrap_or_default();
    let limits = &settings.limits;
    let args = crate::abi::argv(settings, &[]);
    let (mut builder, stdio) = host::wasi_builder(&args, &settings.env, Bytes::new(), settings);
    let state = Spin1State {
        wasi: builder.build_p1(),
        limiter: MemoryLimiter::new(limits.memory_bytes),
        variables: settings.variables.values.clone(),
        platform: Platform::new(settings, depth),
        policy: settings.outbound.clone(),
        log: stdio.log.clone(),
        stores: Vec::new(),
        redis: Default::default(),
    };
    let mut store = Store::new(module.pre.module().engine(), state);
    let run = bounded(
        &mut store,
        limits,
        async |store| module.pre.instantiate_async(store).await,
        async |store, instance| {
            let guest = Guest::of(
                instance.get_memory(&mut *store, "memory"),
                instance
                    .get_typed_func::<(i32, i32, i32, i32), i32>(
                        &mut *store,
                        "canonical_abi_realloc",
                    )
                    .ok(),
            )?;
            if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
                init.call_async(&mut *store, ()).await?;
            }
            let handle = instance
                .get_typed_func::<(i32, i32, i32, i32, i32, i32, i32, i32, i32, i32), i32>(
                    &mut *store,
                    EXPORT,
                )?;
            let (uri_ptr, uri_len) = guest.put(&mut *store, uri.as_bytes()).await?;
            let (h_ptr, h_len) = guest.put_pairs(&mut *store, &headers).await?;
            let (b_some, b_ptr, b_len) = match body.is_empty() {
                true => (0, 0, 0),
                false => {
                    let (ptr, len) = guest.put(&mut *store, &body).await?;
                    (1, ptr, len)
                }
            };
            let ret = handle
                .call_async(
                    &mut *store,
                    (
                        method, uri_ptr, uri_len, h_ptr, h_len, 0, 0, b_some, b_ptr, b_len,
                    ),
                )
                .await?;
            response(&guest, &*store, ret)
        },
    )
    .await;
    tracer.send(Trace::new(
        run.usage,
        &[
            (Stream::Stdout, &stdio.stdout),
            (Stream::Stderr, &stdio.stderr),
            (Stream::Log, &stdio.log),
        ],
    ));
    match run.ended? {
        Ended::Returned(response) => Ok(response),
        Ended::Exited(code) => Err(InvokeError::Failed(format!(
            "exited with code {code} without a response"
        ))),
    }
}

/// Reads the response a handler left at `ret`: status (u16 at 0), optional headers (at 4) and body
/// (at 16).
fn response(
    guest: &Guest,
    store: impl wasmtime::AsContext,
    ret: i32,
) -> wasmtime::Result<http::Response<ResponseBody>> {
    let store = store.as_context();
    let area = guest.bytes(&store, ret, 28)?;
    let word = |i: usize| i32::from_le_bytes([area[i], area[i + 1], area[i + 2], area[i + 3]]);
    let status = u16::from_le_bytes([area[0], area[1]]);
    let mut response = http::Response::builder().status(status);
    if area[4] != 0 {
        for (name, value) in guest.pairs(&store, word(8), word(12))? {
            response = response.header(name, value);
        }
    }
    let body = match area[16] {
        0 => Bytes::new(),
        _ => Bytes::from(guest.bytes(&store, word(20), word(24))?),
    };
    response
        .body(crate::abi::http::full(body))
        .map_err(|e| memory::fault(format!("the response is not valid HTTP: {e}")))
}
