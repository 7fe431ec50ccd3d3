//! Per-invocation host state, deny-by-default.
//!
//! Components get a preview2 WASI context and a wasi:http context; core modules get a preview1 context.
//! Neither has sockets or the host's environment, nor any directory but the function's own read-only
//! files (`Settings::files`), when it was deployed with some. Outbound HTTP reaches only the
//! hosts a function is granted (`outbound.rs`).

pub(crate) mod capabilities;
pub(crate) mod outbound;
pub(crate) mod output;
pub(crate) mod platform;
pub(crate) mod spin;

use crate::limits::{Limited, Limits, MemoryLimiter};
use crate::settings::Settings;
use bytes::Bytes;
use http_body_util::BodyExt;
use outbound::OutboundPolicy;
use output::CappedOutput;
use platform::{CallDepth, Guest, PlatformError, INTERNAL_SUFFIX};
use std::future::Future;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The captured output of one invocation: its standard streams, and what it sent to a logging
/// interface.
pub(crate) struct Stdio {
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
    pub(crate) log: CappedOutput,
}

impl Stdio {
    fn new(limits: &Limits) -> Self {
        Self {
            stdout: CappedOutput::new(limits.response_bytes),
            stderr: CappedOutput::new(limits.stderr_bytes),
            log: CappedOutput::new(limits.stderr_bytes),
        }
    }

    /// Empties every stream for an instance's next request.
    pub(crate) fn clear(&self) {
        self.stdout.clear();
        self.stderr.clear();
        self.log.clear();
    }
}

