//! Spin applications run unchanged: a component built with Spin's Python SDK (spin-sdk 3.x,
//! examples/spin-python) uses key-value, variables, SQLite, and outbound Redis and PostgreSQL against
//! real servers, each under its grant.

mod common;

use common::redis::TestRedis;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use wafer_store::conformance::postgres::TestPostgres;

/// `GET path` on `server` → status code and body text.
async fn get(server: &Server, path: &str) -> (u16, String) {
    let (status, _, text) = server.call(Method::GET, path, "").await;
    (status.as_u16(), text)
}

/// The lines logged for `function`.
async fn log_lines(server: &Server, function: &str) -> Vec<String> {
    let (_, body) = server
        .get_json(&format!("/v1/functions/{function}/logs?limit=1000"))
        .await;
    body["logs"]
        .as_array()
        .map(|logs| {
            logs.iter()
                .map(|l| l["line"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `function`'s log has, for each of `wants`, at least `times` lines containing it (the
/// journal writes records a moment after the answer).
async fn wait_for_lines(server: &Server, function: &str, wants: &[&str], times: usize) {
    let what = format!("{wants:?} in the log of {function}");
    wait_for(&what, std::time::Duration::from_secs(15), || async {
        let lines = log_lines(server, function).await;
        wants
            .iter()
            .all(|want| lines.iter().filter(|l| l.contains(want)).count() >= times)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_spin_sdk_component_uses_key_value_variables_and_sqlite_under_its_grants() {
    let server = Server::start();
    let app = example("spin-python/app.wasm");
    let (status, body) = server
        .deploy_parts(
            "spin",
            app.clone(),
            &[
                (
                    "config",
                    json!({"key_value_stores": ["default"], "sqlite_databases": ["default"]}),
                ),
                ("variables", json!({"variables": {"greeting": "hello"}})),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Key-value: Spin's store "default" is wafer's store of that name, seen by operators too.
    assert_eq!(
        get(&server, "/fn/spin/kv?key=a&value=1").await,
        (200, "1 exists=True keys=a".into())
    );
    assert_eq!(server.get_text("/v1/kv/default/a").await.1, "1");
    let (status, text) = get(&server, "/fn/spin/kv?store=other&key=a&value=1").await;
    assert_eq!(status, 500);
    assert!(text.contains("AccessDenied"), "{text}");

    // The same store through wasi:keyvalue 0.2.0-draft2: a compare-and-swap that lost a race fails
    // and hands its handle back, re-armed by reading the current value.
    let (status, text) = get(&server, "/fn/spin/wasi").await;
    assert_eq!(status, 200, "{text}");
    let wasi: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        wasi,
        json!({"first": "CasError_CasFailed", "seen": "2", "now": "3", "count": 5,
               "many": [["x", "1"], ["nope", null]], "keys": ["a", "count", "n", "x", "y"],
               "greeting": "hello"})
    );

    // Variables: defined, undefined, and a name Spin would not accept.
    assert_eq!(
        get(&server, "/fn/spin/var?name=greeting").await,
        (200, "hello".into())
    );
    let (status, text) = get(&server, "/fn/spin/var?name=missing").await;
    assert_eq!(
        (status, text.starts_with("Error_Undefined")),
        (404, true),
        "{text}"
    );
    let (status, text) = get(&server, "/fn/spin/var?name=Upper").await;
    assert_eq!(
        (status, text.starts_with("Error_InvalidName")),
        (404, true),
        "{text}"
    );

    // SQLite, version 2 and 3 of the interface, on one database file in the data directory.
    assert_eq!(get(&server, "/fn/spin/sqlite?body=first").await.0, 200);
    let (status, text) = get(&server, "/fn/spin/sqlite?body=second").await;
    assert_eq!(status, 200, "{text}");
    let rows: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        rows,
        json!({"columns": ["id", "body"], "rows": [[1, "first"], [2, "second"]]})
    );
    assert_eq!(
        get(&server, "/fn/spin/sqlite3?name=t").await,
        (200, "rowid=1 changes=1".into())
    );
    assert!(server.data_dir().join("sqlite/default.db").is_file());
    let (status, text) = get(&server, "/fn/spin/sqlite?db=secret&body=x").await;
    assert_eq!(status, 500);
    assert!(text.contains("AccessDenied"), "{text}");

    // An interface wafer does not provide links, and answers with its own error.
    assert_eq!(
        get(&server, "/fn/spin/llm").await,
        (200, "llm refused: Error_RuntimeError".into())
    );
    let wants = ["not granted", "fermyon:spin/llm is not provided by wafer"];
    wait_for_lines(&server, "spin", &wants, 1).await;

    // A label is a file name: one that could leave the directory is refused at deploy.
    let (status, body) = server
        .deploy("bad", app, json!({"sqlite_databases": ["../x"]}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_config");
}

#[tokio::test]
async fn spin_outbound_redis_and_postgres_reach_only_allowed_hosts() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let database = pg.create_database().await;
    let pg_host = database
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the URL")
        .to_string();
    let server = Server::start();
    let app = example("spin-python/app.wasm");
    let allowed = json!({"allowed_outbound_hosts": [
        format!("redis://{}", redis.address),
        format!("postgres://{pg_host}"),
    ]});
    server.deploy_ok("spin", app.clone(), allowed).await;
    server.deploy_ok("closed", app, json!({})).await;
    let redis_url = format!("redis://{}", redis.address);
    let query = |path: &str, address: &str| {
        format!(
            "{path}{}address={}",
            if path.contains('?') { "&" } else { "?" },
            urlencode(address)
        )
    };

    assert_eq!(
        get(&server, &query("/fn/spin/redis", &redis_url)).await,
        (200, "hello counter=1 colours=green,red echo=hi".into())
    );
    assert_eq!(
        get(&server, &query("/fn/spin/pg?id=1&name=rex", &database)).await,
        (200, r#"[[1, "rex"]]"#.into())
    );
    let (status, text) = get(&server, &query("/fn/spin/pg4", &database)).await;
    assert_eq!(status, 200, "{text}");
    let v4: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v4["id"], "'67e55044-10b1-426f-9247-bb680e5fe0c8'");
    assert_eq!(v4["doc"], "b'{\"a\":1}'");
    assert_eq!(v4["price"], "'12.50'");
    assert_eq!(v4["day"], "(2024, 2, 29)");
    assert_eq!(v4["ints"], "[1, None, 3]");
    assert_eq!(
        v4["error"], "42P01",
        "the server's error code reaches the guest"
    );

    // A Spin 1 module reaches the same Redis through outbound-redis.
    server
        .deploy_ok(
            "legacy-redis",
            wat(SPIN1_REDIS),
            json!({"allowed_outbound_hosts": [format!("redis://{}", redis.address)]}),
        )
        .await;
    let (status, _, text) = server
        .call(Method::POST, "/fn/legacy-redis", &redis_url)
        .await;
    assert_eq!((status.as_u16(), text.as_str()), (200, "v1"));
    let (_, _, text) = server
        .call(Method::POST, "/fn/legacy-redis", &redis_url)
        .await;
    assert_eq!(text, "v2", "the counter lives in Redis");

    // Without the grant, neither is reached, and the log says why.
    for (path, address) in [
        ("/fn/closed/redis", &redis_url),
        ("/fn/closed/pg?id=2&name=x", &database),
    ] {
        let (status, text) = get(&server, &query(path, address)).await;
        assert_eq!(status, 500, "{path}: {text}");
    }
    wait_for_lines(&server, "closed", &["allowed_outbound_hosts"], 2).await;
}

/// A Spin 1 module that, given a Redis address as its body, sets `k` to `v`, reads it back and
/// increments `n`: it answers the value and the count's last digit.
const SPIN1_REDIS: &str = r#"
(module
  (import "outbound-redis" "set" (func $set (param i32 i32 i32 i32 i32 i32 i32)))
  (import "outbound-redis" "get" (func $get (param i32 i32 i32 i32 i32)))
  (import "outbound-redis" "incr" (func $incr (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "k")
  (data (i32.const 8) "v")
  (data (i32.const 16) "n")
  (func (export "canonical_abi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (local.get $p))
  (func (export "canonical_abi_free") (param i32 i32 i32))
  (func (export "handle-http-request")
    (param i32 i32 i32 i32 i32 i32 i32) (param $has i32) (param $a i32) (param $al i32)
    (result i32)
    (call $set (local.get $a) (local.get $al) (i32.const 0) (i32.const 1) (i32.const 8) (i32.const 1) (i32.const 200))
    (call $get (local.get $a) (local.get $al) (i32.const 0) (i32.const 1) (i32.const 216))
    (call $incr (local.get $a) (local.get $al) (i32.const 16) (i32.const 1) (i32.const 232))
    ;; body: the value read, then '0' + the count % 10
    (i32.store8 (i32.const 300) (i32.load8_u (i32.load (i32.const 220))))
    (i32.store8 (i32.const 301)
      (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (i64.load (i32.const 240)) (i64.const 10)))))
    (i32.store16 (i32.const 400) (i32.const 200))
    (i32.store8 (i32.const 404) (i32.const 0))
    (i32.store8 (i32.const 416) (i32.const 1))
    (i32.store (i32.const 420) (i32.const 300))
    (i32.store (i32.const 424) (i32.const 2))
    (i32.const 400))
)
"#;

/// Percent-encodes a query value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_spin_1_module_runs_with_spin_1_interfaces_under_its_grants() {
    let server = Server::start();
    server
        .deploy_ok("echo", example("wagi-c/hello.wasm"), json!({}))
        .await;
    let legacy = wat(&String::from_utf8(fixture("spin1-legacy.wat")).expect("UTF-8"));
    let (status, body) = server
        .deploy_parts(
            "legacy",
            legacy.clone(),
            &[
                (
                    "config",
                    json!({"key_value_stores": ["default"], "allowed_functions": ["echo"]}),
                ),
                ("variables", json!({"variables": {"greeting": "hi"}})),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["kind"], "http",
        "handle-http-request wins over _start: {body}"
    );

    let (status, headers, text) = server.call(Method::POST, "/fn/legacy/path?q=1", "3").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers["content-type"], "text/plain");
    let parts: Vec<&str> = text.split(" | ").collect();
    assert_eq!(parts[..3], ["/fn/legacy/path?q=1", "hi", "3"], "{text}");
    assert!(
        parts[3].contains("legacy"),
        "the echo function answered: {text}"
    );
    assert_eq!(server.get_text("/v1/kv/default/visits").await.1, "3");

    // Without grants every interface answers with its error, and the log says why.
    server.deploy_ok("closed", legacy, json!({})).await;
    let (status, _, text) = server.call(Method::GET, "/fn/closed/", "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "/fn/closed/ | missing | missing | missing");
    let wants = [
        "spin-config get-config failed",
        "not granted",
        "wasi-outbound-http request failed",
    ];
    wait_for_lines(&server, "closed", &wants, 1).await;
    // Methods Spin 1's interface lacks never reach the module.
    let (status, _, _) = server.call(Method::TRACE, "/fn/closed/", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
