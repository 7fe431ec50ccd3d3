//! End-to-end: the management API's bearer token, private functions, and what clients on other hosts
//! of a tokenless server may do (API keys have their own tests, `keys.rs`).

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

const TOKEN: &str = "correct-horse-battery-staple";

#[tokio::test]
async fn the_management_api_needs_the_token() {
    let server = Server::start_with(&["--token", TOKEN]);
    for path in ["/v1/functions", "/metrics"] {
        let response = server.http.get(server.at(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} without a token");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let response = server
            .http
            .get(server.at(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} with a wrong token");
        let (status, _, _) = server.call(Method::GET, path, "").await;
        assert_eq!(status, 200, "{path} with the token");
    }
    let response = server.http.get(server.at("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // A deploy without the token stores nothing.
    let response = server
        .http
        .post(server.at("/v1/functions/sneaky/versions"))
        .header("content-type", "application/wasm")
        .body(wagi_wat("Content-Type: text/plain\n\nno"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(server.module_files().is_empty());
}

#[tokio::test]
async fn the_cli_sends_the_token() {
    let server = Server::start_with(&["--token", TOKEN]);
    let out = wafer_cli(&server.url, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unauthorized"), "{}", stderr(&out));
    let out = wafer_cli(&server.url, &["ls", "--token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    let out = server.cli(&["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn functions_stay_open_unless_private() {
    let server = Server::start_with(&["--token", TOKEN]);
    let module = wagi_wat("Content-Type: text/plain\n\nhi");
    server.deploy_ok("public", module.clone(), json!({})).await;
    server
        .deploy_ok(
            "secret",
            module,
            json!({"private": true, "routes": ["/secret"]}),
        )
        .await;
    let get = |path: &str| server.http.get(server.at(path)).send();
    assert_eq!(get("/fn/public").await.unwrap().status(), 200);
    assert_eq!(get("/fn/secret").await.unwrap().status(), 401);
    assert_eq!(get("/secret/x").await.unwrap().status(), 401);
    assert_eq!(
        server.get_text("/fn/secret").await,
        (StatusCode::OK, "hi".into())
    );
    let (_, info) = server.get_json("/v1/functions/secret").await;
    assert_eq!(info["config"]["private"], true);
}

/// An address of this host other than loopback, if it has one.
fn host_address() -> Option<std::net::IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback())
}

#[tokio::test]
async fn clients_on_other_hosts_of_a_tokenless_server_need_a_key() {
    let Some(ip) = host_address() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this host has no address but loopback"
        );
        eprintln!("skipped: this host has no address but loopback");
        return;
    };
    let server = Server::start_with(&["--listen", "0.0.0.0:0", "--console-listen", "0.0.0.0:0"]);
    let module = wagi_wat("Content-Type: text/plain\n\nhi");
    server.deploy_ok("public", module.clone(), json!({})).await;
    server
        .deploy_ok("secret", module, json!({"private": true}))
        .await;
    let elsewhere = |base: &str, path: &str| {
        let port = base.rsplit(':').next().unwrap().to_string();
        format!("http://{ip}:{port}{path}")
    };
    let from_afar = |path: &str| elsewhere(&server.url, path);
    let http = &server.http;
    // Before the first key, the management API and private functions serve this host only.
    let response = http.get(from_afar("/v1/functions")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wafer keys create"), "{message}");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(http.get(from_afar("/fn/public")).send().await.unwrap()),
        200
    );
    assert_eq!(
        status(http.get(from_afar("/fn/secret")).send().await.unwrap()),
        401
    );
    assert_eq!(server.get_json("/v1/functions").await.0, 200);
    // The first key turns authentication on for them.
    let request = json!({"scopes": ["read:*", "invoke:secret"]});
    let response = server
        .request(Method::POST, "/v1/keys")
        .json(&request)
        .send()
        .await;
    let created: serde_json::Value = response.unwrap().json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    let response = http.get(from_afar("/v1/functions")).send().await.unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{body}"
    );
    let with_key = |url: String| http.get(url).bearer_auth(token).send();
    assert_eq!(
        status(with_key(from_afar("/v1/functions")).await.unwrap()),
        200
    );
    assert_eq!(
        status(with_key(from_afar("/fn/secret")).await.unwrap()),
        200
    );
    let deploy = http
        .post(from_afar("/v1/functions/new/versions"))
        .bearer_auth(token)
        .header("content-type", "application/wasm")
        .body(wagi_wat("Content-Type: text/plain\n\nno"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(deploy), 403);
    // The console's listener is the same API.
    let console = server.console_url();
    let api = elsewhere(&console, "/v1/functions");
    assert_eq!(status(http.get(api.clone()).send().await.unwrap()), 401);
    assert_eq!(status(with_key(api).await.unwrap()), 200);
}

#[tokio::test]
async fn another_sites_page_cannot_change_a_tokenless_server() {
    let server = Server::start();
    // What a form post from another site's page looks like: Chromium sends both headers.
    let forged = server
        .http
        .post(server.at("/v1/functions/planted/versions"))
        .header("content-type", "application/wasm")
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body(wagi_wat("Content-Type: text/plain\n\nplanted"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cross_site");
    assert!(server.module_files().is_empty(), "nothing stored");
    // A browser that sends only Origin, from a page on another port of the same host.
    let forged = server
        .http
        .delete(server.at("/v1/functions/planted"))
        .header("origin", "http://127.0.0.1:1")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // The same request from the server's own pages, and from clients that are not browsers, passes.
    let own = server.url.trim_end_matches('/').to_string();
    let response = server
        .http
        .post(server.at("/v1/functions/mine/versions"))
        .header("content-type", "application/wasm")
        .header("origin", own)
        .header("sec-fetch-site", "same-origin")
        .body(wagi_wat("Content-Type: text/plain\n\nmine"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server
        .deploy_ok(
            "cli",
            wagi_wat("Content-Type: text/plain\n\ncli"),
            json!({}),
        )
        .await;
    // Reads are not refused: a page elsewhere cannot read the answer anyway.
    let read = server
        .http
        .get(server.at("/v1/functions"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
}

#[tokio::test]
async fn the_console_has_an_origin_of_its_own_that_serves_no_function() {
    let server = Server::start();
    server
        .deploy_ok(
            "page",
            wagi_wat("Content-Type: text/html\n\n<p>guest</p>"),
            json!({}),
        )
        .await;
    let console = server.console_url();
    assert_ne!(console, server.url.trim_end_matches('/'));
    // The main listener's /ui sends a browser to the console's listener.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects.get(server.at("/ui")).send().await.unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], format!("{console}/ui/"));
    // The console's page, under a policy that allows nothing but its own files and API.
    let page = server
        .http
        .get(format!("{console}/ui/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(rule), "{policy}");
    }
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/ui/app.js") && !html.contains("http"),
        "{html}"
    );
    let script = server
        .http
        .get(format!("{console}/ui/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // The API is there; no function's page is.
    let list = server
        .http
        .get(format!("{console}/v1/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    for path in ["/fn/page", "/fn/page/x", "/page"] {
        let response = server
            .http
            .get(format!("{console}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} on the console's listener");
    }
    let (status, _, body) = server.call(Method::GET, "/fn/page", "").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "<p>guest</p>"));
}

#[tokio::test]
async fn the_console_can_be_turned_off() {
    let server = Server::start_with(&["--console-listen", "off"]);
    let response = server.http.get(server.at("/ui")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}
