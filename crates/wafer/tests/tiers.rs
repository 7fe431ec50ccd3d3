//! Tiered compilation end to end: a small module answers from the baseline compiler's code at once,
//! its optimizing compile follows in the background and takes over, and only that code is kept on
//! disk.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const TIERED: &[&str] = &["--baseline-compile-limit", "1MiB"];

/// Waits until no module runs baseline code, and returns how many optimizing compiles there were.
async fn optimized(server: &Server) -> u64 {
    wait_for(
        "the optimizing compiles",
        Duration::from_secs(60),
        || async { (server.metric("wafer_baseline_modules").await == 0).then_some(()) },
    )
    .await;
    server.metric("wafer_compilations_total").await
}

/// The compiled artifacts in the server's data directory.
fn artifacts(server: &Server) -> Vec<PathBuf> {
    let mut found: Vec<_> = server
        .module_files()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_small_module_answers_from_baseline_code_then_from_optimized_code() {
    let server = Server::start_with(TIERED);
    let module = wagi_wat("Content-Type: text/plain\n\ntiered");
    server.deploy_ok("tiered", module, json!({})).await;
    assert_eq!(server.metric("wafer_baseline_compilations_total").await, 1);
    assert_eq!(server.get_text("/fn/tiered").await.1, "tiered");

    assert_eq!(optimized(&server).await, 1, "{}", server.logs());
    assert_eq!(artifacts(&server).len(), 1);
    assert_eq!(server.get_text("/fn/tiered").await.1, "tiered");
    // The optimized code took the baseline code's place in the code cache.
    assert_eq!(server.metric("wafer_code_cache_modules").await, 1);

    // Only the optimized code is on disk: a restart loads it and compiles nothing.
    let server = server.restart_with(TIERED);
    assert_eq!(server.get_text("/fn/tiered").await.1, "tiered");
    assert_eq!(server.metric("wafer_compilations_total").await, 0);
    assert_eq!(server.metric("wafer_baseline_compilations_total").await, 0);
    assert_eq!(server.metric("wafer_artifact_loads_total").await, 1);
}

#[tokio::test]
async fn a_module_over_the_limit_takes_the_optimizing_compiler_at_once() {
    let server = Server::start_with(&["--baseline-compile-limit", "100"]);
    let module = wagi_wat("Content-Type: text/plain\n\nlarge");
    assert!(module.len() > 100);
    server.deploy_ok("large", module, json!({})).await;
    assert_eq!(server.metric("wafer_baseline_compilations_total").await, 0);
    assert_eq!(server.metric("wafer_compilations_total").await, 1);
    assert_eq!(artifacts(&server).len(), 1);
    assert_eq!(server.get_text("/fn/large").await.1, "large");
}

#[tokio::test]
async fn a_module_loaded_without_its_artifact_is_tiered_the_same_way() {
    let server = Server::start();
    let module = wagi_wat("Content-Type: text/plain\n\nreloaded");
    server.deploy_ok("reloaded", module, json!({})).await;
    let [artifact] = artifacts(&server).try_into().expect("one artifact");
    std::fs::remove_file(&artifact).unwrap();

    // The background loader finds no artifact: baseline code first, then the optimizing compile.
    let server = server.restart_with(TIERED);
    assert_eq!(server.get_text("/fn/reloaded").await.1, "reloaded");
    assert_eq!(server.metric("wafer_baseline_compilations_total").await, 1);
    assert_eq!(optimized(&server).await, 1, "{}", server.logs());
    assert_eq!(artifacts(&server), vec![artifact]);
    assert_eq!(server.get_text("/fn/reloaded").await.1, "reloaded");
}

#[tokio::test]
async fn a_module_deleted_before_its_optimizing_compile_keeps_nothing_on_disk() {
    let server = Server::start_with(TIERED);
    for i in 0..5 {
        let name = format!("gone{i}");
        let module = wagi_wat(&format!("Content-Type: text/plain\n\n{name}"));
        server.deploy_ok(&name, module, json!({})).await;
        let (status, _, _) = server
            .call(Method::DELETE, &format!("/v1/functions/{name}"), "")
            .await;
        assert_eq!(status, 204);
    }
    optimized(&server).await;
    assert_eq!(server.module_files(), Vec::<PathBuf>::new());
    assert_eq!(server.metric("wafer_code_cache_modules").await, 0);
}
