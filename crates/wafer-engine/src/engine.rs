//! The engine of a wafer process: its wasmtime engines (see `runtime.rs`), the epoch ticker, and the two
//! ways a function becomes runnable — compiled from a binary at deploy, or loaded from its compiled
//! artifact.

mod baseline;
mod code;

pub use baseline::Baseline;
mod prepare;
mod runtime;

use crate::compile_cache::{CompileCache, CompileCacheStats};
use crate::error::{describe, CompileError};
use crate::function::{Compiled, Function, Instances, Prepared};
use crate::reuse::{IdleInstances, IDLE_TIMEOUT};
use code::Code;
use runtime::{Reset, Runtime};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wafer_api::Kind;
use wasmtime::component::Component;
use wasmtime::Module;

/// How often the epoch advances; the granularity of deadlines and of yielding a busy guest.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The binary header of a core module (`\0asm`, version 1).
const MODULE_HEADER: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
/// The binary header of a component (`\0asm`, version 0x0d, layer 1).
const COMPONENT_HEADER: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];

/// Counters of compile work, so callers (and tests) can tell a compile from a reuse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Binaries compiled to machine code by the optimizing compiler.
    pub compiled: u64,
    /// Binaries compiled by the baseline compiler (see [`Engine::compile_baseline`]).
    pub compiled_baseline: u64,
    /// Compiled artifacts loaded from disk without compiling.
    pub loaded: u64,
    /// Instances kept idle for functions that set `reuse`.
    pub idle: usize,
    /// Functions compiled or loaded that run in the engine for large memory images.
    pub large_images: u64,
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
    /// The largest binary [`Engine::compile_baseline`] compiles, in bytes; 0 turns the baseline tier
    /// off.
    pub baseline_limit: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            fuel: false,
            pool: Some(1000),
            max_idle: 64,
            compile_cache: None,
            baseline_limit: 0,
        }
    }
}

