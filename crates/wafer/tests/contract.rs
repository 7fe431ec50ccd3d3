//! The API's description against the server: schemathesis (`tests/contract/schemathesis.toml`) reads
//! `/api/openapi.json` from a real `wafer serve` holding functions, records and key-value state, and
//! runs every check in every phase — examples, coverage, fuzzing and stateful (following the links) —
//! with a fixed seed. `.ci/run` installs schemathesis in the venv the Lambda clients use
//! (`tests/contract/requirements.txt`); `WAFER_PYTHON` names its python.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

/// Test cases per operation and phase: enough to reach every parameter, bounded for CI's time.
const EXAMPLES: &str = "25";
/// The seed every run uses, so a failure found once is found again.
const SEED: &str = "1";

/// The schemathesis command of the venv, if it has one (under `CI=true` it must).
fn schemathesis() -> Option<PathBuf> {
    venv_program("schemathesis", &["--version"], "schemathesis")
}

#[tokio::test]
async fn schemathesis_finds_the_api_exactly_as_described() {
    let Some(schemathesis) = schemathesis() else {
        return;
    };
    let server = Server::start();
    // Functions of three kinds, one that fails (a command called without its argument exits 3), a
    // second version behind an alias, records, a dead letter's worth of attempts and stored state.
    server
        .deploy_ok("hello", example("wagi-c/hello.wasm"), json!({}))
        .await;
    server
        .deploy_ok("flaky", fixture("flaky.wasm"), json!({"max_attempts": 1}))
        .await;
    server
        .deploy_ok("greet", example("command-c/greet.wasm"), json!({}))
        .await;
    server
        .deploy_candidate(
            "hello",
            wagi_wat("Content-Type: text/plain\n\nv2"),
            json!({}),
        )
        .await;
    let (status, body) = server
        .call_json(
            Method::PUT,
            "/v1/functions/hello/aliases/beta",
            r#"{"version": 2}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = server.invoke_async("greet", "", "").await;
    server.finished_execution(&id).await;
    let (status, _, _) = server
        .call(Method::PUT, "/v1/kv/cache/greeting", "hi")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract/schemathesis.toml");
    // schemathesis keeps a cache and its reports in the directory it runs in: a scratch one.
    let scratch = tempfile::tempdir().expect("a scratch dir");
    let output = Command::new(schemathesis)
        .current_dir(scratch.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(server.at("/api/openapi.json"))
        .args(["--seed", SEED, "--max-examples", EXAMPLES, "--no-color"])
        .output()
        .expect("run schemathesis");
    let printed = stdout(&output);
    println!("{printed}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{printed}\n{}\nserver log:\n{}",
        stderr(&output),
        server.logs()
    );
    // Every operation was tested and every phase ran.
    assert!(printed.contains("Tested: 48"), "{printed}");
    for phase in ["Coverage", "Fuzzing", "Stateful"] {
        assert!(
            printed.contains(&format!("✅ {phase}")),
            "{phase}: {printed}"
        );
    }
}
