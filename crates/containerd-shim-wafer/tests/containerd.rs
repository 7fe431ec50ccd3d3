//! The shim under a real containerd: images made with `wafer package`, imported and run with `ctr`.
//!
//! It starts its own containerd (as root, config and socket in a temporary directory) with the shim on
//! its PATH, and stops it by PID at the end. Without containerd or root it skips with a message, unless
//! `CI` is set: CI installs containerd and runc (`.ci/run`) and must run it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use wafer_api::oci::sha256_hex;
use wafer_container::testing::TestContainerd;

const RUNTIME: &str = "io.containerd.wafer.v1";
const NAMESPACE: &str = "wafer-test";

/// A containerd of the test's own with the shim on its `PATH`, in the test's namespace.
struct Containerd {
    daemon: TestContainerd,
}

impl Containerd {
    /// Starts containerd, or says why it cannot and returns `None` (a failure in CI).
    fn start() -> Option<Self> {
        let shim = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-wafer-v1"));
        let daemon = TestContainerd::start(|dir, command| {
            let path = format!(
                "{}:{}",
                shim.parent().expect("shim dir").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            // Shims inherit containerd's environment: this one keeps its compile cache in the
            // test's dir.
            command
                .env("PATH", path)
                .env("WAFER_SHIM_CACHE", dir.join("cache"));
        })?;
        Some(Self { daemon })
    }

    /// The compiled artifacts in the shim's cache, by file name, with their contents.
    fn cached(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.daemon.dir().join("cache"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| {
                        let bytes = std::fs::read(e.path()).unwrap_or_default();
                        (e.file_name().to_string_lossy().into_owned(), bytes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn log(&self) -> String {
        self.daemon.log()
    }

    fn command(&self, args: &[&str]) -> Command {
        self.daemon.command(NAMESPACE, args)
    }

    /// Runs `ctr ARGS` with no input.
    fn ctr(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Runs `ctr ARGS` with `input` on its stdin, printing the command and what it wrote, as a
    /// transcript. A run that takes over a minute is killed and fails the test.
    fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> (Output, Duration) {
        let started = Instant::now();
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
        drop(stdin);
        while child.try_wait().expect("wait for ctr").is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("ctr {} did not finish within a minute", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let output = child.wait_with_output().expect("ctr output");
        let took = started.elapsed();
        println!("$ ctr {}", args.join(" "));
        print!("{}", String::from_utf8_lossy(&output.stdout));
        print!("{}", String::from_utf8_lossy(&output.stderr));
        println!("[exit {:?}, {} ms]", output.status.code(), took.as_millis());
        (output, took)
    }

    /// Imports an image layout tarball.
    fn import(&self, tarball: &Path) {
        let path = tarball.to_string_lossy();
        let output = self.ctr(&["images", "import", &path]);
        assert!(output.status.success(), "import {path}: {}", text(&output));
        println!("$ ctr images import {path}\n{}", text(&output));
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The `wafer` CLI next to this test's binary (built by `cargo test --workspace`), built if missing.
fn wafer() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let wafer = target.join("wafer");
    if !wafer.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "wafer"])
            .current_dir(repo(""))
            .status()
            .expect("cargo build");
        assert!(status.success(), "cannot build the wafer CLI");
    }
    wafer
}

/// `wafer package FILE --output DIR/NAME.tar --tag NAME:test ARGS…`.
fn package(dir: &Path, file: &str, name: &str, args: &[&str]) -> PathBuf {
    let output = dir.join(format!("{name}.tar"));
    let result = Command::new(wafer())
        .arg("package")
        .arg(repo(file))
        .arg("--output")
        .arg(&output)
        .args(["--tag", &format!("{name}:test")])
        .args(args)
        .output()
        .expect("wafer package");
    assert!(result.status.success(), "{}", text(&result));
    println!(
        "$ wafer package {file} … --tag {name}:test\n{}",
        text(&result)
    );
    output
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET url` through a raw HTTP/1.0 exchange: the status line and the body.
fn get(url_port: u16, path: &str) -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", url_port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

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
