//! End-to-end: concurrency limits shed load with 429 and 503 instead of piling up instances.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

const HELLO: &str = "Content-Type: text/plain\n\nhello";

/// Polls `/metrics` until `n` instances are running.
async fn wait_for_active(server: &Server, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("wafer_active_instances").await != n {
        assert!(
            Instant::now() < deadline,
            "never reached {n} active instances"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Calls `busy` (a function that spins until its timeout) and, once it holds an instance, `probe`.
/// Checks that `busy` timed out and that `probe` was shed with `code` and `Retry-After`, then waits until
/// the busy instance is gone.
async fn probe_while_busy(server: &Server, busy: &str, probe: &str, want: StatusCode, code: &str) {
    let busy_call = server.get_json(busy);
    let probe_call = async {
        wait_for_active(server, 1).await;
        server.call(Method::GET, probe, "").await
    };
    let ((busy_status, busy_body), (status, headers, body)) = tokio::join!(busy_call, probe_call);
    assert_error(
        busy_status,
        &busy_body,
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
    );
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_error(status, &body, want, code);
    assert_eq!(headers["retry-after"], "1");
    wait_for_active(server, 0).await;
}

#[tokio::test]
async fn a_function_at_its_concurrency_limit_answers_429_after_a_bounded_wait() {
    let server = Server::start_with(&["--queue-wait", "200ms"]);
    server
        .deploy_ok(
            "spin",
            spin_wat(),
            json!({"timeout_ms": 1500, "max_concurrency": 1}),
        )
        .await;
    let (_, info) = server.get_json("/v1/functions/spin").await;
    assert_eq!(info["config"]["max_concurrency"], 1);
    probe_while_busy(
        &server,
        "/fn/spin",
        "/fn/spin",
        StatusCode::TOO_MANY_REQUESTS,
        "concurrency_limit",
    )
    .await;
    // Once the first call ends its slot is free again.
    let (status, body) = server.get_json("/fn/spin").await;
    assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "timeout");
}

#[tokio::test]
async fn the_instance_cap_sheds_load_with_503() {
    let server = Server::start_with(&["--max-instances", "1"]);
    server
        .deploy_ok("spin", spin_wat(), json!({"timeout_ms": 1500}))
        .await;
    server.deploy_ok("good", wagi_wat(HELLO), json!({})).await;
    probe_while_busy(
        &server,
        "/fn/spin",
        "/fn/good",
        StatusCode::SERVICE_UNAVAILABLE,
        "at_capacity",
    )
    .await;
    assert_eq!(
        server.get_text("/fn/good").await,
        (StatusCode::OK, "hello".into())
    );
}

#[tokio::test]
async fn nonsensical_limits_are_refused() {
    let server = Server::start();
    let (status, body) = server
        .deploy("zero", wagi_wat(HELLO), json!({"max_concurrency": 0}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let out = wafer_cli(&server.url, &["serve", "--max-instances", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--max-instances"), "{}", stderr(&out));
}

#[tokio::test]
async fn a_taken_address_stops_the_start_with_one_error_and_touches_nothing() {
    let server = Server::start();
    let taken = server.url.trim_start_matches("http://");
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let data_dir = data_dir.to_string_lossy();
    let out = wafer_cli(
        &server.url,
        &["serve", "--listen", taken, "--data-dir", &data_dir],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("error: cannot listen on {taken}: ")),
        "{err}"
    );
    // The cause is named once, and nothing was started that then complains on the way out.
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(!err.contains("ERROR") && !err.contains("WARN"), "{err}");
    assert!(!data.path().join("data").exists(), "{err}");
}

#[tokio::test]
async fn a_config_file_sets_the_server_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wafer.toml");
    std::fs::write(&path, "max_body = \"1KiB\"\nmemory = \"16MiB\"\n").unwrap();
    let path = path.to_string_lossy().into_owned();
    let server = Server::start_with(&["--config", &path]);
    server.deploy_ok("small", wagi_wat(HELLO), json!({})).await;
    server.assert_body_too_large("/fn/small", 2048).await;

    std::fs::write(dir.path().join("bad.toml"), "memroy = \"16MiB\"\n").unwrap();
    let bad = dir.path().join("bad.toml").to_string_lossy().into_owned();
    let out = wafer_cli(
        &server.url,
        &["serve", "--config", &bad, "--listen", "127.0.0.1:0"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));
}

#[tokio::test]
async fn fuel_bounds_the_work_of_an_invocation_when_metered() {
    let server = Server::start_with(&["--fuel"]);
    server
        .deploy_ok(
            "spin",
            spin_wat(),
            json!({"fuel": 1_000_000, "timeout_ms": 60_000}),
        )
        .await;
    server.deploy_ok("good", wagi_wat(HELLO), json!({})).await;
    let (status, body) = server.get_json("/fn/spin").await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "fuel_exhausted",
    );
    // Functions without a fuel budget run as usual on a metering server.
    assert_eq!(server.get_text("/fn/good").await.1, "hello");

    let unmetered = Server::start();
    let (status, body) = unmetered
        .deploy("spin", spin_wat(), json!({"fuel": 1_000_000}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
}
