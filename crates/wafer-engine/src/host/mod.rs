//! Per-invocation host state, deny-by-default.
//!
//! Components get a preview2 WASI context and a wasi:http context; core modules get a preview1 context.
//! Neither has preopened directories, sockets, or the host's environment. Outbound HTTP reaches only the
//! hosts a function is granted (`outbound.rs`).

pub(crate) mod outbound;
pub(crate) mod output;

use crate::limits::{Limited, Limits, MemoryLimiter};
use bytes::Bytes;
use http_body_util::BodyExt;
use outbound::OutboundPolicy;
use output::CappedOutput;
use std::future::Future;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The captured standard streams of one invocation.
pub(crate) struct Stdio {
    pub(crate) stdout: CappedOutput,
    pub(crate) stderr: CappedOutput,
}

impl Stdio {
    fn new(limits: &Limits) -> Self {
        Self {
            stdout: CappedOutput::new(limits.response_bytes),
            stderr: CappedOutput::new(limits.stderr_bytes),
        }
    }

    /// Empties both streams for an instance's next request.
    pub(crate) fn clear(&self) {
        self.stdout.clear();
        self.stderr.clear();
    }
}

/// A WASI context builder with nothing granted but the given args, env and stdin, and captured stdio.
pub(crate) fn wasi_builder(
    args: &[String],
    env: &[(String, String)],
    stdin: Bytes,
    limits: &Limits,
) -> (WasiCtxBuilder, Stdio) {
    let stdio = Stdio::new(limits);
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
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: OutboundHooks,
    limiter: MemoryLimiter,
}

impl ComponentState {
    pub(crate) fn new(wasi: WasiCtx, limits: &Limits, outbound: &OutboundPolicy) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: OutboundHooks {
                policy: outbound.clone(),
            },
            limiter: MemoryLimiter::new(limits.memory_bytes),
        }
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

/// wasi:http hooks that send an outbound request only when the function's policy allows its target.
struct OutboundHooks {
    policy: OutboundPolicy,
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        let policy = self.policy.clone();
        Box::new(async move {
            policy.check(request.uri()).await?;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            ))
        })
    }
}
