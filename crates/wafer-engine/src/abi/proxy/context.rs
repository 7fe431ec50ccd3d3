//! The state of one proxy-wasm run: the store data ([`ProxyState`]) and the request, response and
//! properties the host calls read and write ([`ProxyCtx`]).

use crate::host::output::CappedOutput;
use crate::host::platform::{CallDepth, Guest};
use crate::limits::{Limited, Limits, MemoryLimiter};
use crate::settings::Settings;
use wafer_api::LogLevel;
use wasmtime_wasi::p1::WasiP1Ctx;

/// Buffer types.
pub(super) const BUFFER_REQUEST_BODY: i32 = 0;
pub(super) const BUFFER_RESPONSE_BODY: i32 = 1;
pub(super) const BUFFER_VM_CONFIGURATION: i32 = 6;
pub(super) const BUFFER_PLUGIN_CONFIGURATION: i32 = 7;
pub(super) const BUFFER_CALL_DATA: i32 = 8;

/// Header map types.
const MAP_REQUEST_HEADERS: i32 = 0;
const MAP_REQUEST_TRAILERS: i32 = 1;
const MAP_RESPONSE_HEADERS: i32 = 2;
const MAP_RESPONSE_TRAILERS: i32 = 3;

/// Store data of a proxy-wasm run: WASI preview1, the proxy-wasm context, and the memory cap.
pub(crate) struct ProxyState {
    pub(crate) wasi: WasiP1Ctx,
    pub(super) ctx: ProxyCtx,
    limiter: MemoryLimiter,
}

impl ProxyState {
    pub(super) fn new(wasi: WasiP1Ctx, ctx: ProxyCtx, limits: &Limits) -> Self {
        Self {
            wasi,
            ctx,
            limiter: MemoryLimiter::new(limits.memory_bytes),
        }
    }
}

impl Limited for ProxyState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

/// A response the guest sent with `proxy_send_local_response`.
pub(super) struct LocalResponse {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

/// Per-invocation state the host calls work on.
pub(super) struct ProxyCtx {
    pub(super) request_headers: Vec<(String, String)>,
    request_trailers: Vec<(String, String)>,
    pub(super) request_body: Vec<u8>,
    pub(super) response_headers: Vec<(String, String)>,
    response_trailers: Vec<(String, String)>,
    pub(super) response_body: Vec<u8>,
    pub(super) call_data: Vec<u8>,
    pub(super) local: Option<LocalResponse>,
    pub(super) properties: Vec<(String, Vec<u8>)>,
    /// The function the host calls are made for, with its grants.
    pub(super) guest: Guest,
    pub(super) log: CappedOutput,
}

impl ProxyCtx {
    pub(super) fn new(settings: &Settings, depth: CallDepth) -> Self {
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
            guest: Guest::new(settings, depth),
            log: CappedOutput::new(settings.limits.stderr_bytes),
        }
    }

    pub(super) fn buffer(&mut self, kind: i32) -> Option<&mut Vec<u8>> {
        match kind {
            BUFFER_REQUEST_BODY => Some(&mut self.request_body),
            BUFFER_RESPONSE_BODY => Some(&mut self.response_body),
            BUFFER_CALL_DATA => Some(&mut self.call_data),
            _ => None,
        }
    }

    pub(super) fn map(&mut self, kind: i32) -> Option<&mut Vec<(String, String)>> {
        match kind {
            MAP_REQUEST_HEADERS => Some(&mut self.request_headers),
            MAP_REQUEST_TRAILERS => Some(&mut self.request_trailers),
            MAP_RESPONSE_HEADERS => Some(&mut self.response_headers),
            MAP_RESPONSE_TRAILERS => Some(&mut self.response_trailers),
            _ => None,
        }
    }

    pub(super) fn log(&self, level: LogLevel, message: &str) {
        self.log.log(level, message);
    }
}
