//! The one wasmtime engine of a wafer process: configuration, linkers, the epoch ticker, and the two ways a
//! function becomes runnable — compiled from a binary at deploy, or loaded from its compiled artifact.

mod prepare;

use crate::abi::proxy::ProxyState;
use crate::abi::spin1::Spin1State;
use crate::compile_cache::{CompileCache, CompileCacheStats};
use crate::error::{describe, CompileError};
use crate::function::{Compiled, Function, Instances};
use crate::host::{ComponentState, ModuleState};
use crate::limits::MAX_TABLE_ELEMENTS;
use crate::reuse::{IdleInstances, IDLE_TIMEOUT};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wafer_api::Kind;
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Linker as ModuleLinker, Module};

/// How often the epoch advances; the granularity of deadlines and of yielding a busy guest.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The binary header of a core module (`\0asm`, version 1).
const MODULE_HEADER: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
/// The binary header of a component (`\0asm`, version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];

/// Counters of compile work, so callers (and tests) can tell a compile from a reuse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Binaries compiled to machine code.
    pub compiled: u64,
    /// Compiled artifacts loaded from disk without compiling.
    pub loaded: u64,
    /// Instances kept idle for functions that set `reuse`.
    pub idle: usize,
}

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Whether compiled code counts the instructions it runs, so a function's `fuel` can bound them; this
    /// costs every guest some speed.
    pub fuel: bool,
    /// Instance slots of the pooling allocator: how many instances (running or kept idle for reuse) may
    /// exist at once. Memories, tables and stacks are reserved for them up front and recycled, so an
    /// instantiation maps no memory. `None` allocates every instance on demand.
    pub pool: Option<u32>,
    /// Idle instances kept for functions that set `reuse`, across all functions.
    pub max_idle: usize,
    /// Where compiles find the machine code of functions compiled before, and keep what they compile.
    pub compile_cache: Option<Arc<CompileCache>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            fuel: false,
            pool: Some(1000),
            max_idle: 64,
            compile_cache: None,
        }
    }
}

/// wafer's wasmtime engine with its linkers. Create one per process and share it.
pub struct Engine {
    wasmtime: wasmtime::Engine,
    component_linker: ComponentLinker<ComponentState>,
    module_linker: ModuleLinker<ModuleState>,
    proxy_linker: ModuleLinker<ProxyState>,
    spin1_linker: ModuleLinker<Spin1State>,
    fingerprint: String,
    compile_cache: Option<Arc<CompileCache>>,
    pool_slots: Option<u32>,
    idle: Arc<IdleInstances>,
    compiled: AtomicU64,
    loaded: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

/// Why the engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the wasm engine: {0}")]
pub struct SetupError(String);

impl Engine {
    /// Builds the engine and starts its epoch ticker thread. When the pooling allocator cannot reserve
    /// its address space (a `ulimit -v`, say), the engine allocates on demand instead and says so.
    pub fn new(options: &EngineOptions) -> Result<Arc<Self>, SetupError> {
        let setup = |e: wasmtime::Error| SetupError(describe(&e));
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(options.fuel);
        if let Some(cache) = &options.compile_cache {
            config
                .enable_incremental_compilation(cache.clone())
                .map_err(setup)?;
        }
        let pooled = options.pool.and_then(|slots| {
            let mut pooled = config.clone();
            pooled.allocation_strategy(pool(slots));
            wasmtime::Engine::new(&pooled)
                .inspect_err(|e| {
                    tracing::warn!(
                        "pooling allocator unavailable, allocating instances on demand: {}",
                        describe(e)
                    )
                })
                .ok()
        });
        let pool_slots = options.pool.filter(|_| pooled.is_some());
        let wasmtime = match pooled {
            Some(engine) => engine,
            None => wasmtime::Engine::new(&config).map_err(setup)?,
        };

        let mut component_linker = ComponentLinker::new(&wasmtime);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(setup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(setup)?;
        wasmtime_wasi_config::add_to_linker(&mut component_linker, |s: &mut ComponentState| {
            wasmtime_wasi_config::WasiConfig::from(&*s.config)
        })
        .map_err(setup)?;
        crate::host::capabilities::add_to_linker(&mut component_linker).map_err(setup)?;
        crate::host::spin::add_to_linker(&mut component_linker).map_err(setup)?;
        let module_linker =
            wasi_module_linker(&wasmtime, |s: &mut ModuleState| &mut s.wasi).map_err(setup)?;
        let proxy_linker =
            wasi_module_linker(&wasmtime, |s: &mut ProxyState| &mut s.wasi).map_err(setup)?;
        let mut spin1_linker =
            wasi_module_linker(&wasmtime, |s: &mut Spin1State| &mut s.wasi).map_err(setup)?;
        crate::abi::spin1::add_to_linker(&mut spin1_linker).map_err(setup)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        start_ticker(wasmtime.clone(), ticker_stop.clone());
        let fingerprint = fingerprint(&wasmtime);
        Ok(Arc::new(Self {
            wasmtime,
            component_linker,
            module_linker,
            proxy_linker,
            spin1_linker,
            fingerprint,
            compile_cache: options.compile_cache.clone(),
            pool_slots,
            idle: Arc::new(IdleInstances::new(options.max_idle)),
            compiled: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            ticker_stop,
        }))
    }

    /// Identifies this engine build and configuration; compiled artifacts are only valid for the same one.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The pooling allocator's instance slots, or `None` when instances are allocated on demand.
    pub fn pool_slots(&self) -> Option<u32> {
        self.pool_slots
    }

    /// Drops the instances kept for reuse that have been idle longer than [`IDLE_TIMEOUT`]; returns how
    /// many are still kept. Call it now and then from the async runtime (stores drop their host state).
    pub fn evict_idle(&self) -> usize {
        self.idle.evict(IDLE_TIMEOUT)
    }

    /// A new, empty set of instances kept for `reuse`, for one function version (see
    /// [`Function::with_instances`]).
    pub fn instances(&self) -> Instances {
        Instances::new(&self.idle)
    }

    /// The compile cache's counters, when the engine has one.
    pub fn compile_cache_stats(&self) -> Option<CompileCacheStats> {
        self.compile_cache.as_ref().map(|cache| cache.stats())
    }

    /// Compile and load counters since start.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            loaded: self.loaded.load(Ordering::Relaxed),
            idle: self.idle.held(),
        }
    }

