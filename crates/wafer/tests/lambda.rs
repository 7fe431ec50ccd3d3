//! The Lambda Invoke API with real Lambda clients: boto3 and the AWS CLI (`tests/lambda/clients.py`)
//! against a real `wafer serve` with AWS keys. `.ci/run` installs the clients in a venv
//! (`tests/lambda/requirements.txt`); `WAFER_PYTHON` names its python, by default
//! `/var/tmp/wafer-venv/bin/python`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const ACCESS_KEY: &str = "AKIAWAFERTEST";
const SECRET_KEY: &str = "wafer/lambda+secret";

/// The python with boto3 and the AWS CLI, if there is one (under `CI=true` there must be).
fn python() -> Option<PathBuf> {
    venv_program(
        "python",
        &["-c", "import boto3, awscli"],
        "python with boto3 and awscli",
    )
}

#[tokio::test]
async fn boto3_and_the_aws_cli_call_functions_unchanged() {
    let Some(python) = python() else {
        return;
    };
    let server = Server::start_with(&[
        "--aws-access-key",
        ACCESS_KEY,
        "--aws-secret-key",
        SECRET_KEY,
    ]);
    server
        .deploy_ok("echo", fixture("flaky.wasm"), json!({}))
        .await;
    server
        .deploy_candidate(
            "echo",
            wagi_wat("Content-Type: text/plain\n\nversion 2"),
            json!({}),
        )
        .await;
    let (status, body) = server
        .call_json(
            Method::PUT,
            "/v1/functions/echo/aliases/beta",
            r#"{"version": 2}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.deploy_ok("broken", trap_wat(), json!({})).await;
    run_script(&python, "clients.py", &[ACCESS_KEY, SECRET_KEY], &server);
    // An Event call was queued and ran.
    let id = wait_for(
        "the Event call to run",
        std::time::Duration::from_secs(30),
        || async {
            let (_, page) = server
                .get_json("/v1/functions/echo/executions?status=succeeded")
                .await;
            page["executions"]
                .as_array()
                .and_then(|all| all.iter().find(|e| e["trigger"] == "async").cloned())
        },
    )
    .await;
    assert_eq!(id["version"], 1);
}

#[tokio::test]
async fn unsigned_calls_need_the_token_or_a_server_without_keys() {
    // Without AWS keys or a token (loopback only), an unsigned call is taken.
    let open = Server::start();
    open.deploy_ok("echo", fixture("flaky.wasm"), json!({}))
        .await;
    let (status, headers, body) = open
        .call(Method::POST, "/2015-03-31/functions/echo/invocations", "{}")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ok on attempt 1: {}\n")
    );
    assert_eq!(headers["x-amz-executed-version"], "1");
    let (status, headers, _) = open
        .call(
            Method::POST,
            "/2015-03-31/functions/nobody/invocations",
            "{}",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
    // With keys, an unsigned call is refused in Lambda's shape; the token still opens it.
    let keyed = Server::start_with(&[
        "--aws-access-key",
        ACCESS_KEY,
        "--aws-secret-key",
        SECRET_KEY,
        "--token",
        "t0k",
    ]);
    keyed
        .deploy_ok("echo", fixture("flaky.wasm"), json!({}))
        .await;
    let plain = reqwest::Client::new();
    let url = keyed.at("/2015-03-31/functions/echo/invocations");
    let refused = plain.post(&url).body("{}").send().await.expect("call");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        refused.headers()["x-amzn-errortype"],
        "AccessDeniedException"
    );
    let (status, _, body) = keyed
        .call(Method::POST, "/2015-03-31/functions/echo/invocations", "{}")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ok on attempt 1: {}\n")
    );
    let (status, _, body) = keyed.call(Method::GET, "/2015-03-31/functions", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"FunctionName\":\"echo\""), "{body}");
    // With keys and no token, a bearer of anything opens nothing.
    let signed_only = Server::start_with(&[
        "--aws-access-key",
        ACCESS_KEY,
        "--aws-secret-key",
        SECRET_KEY,
    ]);
    let url = signed_only.at("/2015-03-31/functions");
    for request in [plain.get(&url), plain.get(&url).bearer_auth("anything")] {
        let refused = request.send().await.expect("call");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refused.headers()["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
    }
}

#[tokio::test]
async fn boto3_signs_with_an_api_key_and_gets_what_its_scope_names() {
    let Some(python) = python() else {
        return;
    };
    let server = Server::start();
    server
        .deploy_ok("echo", fixture("flaky.wasm"), json!({"private": true}))
        .await;
    server
        .deploy_ok("other", fixture("flaky.wasm"), json!({}))
        .await;
    let (status, created) = server
        .call_json(Method::POST, "/v1/keys", r#"{"scopes": ["invoke:echo"]}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["key"]["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    run_script(&python, "scoped_key.py", &[id, secret], &server);
}

/// Runs `tests/lambda/SCRIPT URL ARGS…` with `python`; fails with its output and the server's log
/// unless every check in it passed.
fn run_script(python: &Path, script: &str, args: &[&str], server: &Server) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lambda")
        .join(script);
    let output = Command::new(python)
        .arg(&script)
        .arg(&server.url)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    println!("{}", stdout(&output));
    assert!(
        output.status.success(),
        "{}\n{}\nserver log:\n{}",
        stdout(&output),
        stderr(&output),
        server.logs()
    );
}
