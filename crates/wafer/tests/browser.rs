//! End to end in a real browser: headless Chromium, driven by the scripts in `ui/tests/` (npm's
//! `playwright-core`), against a real `wafer serve`.
//!
//! Each test starts a server, prepares what its script checks, and runs `node ui/tests/NAME.mjs URL`.
//! Without Node.js, `ui/node_modules` (`npm ci --prefix ui`) or Chromium a test skips with the reason,
//! unless `CI` is set: `.ci/run` installs them, and there the test must run.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui")
}

/// Whether the browser tests can run here; `false` (with the reason printed) when they cannot and CI
/// is not set.
fn browser_available() -> bool {
    let missing = if !Path::new(CHROMIUM).exists() {
        Some(format!("{CHROMIUM} is missing (apt install chromium)"))
    } else if !ui_dir().join("node_modules/playwright-core").is_dir() {
        Some("ui/node_modules is missing (npm ci --prefix ui)".to_string())
    } else if Command::new("node").arg("--version").output().is_err() {
        Some("node is missing (apt install nodejs)".to_string())
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI needs the browser: {reason}")
        }
        Some(reason) => {
            println!("skipped: {reason}");
            false
        }
    }
}

/// Runs `ui/tests/NAME.mjs URL ARGS…` against `url`; fails the test with the script's output unless it
/// passed.
fn script(name: &str, url: &str, args: &[&str]) {
    let output = Command::new("node")
        .arg(ui_dir().join("tests").join(format!("{name}.mjs")))
        .arg(url.trim_end_matches('/'))
        .args(args)
        .current_dir(ui_dir())
        .output()
        .expect("run node");
    print!("{}", stdout(&output));
    assert!(
        output.status.success(),
        "{name}: {}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[tokio::test]
async fn the_api_docs_page_renders_in_chromium() {
    if !browser_available() {
        return;
    }
    let server = Server::start();
    script("api-docs", &server.url, &[]);
}

#[tokio::test]
async fn the_console_shows_traffic_failures_versions_logs_and_deploys() {
    if !browser_available() {
        return;
    }
    let server = Server::start();
    let text = |body: &str| wagi_wat(&format!("Content-Type: text/plain\n\n{body}"));
    server.deploy_ok("greeter", text("one"), json!({})).await;
    server.deploy_ok("greeter", text("two"), json!({})).await;
    server
        .deploy_ok("broken", trap_wat(), json!({"max_attempts": 1}))
        .await;
    server
        .deploy_ok(
            "chatty",
            wagi_wat_logging("chatty says hello", "Content-Type: text/plain\n\nok"),
            json!({}),
        )
        .await;
    for _ in 0..3 {
        server.call(Method::GET, "/fn/greeter", "").await;
        server.call(Method::GET, "/fn/broken", "").await;
    }
    // An async execution that dies, for the queue page.
    let dead = server.invoke_async("broken", "", "").await;
    server.finished_execution(&dead).await;
    // The version the page deploys: a greeter that says "three".
    let dir = tempfile::tempdir().expect("temp dir");
    let upload = dir.path().join("three.wasm");
    std::fs::write(&upload, text("three")).expect("write the upload");
    let console = server.console_url();
    script(
        "console",
        &console,
        &[server.url.trim_end_matches('/'), &upload.to_string_lossy()],
    );
    // What the page did, as the API sees it.
    let (_, greeter) = server.get_json("/v1/functions/greeter").await;
    assert_eq!(greeter["live_version"], 3, "{greeter}");
    let (_, _, body) = server.call(Method::GET, "/fn/greeter", "").await;
    assert_eq!(body, "three");
}

#[tokio::test]
async fn with_a_token_the_console_shows_nothing_until_it_is_given() {
    if !browser_available() {
        return;
    }
    let server = Server::start_with(&["--token", "console-secret"]);
    server
        .deploy_ok(
            "hidden",
            wagi_wat("Content-Type: text/plain\n\nx"),
            json!({}),
        )
        .await;
    script("console-token", &server.console_url(), &["console-secret"]);
}

#[tokio::test]
async fn with_an_api_key_the_console_shows_and_does_what_its_scopes_allow() {
    if !browser_available() {
        return;
    }
    let server = Server::start_with(&["--token", "console-secret"]);
    let page = |text: &str| wagi_wat(&format!("Content-Type: text/plain\n\n{text}"));
    server.deploy_ok("hello-a", page("one"), json!({})).await;
    server.deploy_ok("hello-a", page("two"), json!({})).await;
    server.deploy_ok("other", page("x"), json!({})).await;
    let (status, created) = server
        .call_json(Method::POST, "/v1/keys", r#"{"scopes": ["read:hello-*"]}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["token"].as_str().unwrap();
    script("console-key", &server.console_url(), &[key]);
    // The page changed nothing.
    let (_, info) = server.get_json("/v1/functions/hello-a").await;
    assert_eq!(info["live_version"], 2, "{info}");
}

#[test]
fn the_committed_console_is_built_from_its_sources() {
    if !browser_available() {
        return;
    }
    let out = tempfile::tempdir().expect("temp dir");
    let built = Command::new("node")
        .arg(ui_dir().join("build.mjs"))
        .env("WAFER_UI_OUT", out.path())
        .output()
        .expect("run node build.mjs");
    assert!(built.status.success(), "{}", stderr(&built));
    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../wafer-server/src/routes/console");
    for file in ["index.html", "app.js", "app.css"] {
        let fresh = std::fs::read(out.path().join(file)).expect("built file");
        let kept = std::fs::read(committed.join(file)).expect("committed file");
        assert!(
            fresh == kept,
            "{file} differs from a build of ui/src: run `npm run build --prefix ui` and commit it"
        );
    }
}