    /// Validates a binary, detects (or checks the forced) kind, compiles it and pre-instantiates it.
    ///
    /// This is CPU-heavy: call it off the async executor (e.g. `spawn_blocking`).
    pub fn compile(&self, bytes: &[u8], forced: Option<Kind>) -> Result<Compiled, CompileError> {
        let invalid = |e: wasmtime::Error| CompileError::Invalid(describe(&e));
        let layer = header(bytes)?;
        if let Some(cache) = &self.compile_cache {
            cache.settle();
        }
        let compiled = match layer {
            Layer::Module => Module::new(&self.wasmtime, bytes).map(Code::Module),
            Layer::Component => Component::new(&self.wasmtime, bytes).map(Code::Component),
        };
        // What was compiled is kept even when the binary as a whole is refused.
        if let Some(cache) = &self.compile_cache {
            cache.commit();
        }
        let (prepared, artifact) = match compiled.map_err(invalid)? {
            Code::Module(module) => {
                let artifact = module.serialize().map_err(invalid)?;
                (self.prepare_module(&module, forced)?, artifact)
            }
            Code::Component(component) => {
                let artifact = component.serialize().map_err(invalid)?;
                (self.prepare_component(&component, forced)?, artifact)
            }
        };
        self.compiled.fetch_add(1, Ordering::Relaxed);
        Ok(Compiled {
            function: Function::new(prepared, &self.idle),
            artifact,
        })
    }

    /// Loads a compiled artifact written by [`Engine::compile`] (memory-mapping it) and pre-instantiates it
    /// as `kind`, or as the kind detected when `kind` is `None`, with the same checks as a compile.
    ///
    /// The artifact must come from wafer's own blob store: wasmtime trusts compiled code.
    pub fn load(&self, artifact: &Path, kind: Option<Kind>) -> Result<Function, CompileError> {
        let invalid = |e: wasmtime::Error| CompileError::Invalid(describe(&e));
        let precompiled = wasmtime::Engine::detect_precompiled_file(artifact)
            .map_err(invalid)?
            .ok_or_else(|| {
                CompileError::Invalid(format!("{} is not a compiled artifact", artifact.display()))
            })?;
        // SAFETY: artifacts are written only by `compile` into wafer's data directory, named by the digest of
        // their source and this engine's fingerprint, and never modified afterwards.
        self.prepare_precompiled(
            precompiled,
            kind,
            || unsafe { Module::deserialize_file(&self.wasmtime, artifact) },
            || unsafe { Component::deserialize_file(&self.wasmtime, artifact) },
        )
    }

