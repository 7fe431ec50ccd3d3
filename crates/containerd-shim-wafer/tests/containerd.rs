//! The shim under a real containerd in per-process mode: images made with `wafer package`, imported and
//! run with `ctr`.

mod common;

use common::*;
use std::time::{Duration, Instant};
use wafer_api::oci::sha256_hex;

#[test]
fn functions_run_as_containers_under_containerd() {
    let Some(containerd) = Containerd::start() else {
        return;
    };
    let images = tempfile::tempdir().expect("temp dir");
    let greet = package(
        images.path(),
        "examples/command-c/greet.wasm",
        "greet",
        &["--kind", "command", "--env", "GREETING=Hi"],
    );
    let hello = package(images.path(), "examples/wagi-c/hello.wasm", "hello", &[]);
    let bomb = package(
        images.path(),
        "crates/wafer/tests/fixtures/hostile.wasm",
        "bomb",
        &[
            "--kind",
            "command",
            "--env",
            "PATH_INFO=/malloc",
            "--memory",
            "32MiB",
        ],
    );
    for image in [&greet, &hello, &bomb] {
        containerd.import(image);
    }
    let image = |name: &str| format!("docker.io/library/{name}:test");

    // A command runs to completion: arguments in, stdout and stderr out, its exit code the task's.
    let greet = image("greet");
    let (output, _) = containerd.ctr_with_input(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            &greet,
            "greet1",
            "/app.wasm",
            "containerd",
            "runc",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hi, containerd!\nHi, runc!\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("greeted 2"));
    // The first start compiled the module and cached its artifact, named by the module's digest.
    let cached = containerd.cached();
    let digest = sha256_hex(&std::fs::read(repo("examples/command-c/greet.wasm")).expect("greet"));
    assert_eq!(
        cached.len(),
        1,
        "{:?}",
        cached.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    assert!(
        cached[0].0.starts_with(&format!("{digest}.")) && cached[0].0.ends_with(".cwasm"),
        "{}",
        cached[0].0
    );
    let (output, _) = containerd.ctr_with_input(
        &["run", "--rm", "--runtime", RUNTIME, &greet, "greet2"],
        b"",
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("usage"));
    // The second start loaded it: nothing was compiled, so nothing was written again.
    assert_eq!(containerd.cached(), cached);
    // A damaged artifact is compiled again and replaced, and the function still runs.
    let artifact = containerd.daemon.dir().join("cache").join(&cached[0].0);
    std::fs::write(&artifact, b"not an artifact").expect("damage the artifact");
    let (output, _) = containerd.ctr_with_input(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            &greet,
            "greet3",
            "/app.wasm",
            "again",
        ],
        b"",
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Hi, again!\n");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unusable, compiling"),
        "{}",
        text(&output)
    );
    assert_eq!(containerd.cached(), cached, "the artifact is whole again");

    // An http (WAGI) function serves on WAFER_LISTEN until it is stopped.
    let port = free_port();
    let listen = format!("WAFER_LISTEN=127.0.0.1:{port}");
    let started = containerd.ctr(&[
        "run",
        "--detach",
        "--net-host",
        "--env",
        &listen,
        "--runtime",
        RUNTIME,
        &image("hello"),
        "web",
    ]);
    assert!(started.status.success(), "{}", text(&started));
    println!(
        "$ ctr run --detach --net-host --env {listen} --runtime {RUNTIME} {} web",
        image("hello")
    );
    let serving = Instant::now();
    let answer = loop {
        match get(port, "/?name=containerd") {
            Ok(answer) => break answer,
            Err(e) => {
                assert!(
                    serving.elapsed() < Duration::from_secs(30),
                    "the http function never answered: {e}\n{}",
                    containerd.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    println!(
        "$ curl http://127.0.0.1:{port}/?name=containerd\n{} {}",
        answer.0, answer.1
    );
    assert!(answer.0.contains("200"), "{answer:?}");
    assert!(answer.1.starts_with("Hello, containerd!\n"), "{answer:?}");
    assert!(answer.1.contains("greeting=(unset)"), "{answer:?}");
    // Nothing reads the detached task's stderr, where each request logs its greeting: past the 64 KiB
    // its pipe holds, the lines wait in the function's queue (or are dropped), and it keeps answering.
    let name = "x".repeat(120);
    for sent in 0..600 {
        let (status, _) = get(port, &format!("/?name={name}"))
            .unwrap_or_else(|e| panic!("no answer to request {sent} with stderr full: {e}"));
        assert!(status.contains("200"), "{status}");
    }
    // Its WASI calls are not logged in containerd's log, a line each.
    let log = containerd.log();
    assert!(!log.contains("fd_write"), "{log}");

    // A memory bomb fails on its own; the http task keeps serving.
    let (output, _) = containerd.ctr_with_input(
        &["run", "--rm", "--runtime", RUNTIME, &image("bomb"), "bomb"],
        b"",
    );
    assert_eq!(output.status.code(), Some(137), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("memory limit"),
        "{}",
        text(&output)
    );
    let (status, body) = get(port, "/?name=again").expect("still serving");
    assert!(status.contains("200"), "{status}");
    assert!(body.starts_with("Hello, again!\n"), "{body}");

    // SIGTERM ends the http task cleanly: it stops with exit code 0 (ctr tasks rm fails otherwise).
    let killed = containerd.ctr(&["tasks", "kill", "web"]);
    assert!(killed.status.success(), "{}", text(&killed));
    println!("$ ctr tasks kill web");
    let stopping = Instant::now();
    loop {
        let tasks = text(&containerd.ctr(&["tasks", "ls"]));
        if tasks
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("STOPPED"))
        {
            println!("$ ctr tasks ls\n{tasks}");
            break;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(20),
            "the http task did not stop: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let removed = containerd.ctr(&["tasks", "rm", "web"]);
    assert!(removed.status.success(), "exit status: {}", text(&removed));
    let removed = containerd.ctr(&["containers", "rm", "web"]);
    assert!(removed.status.success(), "{}", text(&removed));
    println!("$ ctr tasks rm web && ctr containers rm web");
}

#[test]
fn a_wasm_artifact_runs_from_its_layer_with_the_config_it_carries() {
    let Some(containerd) = Containerd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let greet = package(
        dir.path(),
        "examples/command-c/greet.wasm",
        "greet",
        &["--kind", "command", "--env", "GREETING=Hey"],
    );
    let artifact = artifact_only(&greet, dir.path(), &image("greet-artifact"));
    containerd.import_artifact(&artifact);
    let empty = empty_rootfs(dir.path());
    let created = containerd.ctr(&[
        "containers",
        "create",
        "--runtime",
        RUNTIME,
        "--net-host",
        "--rootfs",
        &empty.to_string_lossy(),
        "art",
        "/app.wasm",
        "layer",
    ]);
    assert!(created.status.success(), "{}", text(&created));
    containerd
        .daemon
        .set_image(NAMESPACE, "art", &image("greet-artifact"));
    // The root filesystem is empty: the binary is the image's layer, and GREETING its annotation's.
    let (output, _) = containerd.ctr_with_input(&["tasks", "start", "art"], b"");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Hey, layer!\n");
    containerd.ctr(&["tasks", "rm", "art"]);
    containerd.ctr(&["containers", "rm", "art"]);
}