/// A WASI context builder with nothing granted but the given args, env and stdin, captured stdio, and
/// the function's read-only files (`settings.files`) as `/` when it has them.
pub(crate) fn wasi_builder(
    args: &[String],
    env: &[(String, String)],
    stdin: Bytes,
    settings: &Settings,
) -> (WasiCtxBuilder, Stdio) {
    let stdio = Stdio::new(&settings.limits);
    let mut builder = WasiCtx::builder();
    builder
        .args(args)
        .envs(env)
        .stdin(MemoryInputPipe::new(stdin))
        .stdout(stdio.stdout.clone())
        .stderr(stdio.stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(files) = &settings.files {
        if let Err(e) = builder.preopened_dir(files, "/", FsPerms::ReadOnly) {
            tracing::error!(function = %settings.name, files = %files.display(), "files not mounted: {e}");
        }
    }
    (builder, stdio)
}

/// Store data for a core-module invocation (WAGI, preview1 commands).
pub(crate) struct ModuleState {
    pub(crate) wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

impl ModuleState {
    pub(crate) fn new(wasi: WasiP1Ctx, limits: &Limits) -> Self {
        Self {
            wasi,
            limiter: MemoryLimiter::new(limits.memory_bytes),
        }
    }
}

impl Limited for ModuleState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

/// Store data for a component invocation (wasi:http handlers, wasi:cli commands).
pub(crate) struct ComponentState {
    wasi: WasiCtx,
    pub(crate) config: Arc<WasiConfigVariables>,
    /// The same variables, for the interfaces wafer implements itself.
    variables: Arc<std::collections::BTreeMap<String, String>>,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    /// Where `wasi:logging` lines and refused capability calls go.
    log: CappedOutput,
    limiter: MemoryLimiter,
}

impl ComponentState {
    /// State for a run of the function `settings` describes, `depth` calls deep, logging to `stdio`.
    pub(crate) fn new(wasi: WasiCtx, settings: &Settings, depth: CallDepth, stdio: &Stdio) -> Self {
        Self {
            wasi,
            log: stdio.log.clone(),
            config: settings.variables.config.clone(),
            variables: settings.variables.values.clone(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks {
                policy: settings.outbound.clone(),
                guest: Guest::new(settings, depth),
            },
            limiter: MemoryLimiter::new(settings.limits.memory_bytes),
        }
    }

    /// Sets how deep in a chain of function calls the current request is (a kept instance serves
    /// requests of different depths).
    pub(crate) fn set_depth(&mut self, depth: CallDepth) {
        self.hooks.guest.depth = depth;
    }
}

impl Limited for ComponentState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The largest request body one function sends another through `http://{name}.fn.internal/`.
const MAX_INTERNAL_BODY: usize = 32 << 20;

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

/// wasi:http hooks for outgoing requests: a call to `http://{name}.fn.internal/` goes to that function
/// inside the process, when granted; anything else goes out only when the function's policy allows its
/// target, within its outbound concurrency and timeouts.
pub(crate) struct OutboundHooks {
    pub(crate) policy: OutboundPolicy,
    /// The function the requests are made for.
    pub(crate) guest: Guest,
}

/// How many writes to an outgoing body (a response's or a request's) wait in its channel before the
/// writer must let the other end catch up, and the most one write may carry. wasmtime's defaults (one
/// write of up to 1 MiB) make a guest that writes its body in pieces, as SDKs do, stop after each
/// second piece until hyper has taken the first: a task switch and a socket write per piece. 32 pieces
/// of up to 64 KiB hold about as many bytes (33 × 64 KiB, against 2 × 1 MiB) and let a small body
/// go out whole.
const BODY_BUFFER_CHUNKS: usize = 32;
const BODY_CHUNK_SIZE: usize = 64 * 1024;

impl WasiHttpHooks for OutboundHooks {
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        BODY_BUFFER_CHUNKS
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        BODY_CHUNK_SIZE
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        if let Some(target) = internal_target(request.uri()) {
            return Box::new(call_internal(self.guest.clone(), Some(target), request));
        }
        let to_self = request
            .uri()
            .host()
            .is_some_and(|h| h.eq_ignore_ascii_case(outbound::SELF_HOST));
        if to_self && self.policy.allows_self() {
            return Box::new(call_internal(self.guest.clone(), None, request));
        }
        let policy = self.policy.clone();
        Box::new(async move {
            policy.check(request.uri()).await?;
            let permit = policy.slot().await?;
            let options = policy.bound(options);
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io = async move {
                let _held = permit;
                io.await
            };
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}

/// The function an outgoing request names through the reserved `.fn.internal` suffix.
fn internal_target(uri: &http::Uri) -> Option<String> {
    let host = uri.host()?.to_ascii_lowercase();
    let name = host.strip_suffix(INTERNAL_SUFFIX)?;
    (!name.is_empty() && !name.contains('.')).then(|| name.to_string())
}

/// One function calling another inside the process, through the platform: the one named `target`,
/// or with none, the one mounted at the request's path (`http://self/…`).
async fn call_internal(
    guest: Guest,
    target: Option<String>,
    request: http::Request<WasiBody>,
) -> wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)> {
    use wasmtime_wasi_http::Error as HttpError;
    let label = target
        .clone()
        .unwrap_or_else(|| request.uri().path().to_string());
    let refuse = |e: PlatformError| {
        tracing::info!(caller = %guest.name, target = %label, "function call refused: {e}");
        match e {
            PlatformError::Denied(_) => HttpError::HttpRequestDenied,
            PlatformError::NotFound(_) => HttpError::DestinationNotFound,
            PlatformError::TooDeep(_) => HttpError::LoopDetected,
            other => HttpError::InternalError(Some(other.to_string())),
        }
    };
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_INTERNAL_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(Some(MAX_INTERNAL_BODY as u64)))?
        .to_bytes();
    let request = http::Request::from_parts(parts, body);
    let response = match &target {
        Some(target) => guest.call(target, request).await,
        None => guest.call_route(request).await,
    }
    .map_err(refuse)?;
    let response = response.map(|body| {
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync()
    });
    let done = async { Ok(()) };
    Ok((
        response,
        Box::new(done) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ))
}
