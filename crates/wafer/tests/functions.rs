//! End-to-end: deploying and calling functions of every kind through the real server.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_example_answers_and_survives_a_restart_without_recompiling() {
    let server = Server::start();
    server
        .deploy_ok(
            "hello-c",
            example("wagi-c/hello.wasm"),
            json!({"routes": ["/greet"], "env": {"GREETING": "hi"}}),
        )
        .await;
    server
        .deploy_ok(
            "wc",
            example("command-c/wordcount.wasm"),
            json!({"kind": "command"}),
        )
        .await;
    server
        .deploy_ok(
            "hello-py",
            example("http-python/hello.wasm"),
            json!({"routes": ["/py"]}),
        )
        .await;
    server
        .deploy_ok("hello-js", example("http-js/hello.wasm"), json!({}))
        .await;
    assert_eq!(server.metric("wafer_compilations_total").await, 4);
    check_examples(&server).await;

    let server = server.restart();
    assert_eq!(
        server.metric("wafer_compilations_total").await,
        0,
        "{}",
        server.logs()
    );
    check_examples(&server).await;
    assert_eq!(server.metric("wafer_artifact_loads_total").await, 4);
    let (_, list) = server.get_json("/v1/functions").await;
    let names: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello-c", "hello-js", "hello-py", "wc"]);
}

async fn check_examples(server: &Server) {
    let (status, body) = server.get_text("/fn/hello-c?name=wafer").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello, wafer!"), "{body}");
    assert!(body.contains("script=/fn/hello-c"), "{body}");
    assert!(body.contains("greeting=hi"), "{body}");
    let (status, body) = server.get_text("/greet/teapot").await;
    assert_eq!((status.as_u16(), body.as_str()), (418, "short and stout\n"));

    let (status, headers, body) = server
        .call(Method::POST, "/fn/wc", "one two\nthree\n")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-wafer-kind"], "command");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["exit_code"], 0);
    assert_eq!(reply["stdout"], "2 3 14\n");

    let (status, body) = server.get_text("/fn/hello-py/some/path?q=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hello from Python! GET /some/path?q=1\n");
    // The gateway's root with its slash is the function's root too.
    let (status, body) = server.get_text("/fn/hello-py/?q=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hello from Python! GET /?q=2\n");
    let (status, _, body) = server.call(Method::POST, "/py", "stressed").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "desserts"));

    let (status, body) = server.get_text("/fn/hello-js/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "Hello from JavaScript! GET /x\n");
    let (status, _, body) = server.call(Method::POST, "/fn/hello-js", "a b c").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "{\"bytes\":5,\"words\":3}\n");
}

#[tokio::test]
async fn wagi_gets_the_request_as_cgi_and_its_status_is_honoured() {
    let server = Server::start();
    server
        .deploy_ok("hello", example("wagi-c/hello.wasm"), json!({}))
        .await;
    let (status, headers, body) = server
        .call(Method::POST, "/fn/hello/echo", "make me loud")
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, "MAKE ME LOUD");
    let (status, headers, body) = server.call(Method::GET, "/fn/hello/deep/path", "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-wagi-example"], "c");
    assert!(body.contains("method=GET path=/deep/path"), "{body}");
    assert!(body.contains("greeting=(unset)"), "{body}");
    let (status, body) = server.get_text("/fn/hello/teapot").await;
    assert_eq!((status.as_u16(), body.as_str()), (418, "short and stout\n"));
}

#[tokio::test]
async fn wagi_output_that_is_not_cgi_is_a_bad_gateway() {
    let server = Server::start();
    server
        .deploy_ok("plain", wagi_wat("no headers here"), json!({}))
        .await;
    let (status, body) = server.get_json("/fn/plain").await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "bad_response");
    server.deploy_ok("silent", wagi_wat(""), json!({})).await;
    let (status, body) = server.get_json("/fn/silent").await;
    assert_error(status, &body, StatusCode::BAD_GATEWAY, "bad_response");
}

#[tokio::test]
async fn commands_report_their_exit_code_and_output() {
    let server = Server::start();
    server
        .deploy_ok(
            "wc",
            example("command-c/wordcount.wasm"),
            json!({"kind": "command"}),
        )
        .await;
    let (status, reply) = server
        .call_json(Method::POST, "/v1/functions/wc/invoke", "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["exit_code"], 2);
    assert_eq!(reply["stdout"], "");
    assert_eq!(reply["stderr"], "wc: no input\n");
    let (status, reply) = server
        .call_json(Method::POST, "/v1/functions/wc/invoke", "a\n")
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["exit_code"], 0);
    assert_eq!(reply["stdout"], "1 1 2\n");
    assert_eq!(reply["stderr"], "counted 2 bytes\n");

    let exit7 = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 7))))"#);
    server
        .deploy_ok("seven", exit7, json!({"kind": "command"}))
        .await;
    let (status, reply) = server
        .call_json(Method::POST, "/v1/functions/seven/invoke", "")
        .await;
    assert_eq!(
        (status.as_u16(), reply["exit_code"].as_i64()),
        (200, Some(7))
    );
}