    /// [`Engine::load`] from the artifact's bytes, copied into memory rather than mapped.
    ///
    /// The bytes must be an artifact [`Engine::compile`] wrote for this engine: wasmtime trusts compiled
    /// code.
    pub fn load_bytes(
        &self,
        artifact: &[u8],
        kind: Option<Kind>,
    ) -> Result<Function, CompileError> {
        let precompiled = wasmtime::Engine::detect_precompiled(artifact)
            .ok_or_else(|| CompileError::Invalid("the bytes are not a compiled artifact".into()))?;
        // SAFETY: the caller hands over bytes `compile` produced for this engine (see above).
        self.prepare_precompiled(
            precompiled,
            kind,
            || unsafe { Module::deserialize(&self.wasmtime, artifact) },
            || unsafe { Component::deserialize(&self.wasmtime, artifact) },
        )
    }

    /// Deserialises an artifact of the given form with `module` or `component` and pre-instantiates it.
    fn prepare_precompiled(
        &self,
        precompiled: wasmtime::Precompiled,
        kind: Option<Kind>,
        module: impl FnOnce() -> wasmtime::Result<Module>,
        component: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> Result<Function, CompileError> {
        let invalid = |e: wasmtime::Error| CompileError::Invalid(describe(&e));
        let prepared = match precompiled {
            wasmtime::Precompiled::Module => {
                self.prepare_module(&module().map_err(invalid)?, kind)?
            }
            wasmtime::Precompiled::Component => {
                self.prepare_component(&component().map_err(invalid)?, kind)?
            }
        };
        self.loaded.fetch_add(1, Ordering::Relaxed);
        Ok(Function::new(prepared, &self.idle))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

enum Layer {
    Module,
    Component,
}

/// A binary compiled, before it is pre-instantiated.
enum Code {
    Module(Module),
    Component(Component),
}

/// Tells a core module from a component by its header, refusing anything else with a clear message.
/// Whether `bytes` start with a component's header (as opposed to a core module's).
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&COMPONENT_HEADER[..])
}

fn header(bytes: &[u8]) -> Result<Layer, CompileError> {
    match bytes.get(..8) {
        Some(h) if h == MODULE_HEADER => Ok(Layer::Module),
        Some(h) if h == COMPONENT_HEADER => Ok(Layer::Component),
        Some(h) if h[..4] == MODULE_HEADER[..4] => Err(CompileError::Invalid(format!(
            "unsupported WebAssembly version or layer {:02x?}",
            &h[4..]
        ))),
        _ if bytes.is_empty() => Err(CompileError::Invalid("the module is empty".into())),
        _ => Err(CompileError::Invalid(
            "the file does not start with the WebAssembly magic number `\\0asm` (text-format .wat \
             must be compiled to binary first)"
                .into(),
        )),
    }
}

/// A linker for core modules of store data `T` with WASI preview1, and preview0 as `wasi_unstable` for
/// older modules (early WAGI, old toolchains).
fn wasi_module_linker<T: Send + 'static>(
    engine: &wasmtime::Engine,
    wasi: fn(&mut T) -> &mut wasmtime_wasi::p1::WasiP1Ctx,
) -> wasmtime::Result<ModuleLinker<T>> {
    let mut linker = ModuleLinker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, wasi)?;
    wasmtime_wasi::p0::add_to_linker_async(&mut linker, wasi)?;
    Ok(linker)
}

/// How much of each freed table and stack slot stays resident for the next instance.
const KEEP_RESIDENT: usize = 128 * 1024;

/// How much of each freed linear memory may be reset in place (zeroed, or copied back from the
/// module's initial image) rather than handed back to the kernel. Linux's `PAGEMAP_SCAN` (6.7 and
/// later; without it, the first 128 KiB are, as before) tells which pages the instance wrote, so
/// only those are reset and the rest of a large memory costs nothing. Handed back, every page an
/// interpreter writes while it starts faults again in the slot's next instance: that was half of a
/// Python request's CPU. Measured at 16 connections: the JavaScript hello-world 1,236 to 2,359
/// req/s, Python 382 to 510 (its scattered writes outrun the 32 regions one scan reports, and the
/// pages past them are still handed back), a C component with an 8 MiB memory 8,639 to 10,826, the
/// small C ones 6 to 8% faster. Resetting the first 16 MiB of every memory without the scan made
/// Python 802 but halved that C component (9,300 to 5,131), so the scan it is.
const MEMORY_KEEP_RESIDENT: usize = 16 << 20;

