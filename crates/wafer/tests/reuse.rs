//! Instance reuse: without `reuse` every request gets a fresh instance; with it, an instance serves several
//! requests of its own function version only, and one that trapped is never used again.
//!
//! The Python example answers with `x-instance-requests`, the number of requests its instance has served.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

/// How many requests the instance that answered `GET /fn/{name}` has served, counting this one.
async fn served(server: &Server, name: &str) -> String {
    let (status, headers, body) = server.call(Method::GET, &format!("/fn/{name}"), "").await;
    assert_eq!(status, 200, "{body}");
    headers["x-instance-requests"]
        .to_str()
        .expect("ASCII header")
        .to_string()
}

/// Waits until the server keeps exactly `n` idle instances: an instance goes back to its pool a moment
/// after its response has been sent.
async fn idle(server: &Server, n: u64) {
    wait_for(
        &format!("{n} idle instances"),
        Duration::from_secs(10),
        || async { (server.metric("wafer_idle_instances").await == n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn without_reuse_no_state_survives_a_request() {
    let server = Server::start();
    server
        .deploy_ok("py", example("http-python/hello.wasm"), json!({}))
        .await;
    for _ in 0..3 {
        assert_eq!(served(&server, "py").await, "1");
    }
    assert_eq!(server.metric("wafer_idle_instances").await, 0);
}

#[tokio::test]
async fn a_reused_instance_serves_only_its_own_function_and_version() {
    let server = Server::start();
    let python = example("http-python/hello.wasm");
    server
        .deploy_ok("a", python.clone(), json!({"reuse": 3}))
        .await;
    server
        .deploy_ok("b", python.clone(), json!({"reuse": 3}))
        .await;

    // One instance serves three requests in turn, then is dropped.
    assert_eq!(served(&server, "a").await, "1");
    idle(&server, 1).await;
    assert_eq!(served(&server, "a").await, "2");
    idle(&server, 1).await;
    assert_eq!(served(&server, "a").await, "3");
    assert_eq!(served(&server, "a").await, "1");
    idle(&server, 1).await;

    // `a` keeps an instance that has served one request; `b`, the same bytes, never gets it.
    assert_eq!(served(&server, "b").await, "1");
    idle(&server, 2).await;

    // A new version starts afresh: the old version's kept instance goes with it.
    server
        .deploy_ok("a", python.clone(), json!({"reuse": 3}))
        .await;
    idle(&server, 1).await;
    assert_eq!(served(&server, "a").await, "1");
    idle(&server, 2).await;

    // A request that traps takes its instance down with it.
    let (status, _) = server.get_text("/fn/a/fail").await;
    assert_eq!(status, 500);
    assert_eq!(served(&server, "a").await, "1");
}

#[tokio::test]
async fn reuse_is_refused_where_it_cannot_apply() {
    let server = Server::start();
    for (module, config) in [
        (example("wagi-c/hello.wasm"), json!({"reuse": 5})),
        (example("http-python/hello.wasm"), json!({"reuse": 0})),
    ] {
        let (status, body) = server.deploy("f", module, config).await;
        assert_error(
            status,
            &body,
            reqwest::StatusCode::BAD_REQUEST,
            "invalid_config",
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains("reuse"),
            "{body}"
        );
    }
}
