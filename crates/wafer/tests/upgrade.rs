//! End-to-end: what an earlier wafer left behind opens with this one, with everything in it.
//!
//! The fixtures under `fixtures/upgrade` (`make.sh` says how each was made, and what it holds):
//! - `schema-4/`, a data directory written by wafer at SQLite schema 4;
//! - `sqlite-10/`, one written at SQLite schema 10;
//! - `postgres-4/postgres.sql`, a cluster's database at PostgreSQL schema 4, restored into a fresh
//!   database here.
//!
//! Every later schema change must keep these tests passing. A schema newer than this wafer knows is
//! refused at start with a message saying so, and left as it was.

mod common;

use common::{stdout, wait_for, Server, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wafer_store::conformance::postgres::TestPostgres;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upgrade")
        .join(name)
}

/// Checks that the fixture's secret (`s3cret`, stored in plain text by the wafer that wrote it) was
/// sealed at start, and its plain bytes left the database and its WAL.
fn secret_is_sealed(data: &Path) {
    for file in ["wafer.db", "wafer.db-wal"] {
        let bytes = std::fs::read(data.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cret"),
            "{file} still holds the secret in plain text"
        );
    }
}

#[tokio::test]
async fn a_schema_4_data_directory_opens_with_everything_in_it() {
    let server = Server::start_on_copy_of(&fixture("schema-4"));
    holds_the_first_steps(&server, Writer::Early).await;
    secret_is_sealed(server.data_dir());
    // Written before claims named their node: the running execution is requeued at start.
    the_interrupted_execution_runs_again(&server).await;
}

#[tokio::test]
async fn a_schema_10_data_directory_opens_with_everything_in_it() {
    let server = Server::start_on_copy_of(&fixture("sqlite-10"));
    holds_the_first_steps(&server, Writer::Recent).await;
    secret_is_sealed(server.data_dir());
    holds_the_later_steps(&server).await;
    the_interrupted_execution_runs_again(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_4_cluster_database_opens_with_everything_in_it() {
    let Some(pg) = TestPostgres::shared() else {
        return;
    };
    let url = pg.create_database().await;
    let dump = std::fs::read_to_string(fixture("postgres-4/postgres.sql")).expect("the dump");
    // psql's own commands (`\restrict`) are not SQL.
    let sql: String = dump
        .lines()
        .filter(|line| !line.starts_with('\\'))
        .map(|line| format!("{line}\n"))
        .collect();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&sql).await.expect("restore the dump");
    // The node that wrote it, so its start requeues the claim it held when it was killed.
    let server = Server::start_with(&["--database", &url, "--node-id", "fixture"]);
    holds_the_first_steps(&server, Writer::Recent).await;
    let secret: String = client
        .query_one("SELECT value FROM public.variables WHERE secret", &[])
        .await
        .expect("the secret's row")
        .get(0);
    assert!(
        secret.starts_with("sealed:v1:"),
        "sealed at start: {secret}"
    );
    holds_the_later_steps(&server).await;
    the_interrupted_execution_runs_again(&server).await;
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_a_clear_message_and_left_alone() {
    let data = tempfile::tempdir().expect("temp dir");
    let db = data.path().join("wafer.db");
    std::fs::copy(fixture("sqlite-10/wafer.db"), &db).expect("copy the database");
    rusqlite::Connection::open(&db)
        .and_then(|c| c.pragma_update(None, "user_version", 99))
        .expect("mark the schema newer");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env_remove("WAFER_TOKEN")
        .output()
        .expect("run wafer serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("schema is version 99, newer than this wafer knows"),
        "{stderr}"
    );
    let version: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
        .expect("read the schema version");
    assert_eq!(version, 99, "the database was changed");
}

/// The build that wrote a fixture, as far as what it holds goes.
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    /// Before `/ui` was reserved, and before aliases, dead letters and files bundles.
    Early,
    /// With all of them.
    Recent,
}

/// Checks what every fixture holds: `make.sh`'s steps up to `sleepy`, with the functions a later
/// `writer` added besides.
async fn holds_the_first_steps(server: &Server, writer: Writer) {
    let later: &[(&str, u64, &str)] = match writer {
        Writer::Early => &[],
        Writer::Recent => &[("flaky", 1, "wagi"), ("site", 1, "wagi")],
    };
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
    let mut expected: Vec<(String, u64, String)> = [
        ("hello", 2, "wagi"),
        ("legacy-ui", 1, "wagi"),
        ("sleepy", 1, "wagi"),
        ("words", 1, "command"),
    ]
    .iter()
    .chain(later)
    .map(|(n, v, k)| (n.to_string(), *v, k.to_string()))
    .collect();
    expected.sort();
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
    if writer == Writer::Early {
        assert!(
            server
                .logs()
                .lines()
                .any(|l| l.contains("route not mounted") && l.contains("/ui/legacy")),
            "{}",
            server.logs()
        );
    }
    let (status, body) = server.get_text("/fn/legacy-ui?name=ui").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Checks what fixtures since schema 10 hold besides: an alias with a weight, a dead letter kept with
/// its request, and a files bundle.
async fn holds_the_later_steps(server: &Server) {
    let (_, aliases) = server.get_json("/v1/functions/hello/aliases").await;
    let stable = aliases["aliases"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["name"] == "stable"))
        .unwrap_or_else(|| panic!("no alias stable: {aliases}"));
    assert_eq!(
        (&stable["version"], &stable["weights"]["2"]),
        (&serde_json::json!(1), &serde_json::json!(0.25)),
        "{stable}"
    );
    let (status, body) = server.get_text("/fn/hello:stable?name=alias").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello, alias!"), "{body}");

    let (_, dead) = server
        .get_json("/v1/functions/flaky/executions?status=dead")
        .await;
    let letter = dead["executions"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no dead letter: {dead}"))
        .to_string();
    // Its request was kept: a retry runs it again (and, as it fails on purpose, it is dead again).
    let retried = server.cli(&["retry", &letter]);
    assert!(retried.status.success(), "{}", stdout(&retried));
    wait_for(
        "the retried dead letter",
        Duration::from_secs(60),
        || async {
            let (_, e) = server.get_json(&format!("/v1/executions/{letter}")).await;
            (e["status"] == "dead" && e["attempts"] == 2).then_some(())
        },
    )
    .await;

    let (status, body) = server.get_text("/fn/site/files/motd.txt").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fixture files\n"));
}

/// The execution that was running when the old server was killed runs again, to success, as its
/// second attempt (the claim of the killed node counted its first).
async fn the_interrupted_execution_runs_again(server: &Server) {
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