/// [`MEMORY_KEEP_RESIDENT`] where the kernel reports written pages; elsewhere the first bytes kept are
/// reset whether written or not, which for a large memory costs more than the faults it saves.
fn memory_keep_resident() -> usize {
    if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
        MEMORY_KEEP_RESIDENT
    } else {
        KEEP_RESIDENT
    }
}

/// Freed slots that keep their memory (up to [`MEMORY_KEEP_RESIDENT`] each) for the module that last
/// used them, beyond those in use; wasmtime's default is 100. This bounds what idle slots hold.
const WARM_SLOTS: u32 = 32;

/// The pooling allocator's layout for `slots` instances. Components are made of several core instances
/// (an interpreter's component, a dozen or more), so those pools are deeper; everything is address space
/// reserved once, and only what instances touch becomes resident.
fn pool(slots: u32) -> wasmtime::InstanceAllocationStrategy {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(16))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        .total_stacks(slots)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(1 << 20)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_unused_warm_slots(WARM_SLOTS)
        // A freed memory's written pages are reset in place up to MEMORY_KEEP_RESIDENT; tables and
        // stacks keep their first pages too, zeroed rather than returned to the kernel: no madvise
        // and no TLB shootdown on the other cores.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(memory_keep_resident())
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT);
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until `stop` is set.
fn start_ticker(engine: wasmtime::Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("wafer-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker, timeouts will not fire: {e}");
    }
}

/// A short, stable hex digest of the engine's compatibility hash.
fn fingerprint(engine: &wasmtime::Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.0.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wagi_module() -> Vec<u8> {
        wat::parse_str(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory (export "memory") 1)
                (func (export "_start")))"#,
        )
        .unwrap()
    }

    #[test]
    fn kinds_are_detected_or_forced() {
        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let module = wagi_module();
        assert_eq!(
            engine.compile(&module, None).unwrap().function.kind(),
            Kind::Wagi
        );
        assert_eq!(
            engine
                .compile(&module, Some(Kind::Command))
                .unwrap()
                .function
                .kind(),
            Kind::Command
        );
        assert!(matches!(
            engine.compile(&module, Some(Kind::Http)),
            Err(CompileError::Unsupported(_))
        ));
        let empty_component = wat::parse_str("(component)").unwrap();
        assert!(matches!(
            engine.compile(&empty_component, None),
            Err(CompileError::Unsupported(m)) if m.contains("exports neither")
        ));
        assert!(matches!(
            engine.compile(b"\0asm\x02\0\0\0", None),
            Err(CompileError::Invalid(m)) if m.contains("version")
        ));
        assert!(matches!(
            engine.compile(b"", None),
            Err(CompileError::Invalid(_))
        ));
    }

    #[test]
    fn a_stored_artifact_loads_without_compiling() {
        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let compiled = engine.compile(&wagi_module(), None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("artifact.cwasm");
        std::fs::write(&path, &compiled.artifact).unwrap();
        let loaded = engine.load(&path, None).unwrap();
        assert_eq!(loaded.kind(), Kind::Wagi);
        assert!(matches!(
            engine.load(&path, Some(Kind::Http)),
            Err(CompileError::Unsupported(_))
        ));
        assert_eq!(
            engine.stats(),
            EngineStats {
                compiled: 1,
                loaded: 1,
                idle: 0
            }
        );
        // A loaded artifact stays memory-mapped: never rewrite it in place.
        let junk = dir.path().join("junk.cwasm");
        std::fs::write(&junk, b"not an artifact").unwrap();
        assert!(engine.load(&junk, None).is_err());
    }

    #[test]
    fn the_fingerprint_is_stable_for_one_build_and_configuration() {
        let (a, b) = (
            Engine::new(&EngineOptions::default()).unwrap(),
            Engine::new(&EngineOptions::default()).unwrap(),
        );
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        // Fuel metering changes compiled code, so its artifacts must not be shared.
        assert_ne!(
            a.fingerprint(),
            Engine::new(&EngineOptions {
                fuel: true,
                ..EngineOptions::default()
            })
            .unwrap()
            .fingerprint()
        );
    }
}
