//! The per-invocation cost inside the engine, with the pooling allocator and without:
//!
//! - `instantiate/{module,component}/…`: only the time to create the instance from its pre-instantiated
//!   form, as the invocation's trace reports it;
//! - `invoke/{module,component}/…`: a whole invocation — new store and host state, instantiate, run, read
//!   the answer, drop.
//!
//! The module is an empty WASI command; the component is the minimal C hello-world wasi:http component of
//! `bench/guests/hello-c`. Run with `cargo bench -p wafer-engine --bench instantiate`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wafer_engine::{Engine, EngineOptions, Function, Kind, Mount, Settings, Tracer, Usage};

const EMPTY_COMMAND: &str = r#"(module (memory (export "memory") 1) (func (export "_start")))"#;

fn component_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/guests/hello-c/hello.wasm")
}

/// One invocation of `function`: a job run for the module, a `GET /` for the component.
async fn invoke(function: &Function, settings: &Settings) -> Usage {
    let (tracer, trace) = Tracer::channel();
    match function.kind() {
        Kind::Http => {
            let request = http::Request::get("/").body(Bytes::new()).expect("request");
            let response = function
                .serve_http(request, &Mount::default(), settings, tracer)
                .await
                .expect("the component answers");
            let body = response.into_body().collect().await.expect("body");
            assert!(!body.to_bytes().is_empty());
        }
        _ => {
            let output = function
                .run_command(Bytes::new(), &[], settings, tracer)
                .await
                .expect("the module runs");
            assert_eq!(output.exit_code, 0);
        }
    }
    trace.await.expect("trace").usage
}

fn per_invocation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let module = wat::parse_str(EMPTY_COMMAND).expect("WAT");
    let component = std::fs::read(component_path()).expect("bench/guests/hello-c/hello.wasm");
    let settings = Settings {
        name: "bench".into(),
        ..Settings::default()
    };
    let engines: [(&str, Arc<Engine>); 2] = [
        (
            "pooling",
            Engine::new(&EngineOptions::default()).expect("engine"),
        ),
        (
            "on-demand",
            Engine::new(&EngineOptions {
                pool: None,
                ..EngineOptions::default()
            })
            .expect("engine"),
        ),
    ];
    for (allocator, engine) in &engines {
        let functions = [
            (
                "module",
                engine
                    .compile(&module, Some(Kind::Command))
                    .expect("compile")
                    .function,
            ),
            (
                "component",
                engine.compile(&component, None).expect("compile").function,
            ),
        ];
        for (kind, function) in &functions {
            c.benchmark_group("instantiate").bench_function(
                BenchmarkId::new(*kind, allocator),
                |b| {
                    b.iter_custom(|iters| {
                        runtime.block_on(async {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += invoke(function, &settings).await.instantiate;
                            }
                            total
                        })
                    })
                },
            );
            c.benchmark_group("invoke")
                .bench_function(BenchmarkId::new(*kind, allocator), |b| {
                    b.iter_custom(|iters| {
                        runtime.block_on(async {
                            let started = Instant::now();
                            for _ in 0..iters {
                                invoke(function, &settings).await;
                            }
                            started.elapsed()
                        })
                    })
                });
        }
    }
}

criterion_group!(benches, per_invocation);
criterion_main!(benches);