#[tokio::test]
async fn versions_are_immutable_and_rollback_switches_the_live_one() {
    let server = Server::start();
    let v1 = server
        .deploy_ok(
            "app",
            wagi_wat("Content-Type: text/plain\n\none"),
            json!({"routes": ["/app"]}),
        )
        .await;
    assert_eq!(v1["version"], 1);
    let v2 = server
        .deploy_ok(
            "app",
            wagi_wat("Content-Type: text/plain\n\ntwo"),
            json!({}),
        )
        .await;
    assert_eq!(
        (v2["version"].as_u64(), v2["live"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(server.get_text("/fn/app").await.1, "two");
    // Version 2 has no routes, so /app is unmounted.
    assert_eq!(server.get_text("/app").await.0, 404);

    let (status, versions) = server.get_json("/v1/functions/app/versions").await;
    assert_eq!(status, 200);
    let live: Vec<bool> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["live"].as_bool().unwrap())
        .collect();
    assert_eq!(live, [false, true]);

    let (status, _, body) = server
        .call(
            Method::POST,
            "/v1/functions/app/rollback",
            r#"{"version":1}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get_text("/fn/app").await.1, "one");
    assert_eq!(server.get_text("/app/sub").await.1, "one");
    let (status, info) = server.get_json("/v1/functions/app").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            info["live_version"].as_u64(),
            info["latest_version"].as_u64()
        ),
        (Some(1), Some(2))
    );

    let (status, body) = server
        .call_json(
            Method::POST,
            "/v1/functions/app/rollback",
            r#"{"version":9}"#,
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server
        .call_json(
            Method::POST,
            "/v1/functions/app/rollback",
            r#"{"versoin":1}"#,
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn delete_removes_the_function_its_routes_and_its_blobs() {
    let server = Server::start();
    server
        .deploy_ok(
            "gone",
            wagi_wat("Content-Type: text/plain\n\nhere"),
            json!({"routes": ["/gone"]}),
        )
        .await;
    assert!(!server.module_files().is_empty());
    let (status, _, _) = server.call(Method::DELETE, "/v1/functions/gone", "").await;
    assert_eq!(status, 204);
    let (status, body) = server.get_json("/fn/gone").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server.get_json("/gone").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(server.module_files(), Vec::<std::path::PathBuf>::new());
    let (status, body) = server
        .call_json(Method::DELETE, "/v1/functions/gone", "")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_route_held_by_another_function_is_a_conflict() {
    let server = Server::start();
    server
        .deploy_ok(
            "first",
            wagi_wat("Content-Type: text/plain\n\n1"),
            json!({"routes": ["/shared"]}),
        )
        .await;
    let (status, body) = server
        .deploy(
            "second",
            wagi_wat("Content-Type: text/plain\n\n2"),
            json!({"routes": ["/shared"]}),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "route_taken");
    let (status, _) = server.get_json("/v1/functions/second").await;
    assert_eq!(status, 404);
    assert_eq!(server.get_text("/shared").await.1, "1");
}

#[tokio::test]
async fn raw_wasm_bodies_deploy_with_defaults() {
    let server = Server::start();
    let response = server
        .http
        .post(server.at("/v1/functions/raw/versions"))
        .header("content-type", "application/wasm")
        .body(wagi_wat("Content-Type: text/plain\n\nraw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(server.get_text("/fn/raw").await.1, "raw");
    let response = server
        .http
        .post(server.at("/v1/functions/raw/versions"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

/// A WAGI module with `_routes`: `/hello` → `hello`, `/bye/...` → `bye`, anything else → `_start`.
fn routed_wagi() -> Vec<u8> {
    let texts = [
        ("routes", "/hello hello\n/bye/... bye\n/missing nothere\n"),
        ("main", "Content-Type: text/plain\n\nmain"),
        ("hello", "Content-Type: text/plain\n\nhello"),
        ("bye", "Content-Type: text/plain\n\nbye"),
    ];
    let mut data = String::new();
    let mut funcs = String::new();
    let mut offset = 64;
    for (name, text) in texts {
        let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
        data.push_str(&format!("(data (i32.const {offset}) \"{escaped}\")\n"));
        let export = match name {
            "routes" => "_routes",
            "main" => "_start",
            other => other,
        };
        funcs.push_str(&format!(
            "(func (export \"{export}\") (call $print (i32.const {offset}) (i32.const {})))\n",
            text.len()
        ));
        offset += 128;
    }
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            {data}
            (func $print (param $ptr i32) (param $len i32)
                (i32.store (i32.const 0) (local.get $ptr))
                (i32.store (i32.const 4) (local.get $len))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            {funcs})"#
    ))
}

#[tokio::test]
async fn wagi_sub_routes_from_the_routes_export_pick_the_handler() {
    let server = Server::start();
    server
        .deploy_ok("routed", routed_wagi(), json!({"routes": ["/example"]}))
        .await;
    for (path, want) in [
        ("/fn/routed", "main"),
        ("/fn/routed/hello", "hello"),
        ("/fn/routed/hello/more", "main"),
        ("/fn/routed/bye", "bye"),
        ("/fn/routed/bye/now", "bye"),
        ("/fn/routed/missing", "main"),
        ("/example/hello", "hello"),
        ("/example/bye/x", "bye"),
    ] {
        let (status, body) = server.get_text(path).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, want), "{path}");
    }
}

#[tokio::test]
async fn modules_built_against_wasi_unstable_run_as_wagi() {
    let server = Server::start();
    let module = wagi_wat_importing("wasi_unstable", "Content-Type: text/plain\n\nold");
    server.deploy_ok("old", module, json!({})).await;
    assert_eq!(server.get_text("/fn/old").await.1, "old");
}

#[tokio::test]
async fn the_same_bytes_deployed_again_are_not_compiled_again() {
    let server = Server::start();
    let module = wagi_wat("Content-Type: text/plain\n\nshared");
    server.deploy_ok("one", module.clone(), json!({})).await;
    server.deploy_ok("two", module.clone(), json!({})).await;
    server
        .deploy_ok("one", module.clone(), json!({"kind": "command"}))
        .await;
    assert_eq!(server.metric("wafer_compilations_total").await, 1);
    assert_eq!(server.metric("wafer_artifact_loads_total").await, 2);
    assert_eq!(server.get_text("/fn/two").await.1, "shared");
    // The stored artifact is checked like a fresh compile.
    let (status, body) = server
        .deploy("three", module, json!({"kind": "http"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "unsupported_module");
    // Deleting one user of the bytes leaves them for the other.
    let (status, _, _) = server.call(Method::DELETE, "/v1/functions/one", "").await;
    assert_eq!(status, 204);
    assert_eq!(server.get_text("/fn/two").await.1, "shared");
    assert_eq!(server.module_files().len(), 2);
}

#[tokio::test]
async fn metrics_count_invocations_by_status_and_time_them() {
    let server = Server::start();
    server
        .deploy_ok(
            "good",
            wagi_wat("Content-Type: text/plain\n\nok"),
            json!({}),
        )
        .await;
    server.deploy_ok("crash", trap_wat(), json!({})).await;
    for _ in 0..3 {
        assert_eq!(server.get_text("/fn/good").await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(server.get_text("/fn/crash").await.0, 500);
    }
    let (_, text) = server.get_text("/metrics").await;
    for line in [
        "wafer_invocations_total{function=\"good\",kind=\"wagi\",status=\"200\"} 3",
        "wafer_invocations_total{function=\"crash\",kind=\"wagi\",status=\"500\"} 2",
        "wafer_invocation_duration_seconds_count{function=\"good\",kind=\"wagi\"} 3",
        "wafer_compile_seconds_count 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

#[tokio::test]
async fn after_a_restart_functions_load_in_the_background_without_a_call() {
    let server = Server::start();
    for i in 0..20 {
        let module = wagi_wat(&format!("Content-Type: text/plain\n\nfunction {i}\n"));
        server.deploy_ok(&format!("f{i}"), module, json!({})).await;
    }
    assert!(server.metric("wafer_instance_pool_slots").await > 0);
    let server = server.restart();
    wait_for("every function loaded", Duration::from_secs(60), || async {
        (server.metric("wafer_artifact_loads_total").await == 20).then_some(())
    })
    .await;
    assert_eq!(server.metric("wafer_compilations_total").await, 0);
    for i in 0..20 {
        let (status, body) = server.get_text(&format!("/fn/f{i}")).await;
        assert_eq!((status.as_u16(), body), (200, format!("function {i}\n")));
    }
}

#[tokio::test]
async fn instances_can_be_allocated_on_demand_instead_of_from_the_pool() {
    let server = Server::start_with(&["--no-pooling"]);
    assert_eq!(server.metric("wafer_instance_pool_slots").await, 0);
    server
        .deploy_ok("hello-c", example("wagi-c/hello.wasm"), json!({}))
        .await;
    let (status, body) = server.get_text("/fn/hello-c?name=pool").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("Hello, pool!"), "{body}");
}

#[tokio::test]
async fn compiled_code_stays_within_the_code_cache_and_evicted_code_loads_again() {
    let server = Server::start_with(&["--code-cache-modules", "2"]);
    let module = |i: usize| wagi_wat(&format!("Content-Type: text/plain\n\nmodule {i}\n"));
    for i in 0..4 {
        server
            .deploy_ok(&format!("f{i}"), module(i), json!({}))
            .await;
    }
    // Functions deployed from one module share its code.
    server.deploy_ok("also-f3", module(3), json!({})).await;
    assert_eq!(server.metric("wafer_code_cache_modules").await, 2);
    assert_eq!(server.metric("wafer_code_cache_evictions_total").await, 2);
    for (name, i) in [("f0", 0), ("f1", 1), ("f2", 2), ("f3", 3), ("also-f3", 3)] {
        let (status, body) = server.get_text(&format!("/fn/{name}")).await;
        assert_eq!((status.as_u16(), body), (200, format!("module {i}\n")));
    }
    assert_eq!(server.metric("wafer_code_cache_modules").await, 2);
    // Evicted code comes back from its artifact, never compiled again.
    assert_eq!(server.metric("wafer_compilations_total").await, 4);
    assert!(server.metric("wafer_artifact_loads_total").await >= 4);

    // After a restart the background loader stops at the budget; the rest load on their first call.
    let server = server.restart_with(&["--code-cache-modules", "2"]);
    wait_for("the background load", Duration::from_secs(60), || async {
        server.logs().contains("functions loaded").then_some(())
    })
    .await;
    assert_eq!(server.metric("wafer_artifact_loads_total").await, 2);
    for i in 0..4 {
        let (status, body) = server.get_text(&format!("/fn/f{i}")).await;
        assert_eq!((status.as_u16(), body), (200, format!("module {i}\n")));
    }
    assert_eq!(server.metric("wafer_code_cache_modules").await, 2);
    assert_eq!(server.metric("wafer_compilations_total").await, 0);
}

#[tokio::test]
async fn a_deploy_takes_the_functions_earlier_deploys_compiled_from_the_compile_cache() {
    let server = Server::start();
    server
        .deploy_ok("hello-c", example("wagi-c/hello.wasm"), json!({}))
        .await;
    assert_eq!(server.metric("wafer_compile_cache_hits_total").await, 0);
    let compiled = server.metric("wafer_compile_cache_misses_total").await;
    assert!(compiled > 0);
    assert!(server.metric("wafer_compile_cache_bytes").await > 0);
    // Another C program shares libc with the first: those functions are not compiled again.
    let reply = command_from_the_compile_cache(&server, "wc", "wordcount", "a b\n").await;
    assert_eq!(reply["stdout"], "1 2 4\n", "{reply}");
    let (status, body) = server.get_text("/fn/hello-c?name=cache").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("Hello, cache!"), "{body}");

    // The cache is on disk: a restarted server finds it.
    let server = server.restart();
    let reply = command_from_the_compile_cache(&server, "greet", "greet", "").await;
    // Called without arguments, it says how to use it.
    assert_eq!(reply["exit_code"], 3, "{reply}");
    assert!(
        reply["stderr"].as_str().unwrap().contains("usage"),
        "{reply}"
    );

    let server = server.restart_with(&["--compile-cache-size", "0"]);
    server
        .deploy_ok(
            "late",
            wagi_wat("Content-Type: text/plain\n\nlate\n"),
            json!({}),
        )
        .await;
    let (_, metrics) = server.get_text("/metrics").await;
    assert!(!metrics.contains("wafer_compile_cache"), "{metrics}");
    assert_eq!(server.get_text("/fn/late").await.1, "late\n");
}

/// Deploys `examples/command-c/{program}.wasm` as `name`, checks that the compile cache served some of
/// its functions, and returns what invoking it with `input` replies.
async fn command_from_the_compile_cache(
    server: &Server,
    name: &str,
    program: &str,
    input: &str,
) -> serde_json::Value {
    server
        .deploy_ok(
            name,
            example(&format!("command-c/{program}.wasm")),
            json!({"kind": "command"}),
        )
        .await;
    assert!(server.metric("wafer_compile_cache_hits_total").await > 0);
    let (status, reply) = server
        .call_json(Method::POST, &format!("/v1/functions/{name}/invoke"), input)
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}
