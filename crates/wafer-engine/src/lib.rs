//! wafer's engine: everything between a wasm binary and an invocation's result.
//!
//! - [`Engine`] (`engine.rs`) owns the wasmtime engines, their linkers (`engine/runtime.rs`: one engine
//!   for most guests, one whose pool suits large memory images) and the epoch ticker; it compiles a
//!   binary once at deploy ([`Engine::compile`]) and reloads a compiled artifact after a restart
//!   ([`Engine::load`]) without compiling again.
//! - [`CompileCache`] (`compile_cache.rs`) keeps Cranelift's code for single wasm functions on disk, so a
//!   compile reuses every function an earlier compile on the node already translated.
//! - [`Function`] (`function.rs`) is a compiled, pre-instantiated function version; every call makes a fresh
//!   `Store` from it.
//! - [`Settings`] (`settings.rs`) is what every invocation of a function gets, and
//!   [`FunctionDefaults::settings`] the one rule that derives it from the function's config, for the
//!   server and the containerd shim alike.
//! - `abi/` holds one adapter per function kind: `http.rs` (wasi:http components), `wagi.rs` (CGI over WASI
//!   preview1), `proxy/` (proxy-wasm modules with Layotto's Runtime ABI) and `command.rs` (jobs). Each
//!   runs its guest through `run.rs`, the one bounded run: limits, instantiation, deadline, CPU time,
//!   how the run ended and what it used.
//! - `reuse.rs` keeps the instances of functions that opt into `reuse` between requests, bounded per engine.
//! - `limits.rs` enforces the per-invocation memory cap and deadline; `host/` holds the per-invocation host
//!   state, deny-by-default: no preopened directories, no sockets, no host environment, and outbound HTTP
//!   only to the hosts a function is granted (`host/outbound.rs`). `host/platform.rs` is the [`Platform`]
//!   the server provides (key-value stores, calls to other functions), reached only through a function's
//!   grants; `host/capabilities.rs` binds `wasi:keyvalue` and `wasi:logging` for components.
//! - `trace.rs` measures what each invocation used (instantiation time, CPU time, peak memory, fuel) and
//!   collects its log lines into a [`Trace`].
//! - `error.rs` holds the two error enums of this crate's boundary, [`CompileError`] and [`InvokeError`].

mod abi;
mod compile_cache;
mod engine;
mod error;
mod function;
mod host;
mod limits;
mod reuse;
mod run;
mod settings;
mod trace;

pub use abi::http::{cap_body, forward, Mount, ResponseBody};
pub use abi::wagi::{cgi_answer, cgi_env};
pub use compile_cache::{CompileCache, CompileCacheError, CompileCacheStats};
pub use engine::{is_component, Engine, EngineOptions, EngineStats};
pub use engine::{Baseline, SetupError};
pub use error::{CompileError, InvokeError};
pub use function::{Compiled, Function, Instances};
pub use host::outbound::{OutboundLimits, OutboundPolicy};
pub use host::platform::{
    CallDepth, Grants, Platform, PlatformError, PlatformHandle, Variables, INTERNAL_SUFFIX,
    MAX_CALL_DEPTH,
};
pub use limits::Limits;
pub use reuse::IDLE_TIMEOUT;
pub use settings::{FunctionDefaults, Settings, DEFAULT_MAX_OUTBOUND, DEFAULT_OUTBOUND_TIMEOUT_MS};
pub use trace::{LogLine, Stream, Trace, Tracer, Usage};
pub use wafer_api::{CommandOutput, Kind};