/// wafer's wasmtime engines with their linkers. Create one per process and share it.
pub struct Engine {
    /// Where functions run, and where every binary is compiled.
    runtime: Runtime,
    /// Where functions whose memory carries a large initial image run, when instances are pooled: the
    /// same compiled code, a pool that resets their memory by a fixed span (see [`LARGE_IMAGE`]).
    large_images: Option<Runtime>,
    /// Where binaries of up to `baseline_limit` bytes are first compiled by the baseline compiler
    /// (see `baseline.rs`).
    baseline: Option<Runtime>,
    baseline_limit: usize,
    fingerprint: String,
    compile_cache: Option<Arc<CompileCache>>,
    pool_slots: Option<u32>,
    idle: Arc<IdleInstances>,
    compiled: AtomicU64,
    compiled_baseline: AtomicU64,
    loaded: AtomicU64,
    placed_large: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

/// The bytes of a compiled image besides its machine code (mostly the initial contents of its
/// memories) from which a function runs in the engine for large images. Compiled languages carry
/// kilobytes there; interpreters built into components carry their started heap, and whether the span
/// reset pays depends on how widely they write it, which nothing in the binary tells. Measured with a
/// fresh instance per request: componentize-py components (17.5 to 19.7 MiB) serve 2.0 to 2.5 times as
/// many requests at 16 and 64 connections in that engine, as fast at one; a componentize-js one (14.6
/// MiB), whose writes the page scan covers, served up to a fifth more at 16 connections there but 0.55
/// times as many at one, so it stays.
const LARGE_IMAGE: usize = 16 << 20;

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
        let baseline = baseline::runtime(&config, options.baseline_limit);
        if let Some(cache) = &options.compile_cache {
            config
                .enable_incremental_compilation(cache.clone())
                .map_err(setup)?;
        }
        let pooled = |slots: u32, reset: Reset| {
            let mut pooled = config.clone();
            pooled.allocation_strategy(runtime::pool(slots, reset));
            wasmtime::Engine::new(&pooled).inspect_err(|e| {
                tracing::warn!(
                    "pooling allocator unavailable ({reset:?} reset), allocating instances on \
                     demand: {}",
                    describe(e)
                )
            })
        };
        let written = options
            .pool
            .and_then(|slots| pooled(slots, Reset::Written).ok());
        let pool_slots = options.pool.filter(|_| written.is_some());
        let wasmtime = match written {
            Some(engine) => engine,
            None => wasmtime::Engine::new(&config).map_err(setup)?,
        };
        let large_images = match pool_slots {
            Some(slots) => pooled(slots, Reset::Span)
                .ok()
                .map(Runtime::new)
                .transpose()
                .map_err(setup)?,
            None => None,
        };
        let runtime = Runtime::new(wasmtime).map_err(setup)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticked = std::iter::once(&runtime)
            .chain(&large_images)
            .chain(&baseline)
            .map(|r| r.wasmtime.clone())
            .collect();
        start_ticker(ticked, ticker_stop.clone());
        let fingerprint = fingerprint(&runtime.wasmtime);
        Ok(Arc::new(Self {
            runtime,
            large_images,
            baseline,
            baseline_limit: options.baseline_limit,
            fingerprint,
            compile_cache: options.compile_cache.clone(),
            pool_slots,
            idle: Arc::new(IdleInstances::new(options.max_idle)),
            compiled: AtomicU64::new(0),
            compiled_baseline: AtomicU64::new(0),
            loaded: AtomicU64::new(0),
            placed_large: AtomicU64::new(0),
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
            compiled_baseline: self.compiled_baseline.load(Ordering::Relaxed),
            loaded: self.loaded.load(Ordering::Relaxed),
            idle: self.idle.held(),
            large_images: self.placed_large.load(Ordering::Relaxed),
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
        let wasmtime = &self.runtime.wasmtime;
        let compiled = layer.compile(wasmtime, bytes);
        // What was compiled is kept even when the binary as a whole is refused.
        if let Some(cache) = &self.compile_cache {
            cache.commit();
        }
        let code = compiled.map_err(invalid)?;
        let artifact = code.serialize().map_err(invalid)?;
        let prepared = match self.large_runtime(code.image_data()) {
            // SAFETY: `artifact` was serialised just above, by an engine configured as every one of ours.
            Some(large) => large.prepare(
                unsafe { Code::deserialize(code.form(), &large.wasmtime, &artifact) }
                    .map_err(invalid)?,
                forced,
            )?,
            None => self.runtime.prepare(code, forced)?,
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
        let runtime = self.runtime_for(code::artifact_file_image_data(artifact));
        // SAFETY: artifacts are written only by `compile` into wafer's data directory, named by the digest of
        // their source and this engine's fingerprint, and never modified afterwards.
        let code = unsafe { Code::deserialize_file(precompiled, &runtime.wasmtime, artifact) }
            .map_err(invalid)?;
        Ok(self.loaded(runtime.prepare(code, kind)?))
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
        let runtime = self.runtime_for(code::artifact_image_data(artifact));
        // SAFETY: the caller hands over bytes `compile` produced for this engine (see above).
        let code = unsafe { Code::deserialize(precompiled, &runtime.wasmtime, artifact) }
            .map_err(|e| CompileError::Invalid(describe(&e)))?;
        Ok(self.loaded(runtime.prepare(code, kind)?))
    }

    fn loaded(&self, prepared: Prepared) -> Function {
        self.loaded.fetch_add(1, Ordering::Relaxed);
        Function::new(prepared, &self.idle)
    }

    /// The engine for large images, when there is one and an image of `image_data` bytes besides its
    /// code is large (see [`LARGE_IMAGE`]); counted as placed there.
    fn large_runtime(&self, image_data: usize) -> Option<&Runtime> {
        let large = self
            .large_images
            .as_ref()
            .filter(|_| image_data >= LARGE_IMAGE)?;
        self.placed_large.fetch_add(1, Ordering::Relaxed);
        Some(large)
    }

    /// Where an artifact of `image_data` bytes besides its code runs: [`Engine::large_runtime`], or the
    /// engine for all others (also when its size could not be read: loading it checks it).
    fn runtime_for(&self, image_data: Option<usize>) -> &Runtime {
        image_data
            .and_then(|bytes| self.large_runtime(bytes))
            .unwrap_or(&self.runtime)
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

impl Layer {
    /// Compiles `bytes`, a binary of this layer, with `engine`'s compiler.
    fn compile(self, engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Code> {
        match self {
            Self::Module => Module::new(engine, bytes).map(Code::Module),
            Self::Component => Component::new(engine, bytes).map(Code::Component),
        }
    }
}

/// Whether `bytes` start with a component's header (as opposed to a core module's).
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.get(..8) == Some(&COMPONENT_HEADER[..])
}

/// Tells a core module from a component by its header, refusing anything else with a clear message.
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

/// Advances the engines' epoch every [`EPOCH_TICK`] until `stop` is set.
fn start_ticker(engines: Vec<wasmtime::Engine>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("wafer-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engines.iter().for_each(wasmtime::Engine::increment_epoch);
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
                compiled_baseline: 0,
                loaded: 1,
                idle: 0,
                large_images: 0,
            }
        );
        // A loaded artifact stays memory-mapped: never rewrite it in place.
        let junk = dir.path().join("junk.cwasm");
        std::fs::write(&junk, b"not an artifact").unwrap();
        assert!(engine.load(&junk, None).is_err());
    }

    /// A command whose memory holds `len` bytes of `a` from 1 MiB: it prints the byte at 4 MiB (as far as
    /// `len` reaches), then overwrites it with `b`.
    fn image_module(len: usize) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
                (import "wasi_snapshot_preview1" "fd_write"
                    (func $fd_write (param i32 i32 i32 i32) (result i32)))
                (memory (export "memory") 320)
                (data (i32.const 0x100000) "{}")
                (func (export "_start")
                    (i32.store (i32.const 0) (i32.const 0x400000))
                    (i32.store (i32.const 4) (i32.const 1))
                    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (i32.store8 (i32.const 0x400000) (i32.const 0x62))))"#,
            "a".repeat(len)
        ))
        .unwrap()
    }

    async fn printed(function: &Function) -> String {
        let output = function
            .run_command(
                bytes::Bytes::new(),
                &[],
                &crate::Settings::default(),
                crate::Tracer::discard(),
            )
            .await
            .unwrap();
        output.stdout
    }

    #[tokio::test]
    async fn a_large_memory_image_runs_in_its_own_pool_and_starts_clean_each_time() {
        let engine = Engine::new(&EngineOptions::default()).unwrap();
        let large = engine
            .compile(&image_module(LARGE_IMAGE), Some(Kind::Command))
            .unwrap();
        assert_eq!(engine.stats().large_images, 1);
        // Each instance sees the image as the module set it, whatever the one before wrote.
        for _ in 0..3 {
            assert_eq!(printed(&large.function).await, "a");
        }
        // A stored artifact goes to the same engine; a small image stays in the other.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.cwasm");
        std::fs::write(&path, &large.artifact).unwrap();
        let loaded = engine.load(&path, Some(Kind::Command)).unwrap();
        assert_eq!(printed(&loaded).await, "a");
        let copied = engine
            .load_bytes(&large.artifact, Some(Kind::Command))
            .unwrap();
        assert_eq!(printed(&copied).await, "a");
        assert_eq!(engine.stats().large_images, 3);
        let small = engine
            .compile(&image_module(2 << 20), Some(Kind::Command))
            .unwrap();
        assert_eq!(engine.stats().large_images, 3);
        assert_eq!(printed(&small.function).await, "\0");
        // Without pooling there is one engine for all.
        let unpooled = Engine::new(&EngineOptions {
            pool: None,
            ..EngineOptions::default()
        })
        .unwrap();
        let large = unpooled
            .load_bytes(&large.artifact, Some(Kind::Command))
            .unwrap();
        assert_eq!(printed(&large).await, "a");
        assert_eq!(unpooled.stats().large_images, 0);
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
