//! The shim tests' harness: a containerd of the test's own with the shim on its `PATH`, images made
//! with `wafer package`, the node agent, network namespaces, and HTTP inside them.
//!
//! containerd runs as root, with its config and socket in a temporary directory, and is stopped by PID
//! at the end. Without containerd or root a test skips with a message, unless `CI` is set: CI installs
//! containerd and runc (`.ci/run`) and must run it.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use wafer_container::testing::TestContainerd;

pub const RUNTIME: &str = "io.containerd.wafer.v1";
pub const NAMESPACE: &str = "wafer-test";

/// A containerd of the test's own with the shim on its `PATH`, in the test's namespace.
pub struct Containerd {
    pub daemon: TestContainerd,
}

impl Containerd {
    /// Starts containerd, or says why it cannot and returns `None` (a failure in CI).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts containerd with `env` added to its environment, which its shims inherit.
    pub fn start_with(env: &[(&str, &Path)]) -> Option<Self> {
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
                .env("WAFER_SHIM_CACHE", dir.join("cache"))
                .envs(env.iter().copied());
        })?;
        Some(Self { daemon })
    }

    /// The compiled artifacts in the shim's cache, by file name, with their contents.
    pub fn cached(&self) -> Vec<(String, Vec<u8>)> {
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

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        self.daemon.command(NAMESPACE, args)
    }

    /// Runs `ctr ARGS` with no input.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// Runs `ctr ARGS` with `input` on its stdin, printing the command and what it wrote, as a
    /// transcript. A run that takes over a minute is killed and fails the test.
    pub fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> (Output, Duration) {
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
    pub fn import(&self, tarball: &Path) {
        let path = tarball.to_string_lossy();
        let output = self.ctr(&["images", "import", &path]);
        assert!(output.status.success(), "import {path}: {}", text(&output));
        println!("$ ctr images import {path}\n{}", text(&output));
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The `wafer` CLI next to this test's binary (built by `cargo test --workspace`), built if missing.
pub fn wafer() -> PathBuf {
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
pub fn package(dir: &Path, file: &str, name: &str, args: &[&str]) -> PathBuf {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET url` through a raw HTTP/1.0 exchange: the status line and the body.
pub fn get(url_port: u16, path: &str) -> std::io::Result<(String, String)> {
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

/// `wafer node` on a socket in `dir`, its log in `dir/agent.log`; killed when dropped.
pub struct Agent {
    process: Child,
    pub socket: PathBuf,
    pub cache: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent and waits until its socket answers.
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("node.sock");
        let cache = dir.join("node-cache");
        let log = dir.join("agent.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let process = Command::new(wafer())
            .arg("node")
            .arg("--socket")
            .arg(&socket)
            .arg("--cache")
            .arg(&cache)
            .env("WAFER_LOG", "info")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start wafer node");
        let agent = Self {
            process,
            socket,
            cache,
            log,
        };
        let started = Instant::now();
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the agent did not come up: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The lines of its log that contain every one of `words`.
    pub fn lines_with(&self, words: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|line| words.iter().all(|w| line.contains(w)))
            .count()
    }

    /// Whether its cache directory holds a file `name`.
    pub fn cache_holds(&self, name: &str) -> bool {
        self.cache.join(name).is_file()
    }

    /// The compiled artifacts it keeps (not the compile cache beside them).
    pub fn artifacts(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.cache)
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".cwasm"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn crash(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill has no preconditions; the process is the agent this handle started.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) };
        let _ = self.process.wait();
    }
}

/// A network namespace of the test's own (`ip netns add`), with its loopback up; deleted when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn add(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        let added = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .expect("ip netns add");
        assert!(added.status.success(), "ip netns add: {}", text(&added));
        let up = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .output()
            .expect("ip link set lo up");
        assert!(up.status.success(), "{}", text(&up));
        Self {
            name: name.to_string(),
        }
    }

    /// Its file, for `ctr run --with-ns network:PATH`.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `GET path` on `127.0.0.1:port` inside the namespace: the status line and the body.
    pub fn get(&self, port: u16, path: &str) -> std::io::Result<(String, String)> {
        get_inside(&self.path(), port, path)
    }

    /// Polls `GET path` until it answers (at most 30 s).
    pub fn wait_for(&self, port: u16, path: &str) -> (String, String) {
        let started = Instant::now();
        loop {
            match self.get(port, path) {
                Ok(answer) => return answer,
                Err(e) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "nothing answered in {}: {e}",
                        self.name
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// `GET path` on `127.0.0.1:port` inside the network namespace at `netns`: the status line and the
/// body.
pub fn get_inside(netns: &Path, port: u16, path: &str) -> std::io::Result<(String, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let inside = wafer_container::netns::Namespace::at(netns).await?;
        let mut stream = inside.connect(port, Duration::from_secs(5)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .map_err(|_| std::io::Error::other("no answer within 20 s"))??;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.lines().next().unwrap_or_default().to_string();
        Ok((status, body.to_string()))
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

impl Containerd {
    /// The status `ctr tasks ls` shows for task `id` (RUNNING, STOPPED, …), if it is listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.task_column(id, 2)
    }

    /// The pid `ctr tasks ls` shows for task `id`.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        self.task_column(id, 1)?.parse().ok()
    }

    /// Column `n` of task `id`'s line in `ctr tasks ls` (TASK, PID, STATUS).
    fn task_column(&self, id: &str, n: usize) -> Option<String> {
        let tasks = text(&self.ctr(&["tasks", "ls"]));
        tasks
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(n))
            .map(str::to_string)
    }

    /// Waits (at most 30 s) until task `id` is stopped.
    pub fn wait_stopped(&self, id: &str) {
        let started = Instant::now();
        while self.task_status(id).as_deref() != Some("STOPPED") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "task {id} did not stop: {:?}\n{}",
                self.task_status(id),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes the stopped task `id` and its container.
    pub fn remove(&self, id: &str) {
        let removed = self.ctr(&["tasks", "rm", id]);
        assert!(
            removed.status.success(),
            "tasks rm {id}: {}",
            text(&removed)
        );
        let removed = self.ctr(&["containers", "rm", id]);
        assert!(
            removed.status.success(),
            "containers rm {id}: {}",
            text(&removed)
        );
    }

    /// `ctr run --rm` of `image` as `id` with the shim, `args` after the container's id (the wasm file
    /// first, then its arguments), waiting for it to end: its output and how long it took.
    pub fn run_to_end(&self, image: &str, id: &str, args: &[&str]) -> (Output, Duration) {
        let mut command = vec!["run", "--rm", "--runtime", RUNTIME, image, id];
        command.extend(args);
        self.ctr_with_input(&command, b"")
    }

    /// `ctr run --detach` of `image` as `id`, in `netns` when given, with `args` after `run`.
    pub fn run_detached(&self, id: &str, image: &str, netns: Option<&Netns>, args: &[&str]) {
        let with_ns = netns.map(|n| format!("network:{}", n.path().display()));
        let mut command: Vec<&str> = vec!["run", "--detach", "--runtime", RUNTIME];
        if let Some(with_ns) = &with_ns {
            command.extend(["--with-ns", with_ns]);
        } else {
            command.push("--net-host");
        }
        command.extend(args);
        command.extend([image, id]);
        let started = self.ctr(&command);
        assert!(
            started.status.success(),
            "ctr {}: {}",
            command.join(" "),
            text(&started)
        );
    }
}

/// The image name `ctr images import` gives a `wafer package --tag NAME:test` tarball.
pub fn image(name: &str) -> String {
    format!("docker.io/library/{name}:test")
}

/// A name unique to this test process, for host-wide things such as network namespaces.
pub fn unique(name: &str) -> String {
    format!("wafer-{}-{name}", std::process::id())
}

impl Containerd {
    /// Imports a wasm OCI artifact's layout tarball as it is: no platform to match, nothing to unpack.
    pub fn import_artifact(&self, tarball: &Path) {
        let path = tarball.to_string_lossy();
        let output = self.ctr(&["images", "import", "--all-platforms", "--no-unpack", &path]);
        assert!(output.status.success(), "import {path}: {}", text(&output));
    }
}

/// An empty directory in `dir`: the root filesystem containerd 1.7 gives a wasm OCI artifact's
/// container, for `ctr containers create --rootfs`.
pub fn empty_rootfs(dir: &Path) -> PathBuf {
    let empty = dir.join("empty-rootfs");
    std::fs::create_dir_all(&empty).expect("empty rootfs");
    empty
}

/// A layout tarball of `packaged`'s wasm OCI artifact alone, named `name`: an image as other tools
/// push wasm, whose target is the artifact's manifest.
pub fn artifact_only(packaged: &Path, dir: &Path, name: &str) -> PathBuf {
    let layout = dir.join("artifact-layout");
    std::fs::create_dir_all(&layout).expect("layout dir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(packaged)
        .arg("-C")
        .arg(&layout));
    let blob = |descriptor: &serde_json::Value| {
        let digest = descriptor["digest"].as_str().expect("digest");
        let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).expect("blob"))
            .expect("json")
    };
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index.json");
    let index = blob(&top["manifests"][0]);
    let mut wasm = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|m| m["platform"]["architecture"] == "wasm")
        .expect("a wasm manifest")
        .clone();
    wasm["annotations"] = serde_json::json!({ "io.containerd.image.name": name });
    let wasm_index = serde_json::json!({ "schemaVersion": 2, "manifests": [wasm] });
    std::fs::write(layout.join("index.json"), wasm_index.to_string()).expect("index.json");
    let tarball = dir.join("artifact.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&layout)
        .arg("."));
    tarball
}

/// Runs `command`, which must succeed.
pub fn run(command: &mut Command) {
    let output = command.output().expect("run");
    assert!(output.status.success(), "{command:?}: {}", text(&output));
}
