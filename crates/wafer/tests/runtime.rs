//! The runtime ABI: key-value state, configuration and secrets, function-to-function calls, and
//! proxy-wasm functions as Layotto's FaaS runs them.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

fn fixture_wat(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Layotto's demo `function_1` (calls `id_2`), as WAT.
fn client() -> Vec<u8> {
    wat(&fixture_wat("layotto-client.wat"))
}

/// Layotto's demo `function_2` (reads store `state_demo`), as WAT.
fn server_module() -> Vec<u8> {
    wat(&fixture_wat("layotto-server.wat"))
}

/// The client, changed to call itself (its own id, `id_1`) with its whole request body, forever.
fn self_caller() -> Vec<u8> {
    wat(&fixture_wat("layotto-client.wat")
        .replace(
            r#"(data (i32.const 1024) "id_2")"#,
            r#"(data (i32.const 1024) "id_1")"#,
        )
        .replace(
            "(local.get $name) (local.get $name_len) (i32.const 2008)",
            "(local.get $body) (local.get $len) (i32.const 2008)",
        ))
}

/// The log entries of `function` at `level` or above, oldest first.
async fn log_entries(server: &Server, function: &str, level: &str) -> Vec<serde_json::Value> {
    let (status, body) = server
        .get_json(&format!(
            "/v1/functions/{function}/logs?limit=1000&level={level}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["logs"].as_array().expect("logs").clone()
}

/// The lines logged for `function`, newest last.
async fn log_lines(server: &Server, function: &str) -> Vec<String> {
    log_entries(server, function, "trace")
        .await
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits until `function`'s log has a line containing `needle` (records are written after the reply).
async fn logged(server: &Server, function: &str, needle: &str) -> Vec<String> {
    wait_for(
        &format!("{function} to log {needle:?}"),
        std::time::Duration::from_secs(10),
        || async {
            let lines = log_lines(server, function).await;
            lines.iter().any(|l| l.contains(needle)).then_some(lines)
        },
    )
    .await
}

#[tokio::test]
async fn layotto_functions_call_each_other_and_read_state_seeded_with_the_cli() {
    let server = Server::start();
    let deployed = server
        .deploy_ok(
            "function2",
            server_module(),
            json!({"key_value_stores": ["state_demo"]}),
        )
        .await;
    assert_eq!(deployed["kind"], "proxy-wasm");
    server
        .deploy_ok(
            "function1",
            client(),
            json!({"allowed_functions": ["id_2"]}),
        )
        .await;
    let seeded = server.cli(&["kv", "set", "state_demo", "book1", "100"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert_eq!(
        stdout(&server.cli(&["kv", "get", "state_demo", "book1"])).trim(),
        "100"
    );

    // As in Layotto's demo: any path, routed by the `id` header, the name in the query string.
    let (status, _, body) = server
        .call_with(Method::GET, "/?name=book1", &[("id", "id_1")], "")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "There are 100 inventories for book1.")
    );
    // By name, with the parameter in the body.
    let (status, _, body) = server
        .call(Method::POST, "/fn/function1", "name=book1")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "There are 100 inventories for book1.")
    );
    // The callee's own log, and its execution record of a call.
    logged(&server, "function2", "looked up a book").await;
    let lines = leveled_lines(&server, "function2", "info").await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("log info: looked up a book")),
        "proxy_log keeps its level: {lines:?}"
    );
    let (_, executions) = server.get_json("/v1/functions/function2/executions").await;
    assert!(
        executions["executions"]
            .as_array()
            .expect("executions")
            .iter()
            .any(|e| e["trigger"] == "call"),
        "{executions}"
    );

    // The state changes, and the next answer carries it.
    server
        .request(Method::PUT, "/v1/kv/state_demo/book1")
        .body("7")
        .send()
        .await
        .expect("PUT");
    let (_, _, body) = server
        .call_with(Method::GET, "/?name=book1", &[("id", "id_1")], "")
        .await;
    assert_eq!(body, "There are 7 inventories for book1.");

    // Ids are unique: another function cannot take `id_2`.
    let (status, body) = server.deploy("copy", server_module(), json!({})).await;
    assert_error(status, &body, StatusCode::CONFLICT, "id_taken");

    // After a restart the ids are read again, lazily, and routing still works.
    let server = server.restart();
    let (status, _, body) = server
        .call_with(Method::GET, "/?name=book1", &[("id", "id_1")], "")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "There are 7 inventories for book1.")
    );
}

