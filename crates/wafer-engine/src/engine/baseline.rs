//! The baseline tier: a deploy's first machine code, from wasmtime's baseline compiler (Winch).
//!
//! Winch compiles a function in one pass, with no optimization: a small C module in about a seventh of
//! Cranelift's time on this project's machine (6.7 against 49 ms for the WAGI C hello), with code that
//! runs slower. A function compiled here answers at once; the caller then compiles it with
//! [`Engine::compile`] (the optimizing tier, whose artifact is what a node keeps on disk) and moves new
//! calls over. Baseline code is never written to disk: after a restart, a function whose optimizing
//! compile had not finished is compiled again.
//!
//! The tier has a wasmtime engine of its own, since a compiler is an engine setting. Its instances are
//! allocated on demand rather than pooled: it serves each function only until that function's
//! optimizing compile is done, so a reserved pool would cost address space for little. Epoch deadlines
//! and fuel work under Winch as under Cranelift, so a baseline guest keeps its timeout and its fuel.

use super::{header, Engine, Runtime};
use crate::error::CompileError;
use crate::function::Function;
use std::sync::atomic::Ordering;
use wafer_api::Kind;

/// A function compiled by the baseline tier.
pub struct Baseline {
    /// The function, ready to call.
    pub function: Function,
    /// The size of its compiled image in bytes (it has no artifact to measure).
    pub bytes: u64,
}

/// The baseline tier's runtime for engines set up as `config` is, or `None` when `limit` is 0 or
/// wasmtime refuses the setup (then every binary takes the optimizing compiler, as without the tier).
pub(super) fn runtime(config: &wasmtime::Config, limit: usize) -> Option<Runtime> {
    if limit == 0 {
        return None;
    }
    let mut config = config.clone();
    config.strategy(wasmtime::Strategy::Winch);
    let built = wasmtime::Engine::new(&config).and_then(Runtime::new);
    built
        .inspect_err(|e| {
            tracing::warn!(
                "baseline compiler unavailable, every binary takes the optimizing compiler: {}",
                super::describe(e)
            )
        })
        .ok()
}

impl Engine {
    /// Compiles `bytes` with the baseline compiler and pre-instantiates it as `forced` or the kind it
    /// is, when this engine has a baseline tier and the binary is at most its limit. Compile it with
    /// [`Engine::compile`] afterwards, and call that from then on.
    ///
    /// `Ok(None)` when there is no baseline tier for this binary: none, too large, or refused by the
    /// baseline compiler (Winch does not implement every wasm proposal, and a malformed binary is for
    /// the optimizing compile to describe). An error is one the optimizing compile would give too: the
    /// binary is not wasm, or it is not a function of the kind asked.
    ///
    /// This is CPU work: call it off the async executor.
    pub fn compile_baseline(
        &self,
        bytes: &[u8],
        forced: Option<Kind>,
    ) -> Result<Option<Baseline>, CompileError> {
        let Some(runtime) = self
            .baseline
            .as_ref()
            .filter(|_| bytes.len() <= self.baseline_limit)
        else {
            return Ok(None);
        };
        let Ok(code) = header(bytes)?.compile(&runtime.wasmtime, bytes) else {
            return Ok(None);
        };
        let size = code.image_len() as u64;
        let prepared = runtime.prepare(code, forced)?;
        self.compiled_baseline.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Baseline {
            function: Function::new(prepared, &self.idle),
            bytes: size,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Engine, EngineOptions};
    use wafer_api::Kind;

    fn engine(limit: usize) -> std::sync::Arc<Engine> {
        Engine::new(&EngineOptions {
            pool: None,
            baseline_limit: limit,
            ..EngineOptions::default()
        })
        .unwrap()
    }

    fn command(body: &str) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
                (memory (export "memory") 1)
                (func (export "_start") {body}))"#
        ))
        .unwrap()
    }

    #[test]
    fn small_binaries_take_the_baseline_tier_and_others_do_not() {
        let tiered = engine(1 << 20);
        let baseline = tiered
            .compile_baseline(&command(""), None)
            .unwrap()
            .expect("a baseline compile");
        assert_eq!(baseline.function.kind(), Kind::Wagi);
        assert!(baseline.bytes > 0);
        let stats = tiered.stats();
        assert_eq!((stats.compiled_baseline, stats.compiled), (1, 0));

        // Over the limit, or with no tier at all: the optimizing compiler alone.
        for limit in [command("").len() - 1, 0] {
            let untiered = engine(limit);
            assert!(untiered
                .compile_baseline(&command(""), None)
                .unwrap()
                .is_none());
        }
    }

    /// Runs `function` as a command under `limits`.
    async fn run(
        function: &crate::Function,
        limits: crate::Limits,
    ) -> Result<wafer_api::CommandOutput, crate::InvokeError> {
        let settings = crate::Settings {
            limits,
            ..crate::Settings::default()
        };
        function
            .run_command(
                bytes::Bytes::new(),
                &[],
                &settings,
                crate::Tracer::discard(),
            )
            .await
    }

    #[tokio::test]
    async fn a_baseline_guest_keeps_its_deadline_and_its_fuel() {
        let spin = command("(loop (br 0))");
        let engine = engine(1 << 20);
        let function = engine
            .compile_baseline(&spin, None)
            .unwrap()
            .unwrap()
            .function;
        let limits = crate::Limits {
            timeout: std::time::Duration::from_millis(200),
            ..crate::Limits::default()
        };
        let ended = run(&function, limits).await;
        assert!(
            matches!(ended, Err(crate::InvokeError::Timeout(_))),
            "{ended:?}"
        );

        let metered = Engine::new(&EngineOptions {
            pool: None,
            fuel: true,
            baseline_limit: 1 << 20,
            ..EngineOptions::default()
        })
        .unwrap();
        let function = metered
            .compile_baseline(&spin, None)
            .unwrap()
            .unwrap()
            .function;
        let limits = crate::Limits {
            fuel: Some(100_000),
            ..crate::Limits::default()
        };
        let ended = run(&function, limits).await;
        assert!(
            matches!(ended, Err(crate::InvokeError::FuelExhausted(100_000))),
            "{ended:?}"
        );
    }

    #[test]
    fn the_optimizing_compile_decides_what_the_baseline_compiler_refuses() {
        let engine = engine(1 << 20);
        // Tail calls: valid wasm that Winch does not compile.
        let tail_call = wat::parse_str(
            r#"(module
                (memory (export "memory") 1)
                (func $f (return_call $g))
                (func $g)
                (func (export "_start") (call $f)))"#,
        )
        .unwrap();
        assert!(engine.compile_baseline(&tail_call, None).unwrap().is_none());
        assert_eq!(
            engine.compile(&tail_call, None).unwrap().function.kind(),
            Kind::Wagi
        );
        // Malformed: no baseline, and the optimizing compile names the fault.
        let mut broken = command("");
        broken.truncate(broken.len() - 3);
        assert!(engine.compile_baseline(&broken, None).unwrap().is_none());
        assert!(engine.compile(&broken, None).is_err());
        // Not wasm at all, or not the kind asked: the same error either tier gives.
        assert!(engine.compile_baseline(b"nope", None).is_err());
        assert!(engine
            .compile_baseline(&command(""), Some(Kind::Http))
            .is_err());
    }
}
