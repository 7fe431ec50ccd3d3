//! End to end in a real browser: headless Chromium, driven by the scripts in `ui/tests/` (npm's
//! `playwright-core`), against a real `wafer serve`.
//!
//! Each test starts a server, prepares what its script checks, and runs `node ui/tests/NAME.mjs URL`.
//! Without Node.js, `ui/node_modules` (`npm ci --prefix ui`) or Chromium a test skips with the reason,
//! unless `CI` is set: `.ci/run` installs them, and there the test must run.

mod common;

use common::*;
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

/// Runs `ui/tests/NAME.mjs` against `server`; fails the test with the script's output unless it passed.
fn script(name: &str, server: &Server) {
    let output = Command::new("node")
        .arg(ui_dir().join("tests").join(format!("{name}.mjs")))
        .arg(server.url.trim_end_matches('/'))
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
    script("api-docs", &server);
}
