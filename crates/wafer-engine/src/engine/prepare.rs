//! How a compiled module or component becomes a [`Prepared`] function of its kind: which kind its
//! exports make it (or the kind the deployer forced), and the linker it is pre-instantiated with.

use super::{describe, Code, Runtime};
use crate::error::CompileError;
use crate::function::Prepared;
use wafer_api::Kind;
use wasmtime::component::Component;
use wasmtime::Module;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

impl Runtime {
    /// Pre-instantiates code this runtime's engine compiled or loaded, as `kind` or the kind it is.
    pub(super) fn prepare(&self, code: Code, kind: Option<Kind>) -> Result<Prepared, CompileError> {
        match code {
            Code::Module(module) => self.prepare_module(&module, kind),
            Code::Component(component) => self.prepare_component(&component, kind),
        }
    }

    pub(super) fn prepare_module(
        &self,
        module: &Module,
        forced: Option<Kind>,
    ) -> Result<Prepared, CompileError> {
        let proxy = crate::abi::proxy::is_proxy_wasm(module);
        if proxy || forced == Some(Kind::ProxyWasm) {
            return self.prepare_proxy(module, proxy, forced);
        }
        // A Spin 1 module is an HTTP handler even when it also exports `_start` (TinyGo's do).
        if crate::abi::spin1::is_spin1(module) && matches!(forced, None | Some(Kind::Http)) {
            return self.prepare_spin1(module);
        }
        let has_start = module
            .exports()
            .any(|e| e.name() == "_start" && e.ty().func().is_some());
        if !has_start {
            return Err(CompileError::Unsupported(
                "the module has no entry point: a wagi or command function must export a `_start` \
                 function (a WASI command), and an http function must be a component exporting \
                 wasi:http/incoming-handler"
                    .into(),
            ));
        }
        let imports_wasi = module
            .imports()
            .any(|i| i.module() == "wasi_snapshot_preview1" || i.module() == "wasi_unstable");
        let exports_memory = module
            .exports()
            .any(|e| e.name() == "memory" && e.ty().memory().is_some());
        if imports_wasi && !exports_memory {
            return Err(CompileError::Unsupported(
                "the module imports WASI but exports no `memory`; WASI calls need it".into(),
            ));
        }
        let pre = self.module_linker.instantiate_pre(module).map_err(|e| {
            CompileError::Unsupported(format!(
                "the module needs imports wafer does not provide (only WASI preview1 and preview0 are \
                 available): {}",
                describe(&e)
            ))
        })?;
        match forced.unwrap_or(Kind::Wagi) {
            Kind::Wagi => Ok(Prepared::Wagi(crate::abi::wagi::WagiModule::new(pre))),
            Kind::Command => Ok(Prepared::ModuleCommand(pre)),
            Kind::Http => Err(CompileError::Unsupported(
                "kind `http` needs a component exporting wasi:http/incoming-handler@0.2.x; this is a \
                 core module (deploy it as `wagi` or `command`)"
                    .into(),
            )),
            Kind::ProxyWasm => unreachable!("proxy-wasm modules are prepared above"),
            Kind::Container => Err(not_an_image()),
        }
    }

    /// Prepares a Spin 1 HTTP module: WASI preview1 and Spin 1's interfaces.
    fn prepare_spin1(&self, module: &Module) -> Result<Prepared, CompileError> {
        for needed in ["memory", "canonical_abi_realloc"] {
            if module.get_export(needed).is_none() {
                return Err(CompileError::Unsupported(format!(
                    "the module exports `{}` but not `{needed}`, which Spin 1's ABI needs",
                    crate::abi::spin1::EXPORT
                )));
            }
        }
        let pre = self.spin1_linker.instantiate_pre(module).map_err(|e| {
            CompileError::Unsupported(format!(
                "the Spin 1 module needs imports wafer does not provide (WASI preview1, spin-config, \
                 key-value, wasi-outbound-http and outbound-redis are available): {}",
                describe(&e)
            ))
        })?;
        Ok(Prepared::Spin1(crate::abi::spin1::Spin1Module::new(pre)))
    }

    /// Prepares a proxy-wasm module: WASI preview1, the proxy-wasm host calls and Layotto's Runtime ABI.
    fn prepare_proxy(
        &self,
        module: &Module,
        exports_abi: bool,
        forced: Option<Kind>,
    ) -> Result<Prepared, CompileError> {
        if let Some(kind) = forced.filter(|k| *k != Kind::ProxyWasm) {
            return Err(CompileError::Unsupported(format!(
                "this is a proxy-wasm module (it exports proxy_abi_version_0_2_*); it runs as kind \
                 `proxy-wasm`, not `{kind}`"
            )));
        }
        if !exports_abi {
            return Err(CompileError::Unsupported(
                "kind `proxy-wasm` needs a core module exporting proxy_abi_version_0_2_0 or 0_2_1"
                    .into(),
            ));
        }
        let unsupported = |e: wasmtime::Error| {
            CompileError::Unsupported(format!(
                "the module needs imports wafer does not provide (WASI preview1 and the proxy-wasm 0.2 \
                 host calls are available): {}",
                describe(&e)
            ))
        };
        let linker =
            crate::abi::proxy::linker_for(&self.proxy_linker, module).map_err(unsupported)?;
        let pre = linker.instantiate_pre(module).map_err(unsupported)?;
        Ok(Prepared::Proxy(crate::abi::proxy::ProxyModule::new(pre)))
    }

    pub(super) fn prepare_component(
        &self,
        component: &Component,
        forced: Option<Kind>,
    ) -> Result<Prepared, CompileError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.wasmtime)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_http = exports
            .iter()
            .any(|n| n.starts_with("wasi:http/incoming-handler@0.2."));
        let exports_run = exports.iter().any(|n| n.starts_with("wasi:cli/run@0.2."));
        let kind = match forced {
            Some(kind) => kind,
            None if exports_http => Kind::Http,
            None if exports_run => Kind::Command,
            None => {
                return Err(CompileError::Unsupported(format!(
                    "the component exports neither wasi:http/incoming-handler@0.2.x nor \
                     wasi:cli/run@0.2.x (it exports: {})",
                    if exports.is_empty() {
                        "nothing".to_string()
                    } else {
                        exports.join(", ")
                    }
                )))
            }
        };
        let pre = self
            .component_linker
            .instantiate_pre(component)
            .map_err(|e| {
                CompileError::Unsupported(format!(
                    "the component needs imports wafer does not provide (WASI 0.2 and wasi:http are \
                     available): {}",
                    describe(&e)
                ))
            })?;
        let shape = |e: wasmtime::Error| {
            CompileError::Unsupported(format!(
                "the component does not fit kind `{kind}`: {}",
                describe(&e)
            ))
        };
        match kind {
            Kind::Http => Ok(Prepared::Http(ProxyPre::new(pre).map_err(shape)?)),
            Kind::Command => Ok(Prepared::ComponentCommand(
                CommandPre::new(pre).map_err(shape)?,
            )),
            Kind::Wagi | Kind::ProxyWasm => Err(CompileError::Unsupported(format!(
                "kind `{kind}` needs a core module; this is a component"
            ))),
            Kind::Container => Err(not_an_image()),
        }
    }
}

/// The error of a wasm binary deployed as kind `container`.
fn not_an_image() -> CompileError {
    CompileError::Unsupported(
        "kind `container` takes an OCI image (a tarball or an oci:// reference), not a wasm binary"
            .into(),
    )
}
