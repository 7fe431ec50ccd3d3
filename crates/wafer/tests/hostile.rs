//! End-to-end: bad input is refused with a clear error and nothing stored, and hostile guests end only
//! their own invocation.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

const HELLO: &str = "Content-Type: text/plain\n\nhello";

#[tokio::test]
async fn invalid_binaries_are_refused_and_nothing_is_stored() {
    let server = Server::start();
    let python = example("http-python/hello.wasm");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "invalid_module",
        ),
        (
            "truncated",
            python[..python.len() / 2].to_vec(),
            "invalid_module",
        ),
        ("text", b"(module)".to_vec(), "invalid_module"),
        (
            "no-entry",
            wat(r#"(module (func (export "main")))"#),
            "unsupported_module",
        ),
        ("empty-component", wat("(component)"), "unsupported_module"),
        (
            "no-memory",
            wat(
                r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (func (export "_start")))"#,
            ),
            "unsupported_module",
        ),
        (
            "odd-import",
            wat(r#"(module (import "env" "secret" (func)) (func (export "_start")))"#),
            "unsupported_module",
        ),
    ];
    for (name, bytes, code) in cases {
        let (status, body) = server.deploy(name, bytes, json!({})).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, code);
        let (status, _) = server.get_json(&format!("/v1/functions/{name}")).await;
        assert_eq!(status, 404, "{name} was stored");
    }
    let (status, body) = server
        .deploy("forced", wagi_wat(HELLO), json!({"kind": "http"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "unsupported_module");
    let (status, body) = server.deploy("empty", Vec::new(), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_module");
    assert!(
        server.module_files().is_empty(),
        "{:?}",
        server.module_files()
    );
    let (_, list) = server.get_json("/v1/functions").await;
    assert_eq!(list["functions"], json!([]));
}

#[tokio::test]
async fn malformed_deploys_are_refused() {
    let server = Server::start();
    let (status, body) = server.deploy("Bad_Name", wagi_wat(HELLO), json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_name");
    let (status, body) = server
        .deploy("ok", wagi_wat(HELLO), json!({"memroy_mb": 1}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let (status, body) = server
        .deploy("ok", wagi_wat(HELLO), json!({"routes": ["/v1/x"]}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let (status, body) = server
        .deploy("ok", wagi_wat(HELLO), json!({"kind": "lambda"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let form = reqwest::multipart::Form::new().text("config", "{}");
    let response = server
        .http
        .post(server.at("/v1/functions/ok/versions"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(server.module_files().is_empty());
}

#[tokio::test]
async fn unknown_functions_and_paths_are_404() {
    let server = Server::start();
    for (method, path) in [
        (Method::GET, "/fn/nope"),
        (Method::POST, "/fn/nope/deeper"),
        (Method::GET, "/v1/functions/nope"),
        (Method::GET, "/v1/functions/nope/versions"),
        (Method::POST, "/v1/functions/nope/invoke"),
        (Method::DELETE, "/v1/functions/nope"),
        (Method::GET, "/no/such/path"),
    ] {
        let (status, headers, body) = server.call(method.clone(), path, "").await;
        let body: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{method} {path}: {body}"));
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(headers["x-wafer-error"], "not_found");
    }
}

#[tokio::test]
async fn an_oversized_request_body_is_413() {
    let server = Server::start_with(&["--max-body", "1KiB"]);
    server.deploy_ok("small", wagi_wat(HELLO), json!({})).await;
    server.assert_body_too_large("/fn/small", 4096).await;
    let (status, _, body) = server.call(Method::POST, "/fn/small", "fine").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));
}

#[tokio::test]
async fn an_oversized_module_is_413_either_way_it_is_sent() {
    let server = Server::start_with(&["--max-module", "1KiB"]);
    let big = wagi_wat(&format!("Content-Type: text/plain\n\n{}", "x".repeat(2048)));
    let (status, body) = server.deploy("big", big.clone(), json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let response = server
        .http
        .post(server.at("/v1/functions/big/versions"))
        .header("content-type", "application/wasm")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(server.module_files().is_empty());
    server.deploy_ok("small", wagi_wat(HELLO), json!({})).await;
}

#[tokio::test]
async fn an_infinite_loop_times_out_while_others_are_served() {
    let server = Server::start();
    server
        .deploy_ok("spin", spin_wat(), json!({"timeout_ms": 1500}))
        .await;
    server.deploy_ok("good", wagi_wat(HELLO), json!({})).await;
    let spin = server.get_json("/fn/spin");
    let good = async {
        // While the loop runs, good requests keep being answered.
        let mut answered = 0;
        for _ in 0..10 {
            let (status, body) = server.get_text("/fn/good").await;
            assert_eq!((status.as_u16(), body.as_str()), (200, "hello"));
            answered += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered
    };
    let ((status, body), answered) = tokio::join!(spin, good);
    assert_error(status, &body, StatusCode::GATEWAY_TIMEOUT, "timeout");
    assert_eq!(answered, 10);
    assert_eq!(server.get_text("/fn/good").await.1, "hello");
}

#[tokio::test]
async fn a_memory_bomb_hits_its_cap_with_a_clear_error() {
    let server = Server::start();
    let bomb = wat(r#"(module
        (memory 1)
        (func (export "_start")
            (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
            unreachable))"#);
    server
        .deploy_ok("bomb", bomb, json!({"memory_mb": 16}))
        .await;
    let (status, body) = server.get_json("/fn/bomb").await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory_limit",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("16 MiB"),
        "{body}"
    );
    // A module that asks for too much memory up front fails the same way, at instantiation.
    let greedy = wat(r#"(module (memory 1024) (func (export "_start")))"#);
    server
        .deploy_ok("greedy", greedy, json!({"memory_mb": 16}))
        .await;
    let (status, body) = server.get_json("/fn/greedy").await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "memory_limit",
    );
}

#[tokio::test]
async fn a_trap_ends_only_its_own_invocation() {
    let server = Server::start();
    server.deploy_ok("crash", trap_wat(), json!({})).await;
    server
        .deploy_ok(
            "deep",
            wat(r#"(module (func $f (export "_start") (call $f)))"#),
            json!({}),
        )
        .await;
    server.deploy_ok("good", wagi_wat(HELLO), json!({})).await;
    for name in ["crash", "deep"] {
        let (status, body) = server.get_json(&format!("/fn/{name}")).await;
        assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "trap");
    }
    assert_eq!(server.get_text("/fn/good").await.1, "hello");
}

#[tokio::test]
async fn a_stdout_flood_is_capped_truncated_and_flagged() {
    let server = Server::start();
    // 100 MiB of output.
    server
        .deploy_ok("flood", flood_wat(1600), json!({"kind": "command"}))
        .await;
    server
        .deploy_ok("wagi-flood", flood_wat(1600), json!({}))
        .await;
    let (status, reply) = server
        .call_json(Method::POST, "/v1/functions/flood/invoke", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["exit_code"], 0);
    assert_eq!(reply["stdout_truncated"], true);
    assert_eq!(reply["stderr_truncated"], false);
    assert_eq!(reply["stdout"].as_str().unwrap().len(), 16 * 1024 * 1024);
    let (status, body) = server.get_json("/fn/wagi-flood").await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "bad_response");
    // Within the cap nothing is flagged.
    server
        .deploy_ok("small", flood_wat(2), json!({"kind": "command"}))
        .await;
    let (_, reply) = server
        .call_json(Method::POST, "/v1/functions/small/invoke", "")
        .await;
    assert_eq!(
        (
            reply["stdout"].as_str().unwrap().len(),
            reply["stdout_truncated"].as_bool()
        ),
        (131072, Some(false))
    );
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let server = Server::start();
    server.deploy_ok("small", wagi_wat(HELLO), json!({})).await;
    let long = format!("/fn/small?{}", "q".repeat(10 * 1024));
    let (status, body) = server.get_json(&long).await;
    assert_error(status, &body, StatusCode::URI_TOO_LONG, "uri_too_long");
    let response = server
        .http
        .get(server.at("/fn/small"))
        .header("x-a", "a".repeat(40 * 1024))
        .header("x-b", "b".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    assert_eq!(server.get_text("/fn/small").await.1, "hello");
}

#[tokio::test]
async fn per_function_body_caps_apply() {
    let server = Server::start();
    server
        .deploy_ok(
            "tight",
            wagi_wat(HELLO),
            json!({"max_request_bytes": 16, "max_response_bytes": 8}),
        )
        .await;
    server.assert_body_too_large("/fn/tight", 17).await;
    // "Content-Type: text/plain\n\nhello" is more than 8 bytes.
    let (status, body) = server.call_json(Method::POST, "/fn/tight", "ok").await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "bad_response");
    let (_, info) = server.get_json("/v1/functions/tight").await;
    assert_eq!(info["limits"]["max_request_bytes"], 16);
    assert_eq!(info["limits"]["memory_mb"], 128);
    let out = server.cli(&["ls"]);
    assert!(stdout(&out).contains("128MiB"), "{}", stdout(&out));
}
