//! End-to-end: API keys with scopes on every surface (the management API, private functions, key-value
//! stores, config and secrets, logs, the Lambda API), their expiry, revocation and rate limits, the
//! audit log, and the rule that clients on other hosts of a tokenless server need a key.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// A key a client holds: its id and the bearer it sends.
struct Key {
    id: String,
    token: String,
}

/// Creates a key with `request` through the API of a tokenless server (from loopback: an admin).
async fn create_key(server: &Server, request: Value) -> Key {
    let response = server
        .request(Method::POST, "/v1/keys")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create {request}");
    let created: Value = response.json().await.unwrap();
    Key {
        id: created["key"]["id"].as_str().unwrap().to_string(),
        token: created["token"].as_str().unwrap().to_string(),
    }
}

/// `method path` with `key` as the bearer (and `body` as JSON, if any): status and JSON body.
async fn with_key(
    server: &Server,
    key: &Key,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .request(method, server.at(path))
        .bearer_auth(&key.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Deploys `module` as `name` with `key`: the status.
async fn deploy_with(server: &Server, key: &Key, name: &str, module: &[u8]) -> StatusCode {
    server
        .http
        .post(server.at(&format!("/v1/functions/{name}/versions")))
        .bearer_auth(&key.token)
        .header("content-type", "application/wasm")
        .body(module.to_vec())
        .send()
        .await
        .unwrap()
        .status()
}

fn hello() -> Vec<u8> {
    wagi_wat("Content-Type: text/plain\n\nhello")
}

/// A server holding `hello-a` (private), `other` (private) and key-value entries in `hello-cache` and
/// `other-cache`.
async fn seeded() -> Server {
    let server = Server::start();
    server
        .deploy_ok("hello-a", hello(), json!({"private": true}))
        .await;
    server
        .deploy_ok("other", hello(), json!({"private": true}))
        .await;
    for store in ["hello-cache", "other-cache"] {
        let (status, _, _) = server
            .call(Method::PUT, &format!("/v1/kv/{store}/k"), "v")
            .await;
        assert_eq!(status, 204);
    }
    server
}

#[tokio::test]
async fn a_read_key_reads_the_functions_its_pattern_names_and_changes_nothing() {
    let server = seeded().await;
    let key = create_key(
        &server,
        json!({"name": "dashboards", "scopes": ["read:hello-*"]}),
    )
    .await;
    let get = |path: &'static str| with_key(&server, &key, Method::GET, path, None);
    for path in [
        "/v1/functions/hello-a",
        "/v1/functions/hello-a/versions",
        "/v1/functions/hello-a/logs",
        "/v1/functions/hello-a/config",
        "/v1/functions/hello-a/executions",
        "/v1/kv/hello-cache/k",
        "/v1/kv/hello-cache",
    ] {
        assert_eq!(get(path).await.0, 200, "{path}");
    }
    for path in [
        "/v1/functions/other",
        "/v1/functions/other/logs",
        "/v1/kv/other-cache/k",
        "/metrics",
        "/v1/queue",
        "/v1/keys",
        "/v1/audit",
    ] {
        let (status, body) = get(path).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (status, body) = get("/v1/functions/other").await;
    assert_eq!(status, 403);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&key.id) && message.contains("read:hello-*"),
        "{message}"
    );
    // Lists hold only what the key may read.
    let (_, list) = get("/v1/functions").await;
    let names: Vec<&str> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hello-a"]);
    let (_, lambda) = get("/2015-03-31/functions").await;
    assert_eq!(lambda["Functions"].as_array().unwrap().len(), 1, "{lambda}");
    // It changes and calls nothing.
    assert_eq!(deploy_with(&server, &key, "hello-b", &hello()).await, 403);
    let put = with_key(&server, &key, Method::PUT, "/v1/kv/hello-cache/k", None).await;
    assert_eq!(put.0, 403);
    let config = json!({"variables": {"A": "1"}});
    let put = with_key(
        &server,
        &key,
        Method::PUT,
        "/v1/functions/hello-a/config",
        Some(config),
    );
    assert_eq!(put.await.0, 403);
    let call = with_key(&server, &key, Method::GET, "/fn/hello-a", None).await;
    assert_eq!(call.0, 403);
    let invoke = "/v1/functions/hello-a/invoke";
    assert_eq!(
        with_key(&server, &key, Method::POST, invoke, None).await.0,
        403
    );
    assert_eq!(server.get_json("/v1/functions/hello-b").await.0, 404);
}

#[tokio::test]
async fn a_deploy_key_changes_the_functions_its_pattern_names_and_reads_nothing() {
    let server = seeded().await;
    // Created as the example has it, through the CLI.
    let out = server.cli(&[
        "keys",
        "-o",
        "json",
        "create",
        "--scope",
        "deploy:hello-*",
        "--scope",
        "invoke:*",
        "--expires",
        "30d",
        "--name",
        "ci",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = Key {
        id: created["key"]["id"].as_str().unwrap().into(),
        token: created["token"].as_str().unwrap().into(),
    };
    assert_eq!(
        created["key"]["scopes"],
        json!(["deploy:hello-*", "invoke:*"])
    );
    assert_eq!(created["key"]["status"], "active");
    assert!(created["key"]["expires_at"].is_string());

    assert_eq!(deploy_with(&server, &key, "hello-b", &hello()).await, 201);
    assert_eq!(deploy_with(&server, &key, "other", &hello()).await, 403);
    let secrets = json!({"variables": {"A": "1"}, "secrets": {"API_KEY": "s3cret"}});
    let put = with_key(
        &server,
        &key,
        Method::PUT,
        "/v1/functions/hello-a/config",
        Some(secrets),
    );
    assert_eq!(put.await.0, 200);
    let put = with_key(&server, &key, Method::PUT, "/v1/kv/hello-cache/k", None).await;
    assert_eq!(put.0, 204);
    let put = with_key(&server, &key, Method::PUT, "/v1/kv/other-cache/k", None).await;
    assert_eq!(put.0, 403);
    let rollback = json!({"version": 1});
    let (status, _) = with_key(
        &server,
        &key,
        Method::POST,
        "/v1/functions/other/rollback",
        Some(rollback),
    )
    .await;
    assert_eq!(status, 403);
    for path in [
        "/v1/functions/hello-a",
        "/v1/functions/hello-a/logs",
        "/v1/kv/hello-cache/k",
    ] {
        assert_eq!(
            with_key(&server, &key, Method::GET, path, None).await.0,
            403,
            "{path}"
        );
    }
    // Its invoke scope reaches every private function.
    assert_eq!(
        with_key(&server, &key, Method::GET, "/fn/other", None)
            .await
            .0,
        200
    );
    let delete = with_key(&server, &key, Method::DELETE, "/v1/functions/hello-b", None);
    assert_eq!(delete.await.0, 204);
    assert_eq!(
        with_key(&server, &key, Method::DELETE, "/v1/functions/other", None)
            .await
            .0,
        403
    );

    // The audit log names the key, what it did or tried, and how it was answered; reads and calls are
    // not actions.
    let (status, log) = server.get_json("/v1/audit?limit=100").await;
    assert_eq!(status, 200, "{log}");
    let actions: Vec<(String, String, u64)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == format!("key:{}", key.id))
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap_or_default().to_string(),
                e["status"].as_u64().unwrap(),
            )
        })
        .rev()
        .collect();
    let expected = [
        ("POST /v1/functions/{name}/versions", "hello-b", 201),
        ("POST /v1/functions/{name}/versions", "other", 403),
        ("PUT /v1/functions/{name}/config", "hello-a", 200),
        ("PUT /v1/kv/{store}/{key}", "hello-cache", 204),
        ("PUT /v1/kv/{store}/{key}", "other-cache", 403),
        ("POST /v1/functions/{name}/rollback", "other", 403),
        ("DELETE /v1/functions/{name}", "hello-b", 204),
        ("DELETE /v1/functions/{name}", "other", 403),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(a, t, s)| (a.to_string(), t.to_string(), *s))
        .collect();
    assert_eq!(actions, expected);
    let first = &log["entries"].as_array().unwrap()[0];
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(
        first["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{first}"
    );
    // The seeding and the key's creation were the local admin's.
    let out = server.cli(&["audit", "--limit", "1000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("local") && text.contains("POST /v1/keys"),
        "{text}"
    );
}

#[tokio::test]
async fn an_invoke_key_calls_the_functions_its_pattern_names_on_every_trigger() {
    let server = seeded().await;
    let key = create_key(&server, json!({"scopes": ["invoke:hello-*"]})).await;
    let call = |method: Method, path: &'static str| with_key(&server, &key, method, path, None);
    assert_eq!(
        call(Method::GET, "/fn/hello-a").await,
        (StatusCode::OK, json!("hello"))
    );
    assert_eq!(call(Method::GET, "/fn/other").await.0, 403);
    // A client on the server's host needs no credentials: this server has no token.
    assert_eq!(server.get_text("/fn/other").await.0, 200);
    let (status, _) = call(Method::POST, "/v1/functions/hello-a/invoke").await;
    assert_eq!(status, 200);
    let (status, accepted) = call(Method::POST, "/v1/functions/hello-a/invoke?async=true").await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        call(Method::POST, "/v1/functions/other/invoke").await.0,
        403
    );
    let lambda = "/2015-03-31/functions/hello-a/invocations";
    let (status, body) = call(Method::POST, lambda).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(Method::POST, "/2015-03-31/functions/other/invocations").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["Type"], "User", "{body}");
    // Reading what it ran is another scope.
    let id = accepted["execution_id"].as_str().unwrap();
    let (status, _) = with_key(
        &server,
        &key,
        Method::GET,
        &format!("/v1/executions/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(deploy_with(&server, &key, "hello-b", &hello()).await, 403);
    assert_eq!(
        call(Method::GET, "/2015-03-31/functions/hello-a").await.0,
        403
    );
}

#[tokio::test]
async fn an_admin_key_manages_keys_and_reads_the_audit_log() {
    let server = seeded().await;
    let admin = create_key(&server, json!({"scopes": ["admin"]})).await;
    let request = json!({"scopes": ["read:*"], "name": "made by a key"});
    let (status, created) =
        with_key(&server, &admin, Method::POST, "/v1/keys", Some(request)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["key"]["created_by"], format!("key:{}", admin.id));
    let (status, list) = with_key(&server, &admin, Method::GET, "/v1/keys", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    // No secret is ever listed.
    assert!(!list
        .to_string()
        .contains(created["secret"].as_str().unwrap()));
    let (status, _) = with_key(&server, &admin, Method::GET, "/v1/audit", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        with_key(&server, &admin, Method::GET, "/metrics", None)
            .await
            .0,
        200
    );
    assert_eq!(
        deploy_with(&server, &admin, "anything", &hello()).await,
        201
    );
    // Scopes that do not read are refused whole.
    for scopes in [
        json!([]),
        json!(["write:*"]),
        json!(["read:"]),
        json!(["admin:x"]),
    ] {
        let request = json!({"scopes": scopes});
        let (status, body) =
            with_key(&server, &admin, Method::POST, "/v1/keys", Some(request)).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn revoked_expired_and_unknown_keys_are_refused() {
    let server = seeded().await;
    let short = create_key(
        &server,
        json!({"scopes": ["read:*"], "expires_in": "1500ms"}),
    )
    .await;
    let long = create_key(&server, json!({"scopes": ["read:*"]})).await;
    let get = |key| with_key(&server, key, Method::GET, "/v1/functions/hello-a", None);
    assert_eq!(get(&short).await.0, 200);
    assert_eq!(get(&long).await.0, 200);
    let out = server.cli(&["keys", "revoke", &long.id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = get(&long).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (status, body) = get(&short).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    let out = server.cli(&["keys", "ls"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("revoked") && text.contains("expired"),
        "{text}"
    );
    // A guessed secret, a made-up id and a token this server does not have.
    let forged = [
        format!("{}.{}", long.id, "A".repeat(43)),
        format!("{}.x", short.id),
        "wk0123456789abcdef.secret".to_string(),
        "anything".to_string(),
    ];
    for token in forged {
        let key = Key {
            id: String::new(),
            token,
        };
        let (status, _) = with_key(&server, &key, Method::GET, "/v1/functions/hello-a", None).await;
        assert_eq!(status, 401, "{}", key.token);
    }
    assert_eq!(
        with_key(
            &server,
            &long,
            Method::DELETE,
            "/v1/keys/wk0000000000000000",
            None
        )
        .await
        .0,
        401
    );
    let (status, _) = server.get_json("/v1/keys/wk0000000000000000").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_key_over_its_rate_limit_is_told_when_to_come_back() {
    let server = seeded().await;
    let key = create_key(&server, json!({"scopes": ["invoke:*"], "rate_limit": 2})).await;
    let mut answers = Vec::new();
    for _ in 0..8 {
        let response = server
            .http
            .get(server.at("/fn/hello-a"))
            .bearer_auth(&key.token)
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().get("retry-after").cloned();
        answers.push((response.status().as_u16(), retry_after));
    }
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert!(answers[0].0 == 200 && answers[1].0 == 200, "{answers:?}");
    assert!(limited.len() >= 4, "{answers:?}");
    assert!(limited
        .iter()
        .all(|(_, after)| after.as_ref().is_some_and(|v| v == "1")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        with_key(&server, &key, Method::GET, "/fn/hello-a", None)
            .await
            .0,
        200
    );
    // The limit is the key's: others are not held back.
    let other = create_key(&server, json!({"scopes": ["invoke:*"]})).await;
    for _ in 0..8 {
        assert_eq!(
            with_key(&server, &other, Method::GET, "/fn/hello-a", None)
                .await
                .0,
            200
        );
    }
}
