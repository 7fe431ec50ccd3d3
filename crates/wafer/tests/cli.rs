//! End-to-end: the `wafer` CLI against a real server, for people and for scripts.

mod common;

use common::*;

fn wasm_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn deploy_invoke_list_rollback_and_remove() {
    let server = Server::start();
    let files = tempfile::tempdir().unwrap();
    let hello = example_path("wagi-c/hello.wasm");
    let out = server.cli(&[
        "deploy",
        &hello,
        "--name",
        "hello",
        "--route",
        "/hi",
        "--env",
        "GREETING=hey",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("deployed hello version 1 (wagi)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        server.get_text("/hi?name=cli").await.1.lines().next(),
        Some("Hello, cli!")
    );

    let out = server.cli(&["invoke", "hello", "--data", "shout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "SHOUT");

    let other = wasm_file(
        &files,
        "other.wasm",
        &wagi_wat("Content-Type: text/plain\n\nv2"),
    );
    let out = server.cli(&["deploy", &other, "--name", "hello", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let version: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(version["version"], 2);

    let out = server.cli(&["ls"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("hello") && l.contains(" 2 ")),
        "{text}"
    );

    let out = server.cli(&["versions", "hello", "-o", "json"]);
    let versions: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    let out = server.cli(&["rollback", "hello", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello is at version 1 (latest 2)");
    let out = server.cli(&["invoke", "hello", "--data", "again"]);
    assert_eq!(stdout(&out), "AGAIN");

    let out = server.cli(&["rm", "hello"]);
    assert!(out.status.success());
    let out = server.cli(&["ls", "--output", "json"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(list["functions"], serde_json::json!([]));
}

#[tokio::test]
async fn command_invocations_pass_on_output_and_exit_code() {
    let server = Server::start();
    let wc = example_path("command-c/wordcount.wasm");
    let out = server.cli(&["deploy", &wc, "--name", "wc", "--kind", "command"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = tempfile::tempdir().unwrap();
    let input = wasm_file(&files, "input.txt", b"a b\nc\n");
    let out = server.cli(&["invoke", "wc", "--data", &format!("@{input}")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2 3 6\n");
    assert_eq!(stderr(&out), "counted 6 bytes\n");
    let out = server.cli(&["invoke", "wc"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "wc: no input\n");
    let out = server.cli(&["invoke", "wc", "--data", "x", "-o", "json"]);
    let reply: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (reply["exit_code"].as_i64(), reply["stdout"].as_str()),
        (Some(0), Some("0 1 1\n"))
    );
}

#[tokio::test]
async fn errors_exit_non_zero_with_the_servers_message() {
    let server = Server::start();
    let files = tempfile::tempdir().unwrap();
    let junk = wasm_file(&files, "junk.wasm", b"definitely not wasm");
    let out = server.cli(&["deploy", &junk, "--name", "junk"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("WebAssembly magic number"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["invoke", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("function `missing` does not exist"),
        "{}",
        stderr(&out)
    );
    let out = server.cli(&["rollback", "missing", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let out = wafer_cli("http://127.0.0.1:1", &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the wafer server"),
        "{}",
        stderr(&out)
    );
}

fn example_path(path: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
        .to_string_lossy()
        .into_owned()
}
