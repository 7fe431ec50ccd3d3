//! A compiled, pre-instantiated function version, and the two ways to call it.

use crate::abi;
use crate::abi::http::{Mount, ResponseBody};
use crate::error::InvokeError;
use crate::host::{ComponentState, ModuleState};
use crate::reuse::{IdleInstances, IdlePool};
use crate::settings::Settings;
use crate::trace::Tracer;
use bytes::Bytes;
use std::sync::Arc;
use wafer_api::{CommandOutput, Kind};
use wasmtime::InstancePre;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// The pre-instantiated form of each kind.
#[derive(Clone)]
pub(crate) enum Prepared {
    Http(ProxyPre<ComponentState>),
    Spin1(abi::spin1::Spin1Module),
    Wagi(abi::wagi::WagiModule),
    Proxy(abi::proxy::ProxyModule),
    ModuleCommand(InstancePre<ModuleState>),
    ComponentCommand(CommandPre<ComponentState>),
}

/// A function version ready to run: compiled, linked and pre-instantiated. Cheap to clone; clones share
/// the instances kept for `reuse`, so give each function version its own [`crate::Engine::load`].
#[derive(Clone)]
pub struct Function {
    prepared: Prepared,
    warm: Arc<IdlePool<abi::http::Warm>>,
}

/// The instances one function version keeps for `reuse`. A version's compiled code may be shared with
/// others of the same module (see [`Function::with_instances`]); its kept instances never are.
#[derive(Clone)]
pub struct Instances(pub(crate) Arc<IdlePool<abi::http::Warm>>);

impl Instances {
    pub(crate) fn new(idle: &Arc<IdleInstances>) -> Self {
        Self(idle.pool())
    }
}

/// The result of compiling a binary at deploy: the runnable function and the artifact to store on disk.
pub struct Compiled {
    /// The function, ready to call.
    pub function: Function,
    /// The serialized machine code, for [`crate::Engine::load`] after a restart.
    pub artifact: Vec<u8>,
}

impl Function {
    pub(crate) fn new(prepared: Prepared, idle: &Arc<IdleInstances>) -> Self {
        Self {
            prepared,
            warm: idle.pool(),
        }
    }

    /// Another function running the same compiled code, with instances kept for `reuse` of its own: what
    /// a second container of one module gets, so it compiles nothing and shares no instance.
    pub fn with_own_instances(&self) -> Self {
        self.with_instances(&Instances(self.warm.sibling()))
    }

    /// This function's compiled code with `instances` as the ones kept for `reuse`: how versions sharing
    /// one module's code each keep their own instances.
    pub fn with_instances(&self, instances: &Instances) -> Self {
        Self {
            prepared: self.prepared.clone(),
            warm: instances.0.clone(),
        }
    }

    /// The kind this function runs as.
    pub fn kind(&self) -> Kind {
        match self.prepared {
            Prepared::Http(_) | Prepared::Spin1(_) => Kind::Http,
            Prepared::Wagi(_) => Kind::Wagi,
            Prepared::Proxy(_) => Kind::ProxyWasm,
            Prepared::ModuleCommand(_) | Prepared::ComponentCommand(_) => Kind::Command,
        }
    }

    /// Serves an HTTP request with an `http` or `wagi` function, in a fresh instance (or, for an `http`
    /// function with `reuse`, one that has served fewer requests than that). The invocation's
    /// [`crate::Trace`] goes to `tracer` once the instance is gone (for a streamed body, after it ends).
    ///
    /// The body has already been read (and size-checked) by the caller. Fails with
    /// [`InvokeError::Internal`] for a `command` function, which answers through [`Function::run_command`].
    pub async fn serve_http(
        &self,
        request: http::Request<Bytes>,
        mount: &Mount,
        settings: &Settings,
        tracer: Tracer,
    ) -> Result<http::Response<ResponseBody>, InvokeError> {
        match &self.prepared {
            Prepared::Http(pre) => {
                abi::http::serve(pre, &self.warm, request, mount, settings, tracer).await
            }
            Prepared::Spin1(module) => {
                abi::spin1::serve(module, request, mount, settings, tracer).await
            }
            Prepared::Wagi(module) => {
                abi::wagi::serve(module, request, mount, settings, tracer).await
            }
            Prepared::Proxy(module) => {
                abi::proxy::serve(module, request, mount, settings, tracer).await
            }
            Prepared::ModuleCommand(_) | Prepared::ComponentCommand(_) => Err(
                InvokeError::Internal("a command function does not serve HTTP".into()),
            ),
        }
    }

    /// Runs the function as a job in a fresh instance: `stdin` in, exit code and output out, and the
    /// invocation's [`crate::Trace`] to `tracer`.
    ///
    /// Any kind that reads stdin can run this way except `http`, which has no entry point for it.
    pub async fn run_command(
        &self,
        stdin: Bytes,
        args: &[String],
        settings: &Settings,
        tracer: Tracer,
    ) -> Result<CommandOutput, InvokeError> {
        match &self.prepared {
            Prepared::ModuleCommand(pre) => {
                abi::command::run_module(pre, stdin, args, settings, tracer).await
            }
            Prepared::Wagi(module) => {
                abi::command::run_module(&module.pre, stdin, args, settings, tracer).await
            }
            Prepared::ComponentCommand(pre) => {
                abi::command::run_component(pre, stdin, args, settings, tracer).await
            }
            Prepared::Http(_) | Prepared::Spin1(_) | Prepared::Proxy(_) => {
                Err(InvokeError::Internal(
                    "an http or proxy-wasm function is invoked with an HTTP request".into(),
                ))
            }
        }
    }

    /// The id a proxy-wasm function gives itself through its `proxy_get_id` export (run once, then
    /// remembered), by which requests and other functions may address it; `None` for other kinds.
    pub async fn proxy_id(&self, settings: &Settings) -> Result<Option<String>, InvokeError> {
        match &self.prepared {
            Prepared::Proxy(module) => module.id(settings).await,
            _ => Ok(None),
        }
    }
}
