//! Releases end to end: aliases, weighted traffic, qualified calls, candidates and rollback.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// A WAGI version that answers `version N`.
fn answering(n: u32) -> Vec<u8> {
    wagi_wat(&format!("Content-Type: text/plain\n\nversion {n}"))
}

/// Deploys version `n` of `name` answering `version N`, as a candidate unless `promote`.
async fn deploy_version(
    server: &Server,
    name: &str,
    n: u32,
    promote: bool,
    config: Value,
) -> Value {
    let version = match promote {
        true => server.deploy_ok(name, answering(n), config).await,
        false => server.deploy_candidate(name, answering(n), config).await,
    };
    assert_eq!(version["version"], n, "{version}");
    version
}

/// Calls `path` and returns the status, the version header and the body.
async fn version_answering(server: &Server, path: &str) -> (StatusCode, Option<u32>, String) {
    let (status, headers, body) = server.call(Method::GET, path, "").await;
    let version = headers
        .get("x-wafer-version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, version, body)
}

async fn put_alias(server: &Server, name: &str, alias: &str, body: Value) -> (StatusCode, Value) {
    server
        .call_json(
            Method::PUT,
            &format!("/v1/functions/{name}/aliases/{alias}"),
            &body.to_string(),
        )
        .await
}

#[tokio::test]
async fn a_weight_on_live_sends_its_share_of_calls_to_the_canary() {
    let server = Server::start();
    deploy_version(&server, "shop", 1, true, json!({})).await;
    let candidate = deploy_version(&server, "shop", 2, false, json!({})).await;
    assert_eq!(candidate["live"], false, "a candidate is not live");
    let (status, live) = put_alias(
        &server,
        "shop",
        "live",
        json!({"version": 1, "weights": {"2": 0.1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{live}");
    assert_eq!(
        live,
        json!({"name": "live", "version": 1, "weights": {"2": 0.1}})
    );
    let (_, info) = server.get_json("/v1/functions/shop").await;
    assert_eq!(
        (info["live_version"].as_u64(), &info["live_weights"]),
        (Some(1), &json!({"2": 0.1}))
    );

    const CALLS: usize = 2000;
    let mut canary = 0;
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        calls.push(version_answering(&server, "/fn/shop"));
        if calls.len() == 16 {
            for (status, version, body) in futures_util::future::join_all(calls.drain(..)).await {
                assert_eq!(status, StatusCode::OK);
                let version = version.expect("x-wafer-version");
                assert_eq!(
                    body,
                    format!("version {version}"),
                    "the header names the version that answered"
                );
                canary += usize::from(version == 2);
            }
        }
    }
    let share = canary as f64 / CALLS as f64;
    println!("canary share: {canary} of {CALLS} = {:.1}%", share * 100.0);
    assert!(
        (0.07..=0.13).contains(&share),
        "{canary} of {CALLS} went to the canary"
    );

    // The record says which version ran.
    let (_, page) = server
        .get_json("/v1/functions/shop/executions?limit=1000")
        .await;
    let recorded = page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["version"] == 2)
        .count();
    assert!(recorded > 0, "executions of version 2 are recorded as such");

    // A promoting deploy moves live and clears its weights.
    deploy_version(&server, "shop", 3, true, json!({})).await;
    let (_, live) = server.get_json("/v1/functions/shop/aliases/live").await;
    assert_eq!(live, json!({"name": "live", "version": 3}));
    for _ in 0..20 {
        assert_eq!(version_answering(&server, "/fn/shop").await.1, Some(3));
    }
}

#[tokio::test]
async fn calls_may_name_an_alias_or_a_version_and_routes_follow_live() {
    let server = Server::start();
    deploy_version(&server, "api", 1, true, json!({"routes": ["/one"]})).await;
    deploy_version(&server, "api", 2, false, json!({"routes": ["/two"]})).await;
    assert_eq!(version_answering(&server, "/fn/api").await.1, Some(1));
    assert_eq!(
        version_answering(&server, "/fn/api:2").await,
        (StatusCode::OK, Some(2), "version 2".into())
    );
    assert_eq!(version_answering(&server, "/fn/api:1/x").await.1, Some(1));
    // The candidate's routes are not mounted while it is not live.
    assert_eq!(version_answering(&server, "/one").await.1, Some(1));
    assert_eq!(server.get_text("/two").await.0, StatusCode::NOT_FOUND);

    let (status, beta) = put_alias(&server, "api", "beta", json!({"version": 2})).await;
    assert_eq!(status, StatusCode::OK, "{beta}");
    assert_eq!(version_answering(&server, "/fn/api:beta").await.1, Some(2));
    let (status, _, body) = server
        .call(Method::POST, "/v1/functions/api/invoke?qualifier=beta", "")
        .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "version 2"));
    let out = server.cli(&["invoke", "api", "--qualifier", "1"]);
    assert_eq!(stdout(&out), "version 1", "{}", stderr(&out));
    // An async call names its target too, and its record says which ran.
    let id = server.invoke_async("api", "&qualifier=beta", "").await;
    let e = server.finished_execution(&id).await;
    assert_eq!(
        (e["status"].as_str(), e["version"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{e}"
    );

    // Unknown aliases and versions are 404; alias names are not numbers; live stays.
    for path in ["/fn/api:gamma", "/fn/api:9"] {
        let (status, body) = server.call_json(Method::GET, path, "").await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = put_alias(&server, "api", "7", json!({"version": 1})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_name");
    let (status, body) = put_alias(&server, "api", "beta", json!({"version": 5})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = put_alias(
        &server,
        "api",
        "beta",
        json!({"version": 1, "weights": {"2": 1.5}}),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, body) = put_alias(&server, "nobody", "beta", json!({"version": 1})).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = server
        .call_json(Method::DELETE, "/v1/functions/api/aliases/live", "")
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    // Moving live (a rollback forward here) moves the routes with it.
    let (status, _) = server
        .call_json(
            Method::POST,
            "/v1/functions/api/rollback",
            r#"{"version": 2}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version_answering(&server, "/two").await.1, Some(2));
    assert_eq!(server.get_text("/one").await.0, StatusCode::NOT_FOUND);
    assert_eq!(version_answering(&server, "/fn/api").await.1, Some(2));

    // The CLI sets, lists and removes aliases.
    let out = server.cli(&[
        "alias",
        "set",
        "api",
        "stable",
        "--version",
        "1",
        "--weight",
        "2=25%",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["alias", "ls", "api"]);
    let listed = stdout(&out);
    assert!(
        listed.contains("stable") && listed.contains("1 (75%), 2 (25%)"),
        "{listed}"
    );
    assert!(
        listed.contains("beta") && listed.contains("live"),
        "{listed}"
    );
    let out = server.cli(&["alias", "rm", "api", "stable"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, list) = server.get_json("/v1/functions/api/aliases").await;
    let names: Vec<&str> = list["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["beta", "live"]);
    let out = server.cli(&["deploy", "--name", "api", "--no-promote", "/dev/null"]);
    assert!(!out.status.success(), "an empty file is no module");

    // Aliases outlive a restart.
    let server = server.restart();
    assert_eq!(version_answering(&server, "/fn/api:beta").await.1, Some(2));
    assert_eq!(version_answering(&server, "/fn/api").await.1, Some(2));
}