#[tokio::test]
async fn stores_and_callees_are_denied_unless_granted() {
    let server = Server::start();
    server
        .request(Method::PUT, "/v1/kv/state_demo/book1")
        .body("100")
        .send()
        .await
        .expect("PUT");
    server
        .deploy_ok("function2", server_module(), json!({}))
        .await;
    server.deploy_ok("function1", client(), json!({})).await;

    let (status, body) = server
        .call_json(Method::POST, "/fn/function2", "book1")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "function_failed",
    );
    logged(&server, "function2", "not granted").await;

    let (status, body) = server
        .call_json(Method::POST, "/fn/function1", "name=book1")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "function_failed",
    );
    let lines = logged(&server, "function1", "not granted").await;
    assert!(
        lines.iter().any(|l| l.contains("invoke service failed")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_cycle_of_calls_stops_at_the_depth_limit() {
    let server = Server::start();
    server
        .deploy_ok("looper", self_caller(), json!({"allowed_functions": ["*"]}))
        .await;
    let (status, body) = server
        .call_json(Method::POST, "/fn/looper", "name=book1")
        .await;
    assert_error(
        status,
        &body,
        StatusCode::INTERNAL_SERVER_ERROR,
        "function_failed",
    );
    logged(&server, "looper", "too deep").await;
    // The call from outside, then one call per level of the chain.
    wait_for(
        "every execution of the chain to be recorded",
        std::time::Duration::from_secs(10),
        || async {
            let (_, list) = server
                .get_json("/v1/functions/looper/executions?limit=100")
                .await;
            let count = list["executions"].as_array().map_or(0, Vec::len);
            (count == 1 + wafer_engine::MAX_CALL_DEPTH as usize).then_some(())
        },
    )
    .await;
    // The server is fine afterwards.
    let (status, _) = server.get_text("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn key_value_stores_are_managed_through_the_api_and_the_cli() {
    let server = Server::start_with(&["--kv-store-size", "1KiB"]);
    for (key, value) in [("b", "2"), ("a", "1"), ("c", "3")] {
        let response = server
            .request(Method::PUT, &format!("/v1/kv/s/{key}"))
            .body(value)
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let (status, list) = server.get_json("/v1/kv/s").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!({"store": "s", "keys": ["a", "b", "c"]}));
    assert_eq!(
        stdout(&server.cli(&["kv", "ls", "s"]))
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    let (status, value) = server.get_text("/v1/kv/s/b").await;
    assert_eq!((status, value.as_str()), (StatusCode::OK, "2"));
    // Stores are separate.
    let (status, _) = server.get_text("/v1/kv/other/b").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let response = server
        .request(Method::DELETE, "/v1/kv/s/b")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = server.call_json(Method::DELETE, "/v1/kv/s/b", "").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let removed = server.cli(&["kv", "rm", "s", "a"]);
    assert!(removed.status.success(), "{}", stderr(&removed));

    // Past the store's size cap: refused, and nothing is lost.
    let (status, body) = server
        .call_json(Method::PUT, "/v1/kv/s/big", &"x".repeat(2000))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    let (_, value) = server.get_text("/v1/kv/s/c").await;
    assert_eq!(value, "3");
    let (status, body) = server
        .call_json(Method::PUT, "/v1/kv/bad%20name/k", "v")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_store");
    let failed = server.cli(&["kv", "get", "s", "missing"]);
    assert!(!failed.status.success());
}

#[tokio::test]
async fn configuration_and_secrets_reach_the_function_and_secrets_never_come_back() {
    let server = Server::start();
    let variables =
        json!({"variables": {"GREETING": "hi"}, "secrets": {"API_KEY": "s3cret-value"}});
    let (status, body) = server
        .deploy_parts("cfg", env_dumper(), &[("variables", variables)])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, env) = server.get_text("/fn/cfg").await;
    assert!(env.contains("GREETING=hi"), "{env}");
    assert!(env.contains("API_KEY=s3cret-value"), "{env}");

    let (status, config) = server.get_json("/v1/functions/cfg/config").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        config,
        json!({"variables": {"GREETING": "hi"}, "secrets": ["API_KEY"]})
    );

    // A change applies to the next call, without a new version.
    let response = server
        .request(Method::PUT, "/v1/functions/cfg/config")
        .json(&json!({"variables": {"GREETING": "hello"}}))
        .send()
        .await
        .expect("PUT config");
    assert_eq!(response.status(), StatusCode::OK);
    let (_, env) = server.get_text("/fn/cfg").await;
    assert!(env.contains("GREETING=hello"), "{env}");
    assert!(env.contains("API_KEY=s3cret-value"), "{env}");
    let (_, info) = server.get_json("/v1/functions/cfg").await;
    assert_eq!(info["live_version"], 1);

    // The CLI sets and removes one at a time.
    let set = server.cli(&[
        "config", "cfg", "--secret", "OTHER=x2", "--unset", "API_KEY",
    ]);
    assert!(set.status.success(), "{}", stderr(&set));
    let shown = stdout(&server.cli(&["config", "cfg"]));
    assert!(shown.contains("GREETING=hello"), "{shown}");
    assert!(shown.contains("OTHER=(secret)"), "{shown}");
    assert!(!shown.contains("API_KEY"), "{shown}");

    let (status, body) = server
        .call_json(
            Method::PUT,
            "/v1/functions/cfg/config",
            r#"{"variables": {"BAD NAME": "x"}}"#,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
    let (status, body) = server
        .call_json(Method::PUT, "/v1/functions/nope/config", r#"{}"#)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    for secret in ["s3cret-value", "x2"] {
        assert!(
            !server.logs().contains(secret),
            "a secret reached the server log"
        );
    }
}

#[tokio::test]
async fn an_http_component_calls_a_granted_function_through_fn_internal() {
    let server = Server::start();
    server
        .deploy_ok(
            "inner",
            wagi_wat("Content-Type: text/plain\n\nhi from inside"),
            json!({}),
        )
        .await;
    let fetcher = example("http-fetch-js/hello.wasm");
    server
        .deploy_ok(
            "granted",
            fetcher.clone(),
            json!({"allowed_functions": ["inner"]}),
        )
        .await;
    server.deploy_ok("refused", fetcher, json!({})).await;

    let (status, body) = server
        .get_text("/fn/granted?url=http://inner.fn.internal/")
        .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "200 hi from inside")
    );
    // The journal writes a call's record a moment after its answer.
    let record = wait_for(
        "the callee's record",
        std::time::Duration::from_secs(10),
        || async {
            let (_, executions) = server.get_json("/v1/functions/inner/executions").await;
            executions["executions"].get(0).cloned()
        },
    )
    .await;
    assert_eq!(record["trigger"], "call", "{record}");

    let (_, body) = server
        .get_text("/fn/refused?url=http://inner.fn.internal/")
        .await;
    assert!(body.starts_with("fetch failed"), "{body}");
    // A granted name that is not deployed is not found, not reached on the network.
    let (_, body) = server
        .get_text("/fn/granted?url=http://missing.fn.internal/")
        .await;
    assert!(body.starts_with("fetch failed"), "{body}");
}

#[tokio::test]
async fn an_outbound_request_gives_up_at_the_functions_timeout() {
    // A host that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let server = Server::start();
    server
        .deploy_ok(
            "impatient",
            example("http-fetch-js/hello.wasm"),
            json!({
                "allowed_outbound_hosts": [format!("127.0.0.1:{port}")],
                "outbound_timeout_ms": 300,
                "timeout_ms": 20000
            }),
        )
        .await;
    let started = std::time::Instant::now();
    let (_, body) = server
        .get_text(&format!("/fn/impatient?url=http://127.0.0.1:{port}/"))
        .await;
    assert!(body.starts_with("fetch failed"), "{body}");
    // Well before the function's own 20 s timeout.
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

/// The log lines of `function` at `level` or above, as `stream level: line`.
async fn leveled_lines(server: &Server, function: &str, level: &str) -> Vec<String> {
    log_entries(server, function, level)
        .await
        .iter()
        .map(|l| format!("{} {}: {}", l["stream"], l["level"], l["line"]).replace('"', ""))
        .collect()
}

#[tokio::test]
async fn a_python_component_uses_wasi_keyvalue_config_and_logging() {
    let server = Server::start();
    let app = example("kv-python/app.wasm");
    let (status, body) = server
        .deploy_parts(
            "notes",
            app.clone(),
            &[
                ("config", json!({"key_value_stores": ["default", "shared"]})),
                (
                    "variables",
                    json!({"variables": {"greeting": "hi"}, "secrets": {"token": "t0ken"}}),
                ),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server
        .deploy_ok("other", app, json!({"key_value_stores": ["shared"]}))
        .await;
    let call = |method: Method, path: &'static str, body: &'static str| {
        let server = &server;
        async move {
            let (status, _, text) = server.call(method, path, body).await;
            (status.as_u16(), text)
        }
    };

    // Round trip through the function, visible to operators, and seeded by them.
    assert_eq!(
        call(Method::PUT, "/fn/notes/kv/default/a", "1").await.0,
        204
    );
    assert_eq!(
        call(Method::GET, "/fn/notes/kv/default/a", "").await,
        (200, "1".into())
    );
    assert_eq!(server.get_text("/v1/kv/default/a").await.1, "1");
    let seeded = server.cli(&["kv", "set", "default", "b", "from the cli"]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert_eq!(
        call(Method::GET, "/fn/notes/kv/default/b", "").await,
        (200, "from the cli".into())
    );
    assert_eq!(
        call(Method::GET, "/fn/notes/kv/default/zz", "").await.0,
        404
    );

    // atomics.increment.
    for want in ["5", "10"] {
        let (status, sum) = call(Method::POST, "/fn/notes/kv/default/n/increment?by=5", "").await;
        assert_eq!((status, sum.as_str()), (200, want));
    }
    assert_eq!(server.get_text("/v1/kv/default/n").await.1, "10");

    // batch: set-many and get-many, then delete-many.
    let (status, read_back) = call(Method::POST, "/fn/notes/batch/default", "x=1\ny=2").await;
    assert_eq!((status, read_back.as_str()), (200, "x=1\ny=2\n"));
    assert_eq!(
        call(Method::DELETE, "/fn/notes/batch/default?keys=x,y", "")
            .await
            .0,
        204
    );
    assert_eq!(
        server.get_text("/v1/kv/default/x").await.0,
        StatusCode::NOT_FOUND
    );

    // list-keys, across pages: more keys than one page holds.
    let many: String = (0..1100).map(|i| format!("k{i:04}=v\n")).collect();
    let (status, _, _) = server
        .call(Method::POST, "/fn/notes/batch/default", &many)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, keys) = call(Method::GET, "/fn/notes/kv/default", "").await;
    assert_eq!(status, 200);
    let keys: Vec<&str> = keys.lines().collect();
    assert_eq!(keys.len(), 1103, "a, b, n and 1100 more");
    assert_eq!(keys[..3], ["a", "b", "k0000"]);
    assert_eq!(keys.last(), Some(&"n"));

    // Stores are separate, and a function opens only the stores it was granted.
    assert_eq!(
        call(Method::PUT, "/fn/notes/kv/shared/a", "shared").await.0,
        204
    );
    assert_eq!(call(Method::GET, "/fn/notes/kv/default/a", "").await.1, "1");
    assert_eq!(
        call(Method::GET, "/fn/other/kv/shared/a", "").await,
        (200, "shared".into())
    );
    assert_eq!(
        call(Method::GET, "/fn/other/kv/default/a", "").await,
        (403, "access denied\n".into())
    );
    logged(&server, "other", "`default` is not granted").await;

    // wasi:config: variables and secrets, by name and all at once.
    assert_eq!(
        call(Method::GET, "/fn/notes/config/greeting", "").await,
        (200, "hi".into())
    );
    assert_eq!(
        call(Method::GET, "/fn/notes/config/token", "").await,
        (200, "t0ken".into())
    );
    assert_eq!(
        call(Method::GET, "/fn/notes/config/missing", "").await.0,
        404
    );
    assert_eq!(
        call(Method::GET, "/fn/notes/config", "").await,
        (200, "greeting\ntoken\n".into())
    );
    assert_eq!(
        call(Method::GET, "/fn/other/config", "").await,
        (200, "".into())
    );

    // wasi:logging lines keep their level; a stderr line announces its own.
    assert_eq!(
        call(Method::GET, "/fn/notes/log", "").await,
        (200, "logged\n".into())
    );
    let lines = logged(&server, "notes", "a critical line").await;
    assert!(
        lines.iter().any(|l| l == "kv-python: GET /log"),
        "{lines:?}"
    );
    let severe = leveled_lines(&server, "notes", "warn").await;
    let from_log: Vec<&String> = severe.iter().filter(|l| l.contains("a ")).collect();
    assert_eq!(
        from_log,
        [
            "log warn: kv-python: a warn line",
            "log error: kv-python: a error line",
            "log critical: kv-python: a critical line",
        ]
    );
    assert!(
        severe.contains(&"stderr warn: warning: this one went to stderr".to_string()),
        "{severe:?}"
    );
    assert!(!severe.iter().any(|l| l.contains("GET /log")), "{severe:?}");
    let trace = leveled_lines(&server, "notes", "trace").await;
    assert!(trace.contains(&"log trace: kv-python: a trace line".to_string()));
    let (status, body) = server.get_json("/v1/functions/notes/logs?level=loud").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    let cli = stdout(&server.cli(&["logs", "notes", "--level", "critical"]));
    assert!(
        cli.trim_end()
            .ends_with("log critical: kv-python: a critical line"),
        "{cli}"
    );
}
