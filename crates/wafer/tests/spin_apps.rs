//! Spin applications deploy from their manifests: `wafer deploy spin.toml` (or its directory) makes
//! every component a function, with its routes, grants and variables, in one transaction or not at
//! all, and says what it does not honour.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Writes `manifest` as `spin.toml` in a new directory beside copies of the example modules.
fn app_dir(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("spin.toml"), manifest).expect("write spin.toml");
    for (from, to) in [
        ("spin-python/app.wasm", "api.wasm"),
        ("wagi-c/hello.wasm", "site.wasm"),
    ] {
        std::fs::copy(examples().join(from), dir.path().join(to)).expect("copy module");
    }
    dir
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let (status, _, text) = server.call(Method::GET, path, "").await;
    (status.as_u16(), text)
}

#[tokio::test]
async fn a_version_2_application_deploys_every_component_with_its_routes_and_variables() {
    let server = Server::start();
    let dir = examples().join("spin-app");
    // A required variable with no value stops the deploy before anything is sent.
    let refused = server.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("SPIN_VARIABLE_TOKEN"),
        "{}",
        stderr(&refused)
    );

    let out = server.cli(&["deploy", dir.to_str().unwrap(), "--var", "token=t0k"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deployed application spin-demo"),
        "{}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("note: component `api`: its build section is ignored"));
    let (_, list) = server.get_json("/v1/functions").await;
    let names: Vec<_> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["spin-demo-api", "spin-demo-site"]);

    // The api component under /demo, with its templated variables (the token's one a secret).
    assert_eq!(
        get(&server, "/demo/var?name=greeting").await,
        (200, "hello, from spin-demo".into())
    );
    assert_eq!(
        get(&server, "/demo/var?name=token").await,
        (200, "t0k".into())
    );
    let (_, config) = server.get_json("/v1/functions/spin-demo-api/config").await;
    assert_eq!(config["secrets"], json!(["token"]), "{config}");
    assert_eq!(get(&server, "/demo/kv?key=k&value=v").await.0, 200);
    // The site catches everything else at the root — but never what wafer keeps for itself.
    let (status, text) = get(&server, "/any/page?name=spin").await;
    assert_eq!(status, 200);
    assert!(text.contains("spin"), "{text}");
    let (status, _) = server.get_json("/v1/no-such-endpoint").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.get_text("/healthz").await.0, StatusCode::OK);

    // Both components read the application's static/ files, read-only, where their `files` put them:
    // the api's pattern keeps the path, the site's directory mount puts them at its root.
    let (status, text) = get(&server, "/demo/files?path=/static/hello.txt").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("hello from a file write="), "{text}");
    assert!(!text.ends_with("write=wrote"), "{text}");
    assert_eq!(
        get(&server, "/files/hello.txt").await,
        (200, "hello from a file\n".into())
    );
    let (_, versions) = server
        .get_json("/v1/functions/spin-demo-site/versions")
        .await;
    assert!(versions["versions"][0]["files"].is_string(), "{versions}");

    // Deploying again adds a version to each.
    let again = server.cli(&[
        "deploy",
        dir.join("spin.toml").to_str().unwrap(),
        "--var",
        "token=new",
    ]);
    assert!(again.status.success(), "{}", stderr(&again));
    let (_, api) = server.get_json("/v1/functions/spin-demo-api").await;
    assert_eq!(api["live_version"], 2, "{api}");
    assert_eq!(
        get(&server, "/demo/var?name=token").await,
        (200, "new".into())
    );
}

#[tokio::test]
async fn an_application_deploys_whole_or_not_at_all() {
    let server = Server::start();
    server
        .deploy_ok(
            "holder",
            example("wagi-c/hello.wasm"),
            json!({"routes": ["/taken"]}),
        )
        .await;
    let dir = app_dir(
        r#"
spin_manifest_version = 2
[application]
name = "clash"
[[trigger.http]]
route = "/free/..."
component = "one"
[[trigger.http]]
route = "/taken/..."
component = "two"
[component.one]
source = "api.wasm"
[component.two]
source = "site.wasm"
"#,
    );
    let out = server.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/taken"), "{}", stderr(&out));
    for name in ["clash-one", "clash-two"] {
        let (status, _) = server.get_json(&format!("/v1/functions/{name}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} must not exist");
    }
    assert_eq!(get(&server, "/free").await.0, 404);

    // A module that is not wasm refuses them all, and the error names the component's function.
    std::fs::write(dir.path().join("site.wasm"), b"not wasm").unwrap();
    let bad = dir.path().join("spin.toml");
    let text = std::fs::read_to_string(&bad)
        .unwrap()
        .replace("/taken/...", "/two/...");
    std::fs::write(&bad, text).unwrap();
    let out = server.cli(&["deploy", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("function `clash-two`"),
        "{}",
        stderr(&out)
    );
    let (status, _) = server.get_json("/v1/functions/clash-one").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_version_1_manifest_deploys_too() {
    let server = Server::start();
    let dir = app_dir(
        r#"
spin_manifest_version = "1"
name = "Old App"
version = "1.0.0"
trigger = { type = "http", base = "/old" }

[variables]
who = { default = "world" }

[[component]]
id = "greet"
source = "api.wasm"
key_value_stores = ["default"]
[component.trigger]
route = "/api/..."
[component.config]
greeting = "hello, {{ who }}"

[[component]]
id = "site"
source = "site.wasm"
[component.trigger]
route = "/..."
executor = { type = "wagi" }
"#,
    );
    let out = server.cli(&[
        "deploy",
        dir.path().join("spin.toml").to_str().unwrap(),
        "--app",
        "legacy",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        get(&server, "/old/api/var?name=greeting").await,
        (200, "hello, world".into())
    );
    let (status, text) = get(&server, "/old/page?name=v1").await;
    assert_eq!(status, 200);
    assert!(text.contains("v1"), "{text}");
    let (_, site) = server.get_json("/v1/functions/legacy-site").await;
    assert_eq!(site["kind"], "wagi", "{site}");
}

#[tokio::test]
async fn components_call_each_other_through_self() {
    let server = Server::start();
    // The Spin 1 fixture, fetching the application's own route instead of another function by name.
    let url = "http://self/back/?name=viaself";
    let front = String::from_utf8(fixture("spin1-legacy.wat"))
        .expect("UTF-8")
        .replace("http://echo.fn.internal/?name=legacy", url)
        .replace(
            "(i32.const 112) (i32.const 36)",
            &format!("(i32.const 112) (i32.const {})", url.len()),
        );
    let dir = app_dir(
        r#"
spin_manifest_version = 2
[application]
name = "selfish"
[[trigger.http]]
route = "/front/..."
component = "front"
[[trigger.http]]
route = "/closed/..."
component = "closed"
[[trigger.http]]
route = "/back/..."
component = "back"
executor = { type = "wagi" }
[component.front]
source = "front.wasm"
allowed_outbound_hosts = ["http://self"]
[component.closed]
source = "front.wasm"
[component.back]
source = "site.wasm"
"#,
    );
    std::fs::write(dir.path().join("front.wasm"), wat(&front)).unwrap();
    let out = server.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, text) = get(&server, "/front/").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("| Hello, viaself!") && text.contains("script=/back"),
        "the back component answered under its own route: {text}"
    );
    // Without `self` in its allowlist a component reaches nothing that way.
    let (status, text) = get(&server, "/closed/").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("| missing"), "{text}");
}
