//! Data at rest: secrets sealed in the store under the node's key, and `wafer backup` / `wafer restore`
//! of a live node's data directory.
//!
//! - a server started with `--secrets-key-file` keeps no secret in plain text in its database or WAL,
//!   and one started on the same data with another key refuses to start, saying so;
//! - a backup taken while the server is under load restores into a fresh data directory whose server
//!   answers with the same functions, versions, secrets, key-value data and execution records;
//! - a backup never writes over anything, and a restore never into a directory holding data;
//! - a cluster's backup is pointed at `pg_dump`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const SECRET: &str = "s3cret-value-at-rest";

/// Runs `wafer ARGS` on the node itself: no server URL, no config file, no data directory but the
/// ones `args` name.
fn wafer(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(args)
        .current_dir(empty.path())
        .env_remove("WAFER_DATABASE")
        .env_remove("WAFER_DATA_DIR")
        .env_remove("WAFER_CONFIG")
        .env_remove("WAFER_SECRETS_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("run wafer")
}

/// Whether any file directly in `dir` whose name starts with `prefix` holds `needle`.
fn any_file_holds(dir: &Path, prefix: &str, needle: &str) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        name.starts_with(prefix) && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_under_the_given_key_and_another_key_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("key");
    std::fs::write(&key_file, format!("{}\n", "1f".repeat(32))).unwrap();
    let key = key_file.to_str().unwrap();
    let server = Server::start_with(&["--secrets-key-file", key]);
    let variables = json!({"secrets": {"API_KEY": SECRET}});
    let (status, body) = server
        .deploy_parts("cfg", env_dumper(), &[("variables", variables)])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = server
        .request(reqwest::Method::PUT, "/v1/functions/cfg/config")
        .json(&json!({"secrets": {"OTHER": format!("{SECRET}-2")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, env) = server.get_text("/fn/cfg").await;
    assert!(env.contains(&format!("API_KEY={SECRET}")), "{env}");
    assert!(env.contains(&format!("OTHER={SECRET}-2")), "{env}");
    assert!(
        !any_file_holds(server.data_dir(), "wafer.db", SECRET),
        "a secret is in the database or its WAL in plain text"
    );
    assert!(
        !server.data_dir().join(wafer_store::KEY_FILE).exists(),
        "no key is generated when one is given"
    );

    // The same data with another key: refused at start, with the reason.
    let mut server = server;
    server.terminate();
    let mut start = Command::new(env!("CARGO_BIN_EXE_wafer"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(server.data_dir())
        .env("WAFER_SECRETS_KEY", "2e".repeat(32))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that started anyway would never exit: it is given 30 s, then stopped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while start.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = start.kill();
    let refused = start.wait_with_output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("sealed with key"), "{said}");
    assert!(said.contains("--secrets-key-file"), "{said}");

    let server = server.restart_with(&["--secrets-key-file", key]);
    let (_, env) = server.get_text("/fn/cfg").await;
    assert!(env.contains(&format!("API_KEY={SECRET}")), "{env}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_server_under_load_restores_into_a_server_serving_the_same() {
    let server = Server::start();
    let variables = json!({"variables": {"GREETING": "hi"}, "secrets": {"API_KEY": SECRET}});
    let (status, body) = server
        .deploy_parts("cfg", env_dumper(), &[("variables", variables)])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    server
        .deploy_ok(
            "hello",
            wagi_wat("Content-Type: text/plain\n\none"),
            json!({}),
        )
        .await;
    server
        .deploy_ok(
            "hello",
            wagi_wat("Content-Type: text/plain\n\ntwo"),
            json!({}),
        )
        .await;
    let set = server.cli(&["kv", "set", "store", "k", "kept"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let mut executions = Vec::new();
    for _ in 0..5 {
        executions.push(server.invoke_async("hello", "", "").await);
    }
    for id in &executions {
        let record = server.finished_execution(id).await;
        assert_eq!(record["status"], "succeeded", "{record}");
    }

    // Calls and async submissions keep coming while the backup is taken.
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let load = {
        let (http, url) = (server.http.clone(), server.url.clone());
        let (stop, served) = (stop.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sync = http.get(format!("{url}/fn/hello")).send().await.unwrap();
                assert_eq!(sync.status(), StatusCode::OK);
                let submitted = http
                    .post(format!("{url}/v1/functions/hello/invoke?async=true"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(submitted.status(), StatusCode::ACCEPTED);
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_for(
        "the load to start",
        std::time::Duration::from_secs(10),
        || async { (served.load(Ordering::Relaxed) > 10).then_some(()) },
    )
    .await;
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("backup");
    let data = server.data_dir().to_str().unwrap().to_string();
    let (before, started) = (served.load(Ordering::Relaxed), std::time::Instant::now());
    let backed_up = wafer(&["backup", into.to_str().unwrap(), "--data-dir", &data]);
    let during = served.load(Ordering::Relaxed);
    eprintln!(
        "backup took {:?}, while {} calls and submissions were served",
        started.elapsed(),
        during - before
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(backed_up.status.success(), "{}", stderr(&backed_up));
    assert!(
        stdout(&backed_up).contains("2 functions, 3 versions"),
        "{}",
        stdout(&backed_up)
    );
    assert!(
        served.load(Ordering::Relaxed) > during,
        "the server kept serving"
    );
    assert!(
        !any_file_holds(&into, "wafer.db", SECRET),
        "sealed in the backup"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(into.join("backup.json")).unwrap()).unwrap();
    assert!(manifest["executions"].as_u64() >= Some(5), "{manifest}");
    assert_eq!(manifest["secrets_key"], true);

    // Nothing is written over.
    let again = wafer(&[
        "backup",
        target.path().to_str().unwrap(),
        "--data-dir",
        &data,
    ]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    let restored = tempfile::tempdir().unwrap();
    let to = restored.path().to_str().unwrap().to_string();
    let done = wafer(&["restore", into.to_str().unwrap(), "--data-dir", &to]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(stdout(&done).contains("restored into"), "{}", stdout(&done));
    let twice = wafer(&["restore", into.to_str().unwrap(), "--data-dir", &to]);
    assert!(!twice.status.success());
    assert!(
        stderr(&twice).contains("already holds"),
        "{}",
        stderr(&twice)
    );

    let copy = Server::start_in_dir(restored, &[]);
    let (_, functions) = copy.get_json("/v1/functions").await;
    let (_, original) = server.get_json("/v1/functions").await;
    let names = |list: &Value| -> Vec<(String, u64)> {
        let mut names: Vec<_> = list["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["latest_version"].as_u64().unwrap(),
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&functions), names(&original));
    assert_eq!(
        copy.get_text("/fn/hello").await,
        (StatusCode::OK, "two".into())
    );
    let (_, env) = copy.get_text("/fn/cfg").await;
    assert!(env.contains(&format!("API_KEY={SECRET}")), "{env}");
    assert!(env.contains("GREETING=hi"), "{env}");
    let got = copy.cli(&["kv", "get", "store", "k"]);
    assert_eq!(stdout(&got).trim(), "kept");
    for id in &executions {
        let (status, record) = copy.get_json(&format!("/v1/executions/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{record}");
        assert_eq!(record["status"], "succeeded");
    }
    let rollback = copy.cli(&["rollback", "hello", "1"]);
    assert!(rollback.status.success(), "{}", stderr(&rollback));
    assert_eq!(
        copy.get_text("/fn/hello").await,
        (StatusCode::OK, "one".into())
    );
}

#[test]
fn a_cluster_backup_is_pointed_at_pg_dump() {
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("backup");
    let refused = wafer(&[
        "backup",
        into.to_str().unwrap(),
        "--database",
        "postgres://wafer@127.0.0.1:1/wafer",
    ]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("pg_dump"), "{}", stderr(&refused));
    assert!(!into.exists());
    let missing = wafer(&[
        "backup",
        into.to_str().unwrap(),
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("wafer database"),
        "{}",
        stderr(&missing)
    );
}
