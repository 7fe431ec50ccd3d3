//! End-to-end: a data directory written by an earlier wafer opens with this one, with everything in it.
//!
//! `fixtures/upgrade/schema-4` was written by wafer at database schema 4 (`fixtures/upgrade/make.sh`
//! says how, and what it holds). Every later schema change must keep this test passing.

mod common;

use common::{stdout, wait_for, Server, StatusCode};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/upgrade/schema-4"
    ))
}

#[tokio::test]
async fn a_schema_4_data_directory_opens_with_everything_in_it() {
    let server = Server::start_on_copy_of(fixture());

    // Functions, with their live versions, kinds and configs.
    let (status, list) = server.get_json("/v1/functions").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let live: Vec<(String, u64, String)> = list["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                f["live_version"].as_u64().unwrap_or_default(),
                f["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let expected = [
        ("hello", 2, "wagi"),
        ("legacy-ui", 1, "wagi"),
        ("sleepy", 1, "wagi"),
        ("words", 1, "command"),
    ]
    .map(|(n, v, k)| (n.to_string(), v, k.to_string()));
    assert_eq!(live, expected);

    // The live version answers under /fn and on its route, with its env and its modules' bytes.
    let (status, body) = server.get_text("/fn/hello?name=upgrade").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello, upgrade!\n"), "{body}");
    assert!(body.contains("greeting=hi"), "{body}");
    let (status, body) = server.get_text("/hello/teapot").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::IM_A_TEAPOT, "short and stout\n")
    );

    // Versions roll back.
    let rolled = server.cli(&["rollback", "hello", "1"]);
    assert!(rolled.status.success(), "{}", stdout(&rolled));
    let (_, body) = server.get_text("/fn/hello").await;
    assert!(body.contains("greeting=hello"), "{body}");

    // Configuration, secrets by name only; key-value data.
    let (_, config) = server.get_json("/v1/functions/hello/config").await;
    assert_eq!(config["variables"]["colour"], "blue", "{config}");
    assert_eq!(
        config["secrets"],
        serde_json::json!(["api-key"]),
        "{config}"
    );
    let value = server.cli(&["kv", "get", "books", "book1"]);
    assert_eq!(stdout(&value).trim(), "100");

    // Execution records and their logs.
    let (_, executions) = server
        .get_json("/v1/functions/hello/executions?status=succeeded")
        .await;
    assert!(
        executions["executions"].as_array().map_or(0, Vec::len) >= 3,
        "{executions}"
    );
    let (_, logs) = server.get_json("/v1/functions/hello/logs").await;
    let lines: Vec<&str> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter_map(|l| l["line"].as_str())
        .collect();
    for who in ["ada", "grace", "linus"] {
        assert!(
            lines.contains(&format!("greeting {who}").as_str()),
            "{lines:?}"
        );
    }
    // The fixture's async run of `words`. Its nightly schedule may also have a tick missed since the
    // fixture was written, which the server fires at start (missed ticks collapse into one): find the
    // async record among them rather than taking the newest.
    let (_, words) = server.get_json("/v1/functions/words/executions").await;
    let done = words["executions"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["trigger"] == "async"))
        .unwrap_or_else(|| panic!("no async execution of words: {words}"));
    assert_eq!(done["status"].as_str(), Some("succeeded"), "{done}");

    // A route under a path wafer now reserves stays unmounted, and says so; the function is still
    // reachable under /fn.
    let (status, _) = server.get_text("/ui/legacy").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        server
            .logs()
            .lines()
            .any(|l| l.contains("route not mounted") && l.contains("/ui/legacy")),
        "{}",
        server.logs()
    );
    let (status, body) = server.get_text("/fn/legacy-ui?name=ui").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The execution that was running when the old server was killed runs again, to success.
    let (_, sleepy) = server.get_json("/v1/functions/sleepy/executions").await;
    let id = sleepy["executions"][0]["id"]
        .as_str()
        .expect("the interrupted execution")
        .to_string();
    let finished: Value = wait_for("the interrupted execution", Duration::from_secs(60), || {
        let server = &server;
        let id = id.clone();
        async move {
            let (_, execution) = server.get_json(&format!("/v1/executions/{id}")).await;
            (execution["status"] == "succeeded").then_some(execution)
        }
    })
    .await;
    assert_eq!(finished["attempts"], 2, "{finished}");
    assert!(
        finished["output"]
            .as_str()
            .is_some_and(|o| o.contains("slept 3000 ms")),
        "{finished}"
    );
}
