//! The node agent driven over its socket exactly as the shim drives it: loads with descriptors,
//! listeners handed over, signals, exits, and what it refuses.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wafer_api::{FunctionConfig, Kind};
use wafer_node::agent::{Agent, AgentOptions};
use wafer_node::protocol::{Connection, Load, Reply, Request};

/// An agent on a socket in a temporary directory, stopped when dropped.
struct Running {
    agent: Arc<Agent>,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/node.sock");
        let agent = Agent::new(AgentOptions {
            socket: socket.clone(),
            cache: Some(dir.path().join("cache")),
            pool: None,
            ..AgentOptions::default()
        })
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(agent.clone().serve(async {
            let _ = stopped.await;
        }));
        while tokio::net::UnixStream::connect(&socket).await.is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Self {
            agent,
            socket,
            stop: Some(stop),
            _dir: dir,
        }
    }

    async fn connect(&self) -> Connection {
        Connection::new(tokio::net::UnixStream::connect(&self.socket).await.unwrap())
    }

    /// Loads the wasm file at `wasm` with `config` and the container's `args`, and `outputs` after the
    /// wasm's descriptor.
    async fn load(
        &self,
        wasm: &Path,
        config: FunctionConfig,
        args: &[&str],
        outputs: &[BorrowedFd<'_>],
    ) -> (Connection, Reply) {
        let connection = self.connect().await;
        let file = std::fs::File::open(wasm).unwrap();
        let load = Load {
            id: "c".into(),
            name: "f".into(),
            config: Some(config),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdout: !outputs.is_empty(),
            stderr: outputs.len() > 1,
            ..Load::default()
        };
        let mut fds = vec![file.as_fd()];
        fds.extend_from_slice(outputs);
        connection
            .send(&Request::Load(Box::new(load)), &fds)
            .await
            .unwrap();
        let reply = next(&connection).await;
        (connection, reply)
    }
}

impl Running {
    /// Loads the WAGI greeter, as a container of the plain image `wafer package` makes.
    async fn load_hello(&self) -> (Connection, Reply) {
        self.load(
            &repo("examples/wagi-c/hello.wasm"),
            wagi(),
            &["/app.wasm"],
            &[],
        )
        .await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

async fn next(connection: &Connection) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), connection.receive::<Reply>())
        .await
        .expect("a reply within 30 s")
        .expect("a readable reply")
        .expect("the connection open")
        .0
}

fn wagi() -> FunctionConfig {
    FunctionConfig {
        kind: Some(Kind::Wagi),
        ..FunctionConfig::default()
    }
}

/// `GET path` on `port`, HTTP/1.0, on a blocking thread: the whole answer.
async fn get(port: u16, path: &str) -> std::io::Result<String> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    })
    .await
    .unwrap()
}

/// Starts a loaded http function on a fresh loopback listener; returns its port.
async fn start_serving(connection: &Connection) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    connection
        .send(&Request::Start, &[listener.as_fd()])
        .await
        .unwrap();
    assert_eq!(next(connection).await, Reply::Started);
    port
}

#[tokio::test]
async fn containers_of_one_module_share_one_compile_and_serve_their_own_listeners() {
    let running = Running::start().await;
    let mut pods = Vec::new();
    for _ in 0..3 {
        let (connection, reply) = running.load_hello().await;
        assert_eq!(reply, Reply::Loaded { kind: Kind::Wagi });
        let port = start_serving(&connection).await;
        pods.push((connection, port));
    }
    assert_eq!(
        running.agent.compiled(),
        1,
        "one compile for three containers"
    );
    assert_eq!(running.agent.loaded(), 3);
    for (i, (_, port)) in pods.iter().enumerate() {
        let answer = get(*port, &format!("/?name=pod{i}")).await.unwrap();
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        assert!(answer.contains(&format!("Hello, pod{i}!")), "{answer}");
    }
    // SIGTERM stops one gracefully, with exit code 0; its listener closes with it.
    let (first, port) = pods.remove(0);
    first
        .send(&Request::Kill { signal: 15 }, &[])
        .await
        .unwrap();
    assert_eq!(next(&first).await, Reply::Exited { code: 0 });
    assert!(
        get(port, "/").await.is_err(),
        "nothing listens after the stop"
    );
    // A shim that goes away takes its function with it.
    let (second, port) = pods.remove(0);
    drop(second);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running.agent.loaded() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "not unloaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(get(port, "/").await.is_err());
    // The third serves on.
    let answer = get(pods[0].1, "/?name=last").await.unwrap();
    assert!(answer.contains("Hello, last!"), "{answer}");
    // SIGKILL stops it at once: 128 + 9.
    pods[0]
        .0
        .send(&Request::Kill { signal: 9 }, &[])
        .await
        .unwrap();
    assert_eq!(next(&pods[0].0).await, Reply::Exited { code: 137 });
}

#[tokio::test]
async fn a_command_runs_once_with_its_arguments_output_and_exit_code() {
    let running = Running::start().await;
    let (stdout_read, stdout_write) = std::io::pipe().unwrap();
    let (stderr_read, stderr_write) = std::io::pipe().unwrap();
    let config = FunctionConfig {
        kind: Some(Kind::Command),
        env: [("GREETING".to_string(), "Hi".to_string())].into(),
        ..FunctionConfig::default()
    };
    let (connection, reply) = running
        .load(
            &repo("examples/command-c/greet.wasm"),
            config,
            &["/app.wasm", "agent"],
            &[stdout_write.as_fd(), stderr_write.as_fd()],
        )
        .await;
    drop((stdout_write, stderr_write));
    assert_eq!(
        reply,
        Reply::Loaded {
            kind: Kind::Command
        }
    );
    connection.send(&Request::Start, &[]).await.unwrap();
    assert_eq!(next(&connection).await, Reply::Started);
    assert_eq!(next(&connection).await, Reply::Exited { code: 0 });
    let read = |pipe: std::io::PipeReader| {
        tokio::task::spawn_blocking(move || {
            let mut text = String::new();
            let mut pipe = pipe;
            pipe.read_to_string(&mut text).map(|_| text)
        })
    };
    // The agent closed its ends once the command ended: the reads see the end of the output.
    drop(connection);
    assert_eq!(read(stdout_read).await.unwrap().unwrap(), "Hi, agent!\n");
    assert!(read(stderr_read)
        .await
        .unwrap()
        .unwrap()
        .contains("greeted 1"));
}

#[tokio::test]
async fn bad_input_is_refused_and_the_agent_serves_on() {
    let running = Running::start().await;
    // Not wasm.
    let (_, reply) = running
        .load(
            &repo("crates/wafer-node/Cargo.toml"),
            wagi(),
            &["/app.wasm"],
            &[],
        )
        .await;
    assert!(
        matches!(&reply, Reply::Failed { message } if message.contains("WebAssembly")),
        "{reply:?}"
    );
    // A component forced to a core module's kind.
    let component = FunctionConfig {
        kind: Some(Kind::Wagi),
        ..FunctionConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let empty_component = dir.path().join("component.wasm");
    std::fs::write(&empty_component, wat::parse_str("(component)").unwrap()).unwrap();
    let (_, reply) = running
        .load(&empty_component, component, &["/app.wasm"], &[])
        .await;
    assert!(
        matches!(&reply, Reply::Failed { message } if message.contains("component")),
        "{reply:?}"
    );
    // Descriptors missing from a load.
    let connection = running.connect().await;
    let load = Load {
        stdout: true,
        ..Load::default()
    };
    connection
        .send(&Request::Load(Box::new(load)), &[])
        .await
        .unwrap();
    let reply = next(&connection).await;
    assert!(
        matches!(&reply, Reply::Failed { message } if message.contains("descriptors")),
        "{reply:?}"
    );
    // A start before any load, and a frame that is not a message.
    let connection = running.connect().await;
    connection.send(&Request::Start, &[]).await.unwrap();
    assert!(matches!(next(&connection).await, Reply::Failed { .. }));
    let mut garbage = std::os::unix::net::UnixStream::connect(&running.socket).unwrap();
    garbage.write_all(&7u32.to_be_bytes()).unwrap();
    garbage.write_all(b"garbage").unwrap();
    // A function serving HTTP started without its listener.
    let (connection, _) = running.load_hello().await;
    connection.send(&Request::Start, &[]).await.unwrap();
    assert!(
        matches!(next(&connection).await, Reply::Failed { message } if message.contains("listening socket"))
    );
    // Through all of it, a good container still loads and serves.
    let (connection, reply) = running.load_hello().await;
    assert_eq!(reply, Reply::Loaded { kind: Kind::Wagi });
    let port = start_serving(&connection).await;
    assert!(get(port, "/?name=ok").await.unwrap().contains("Hello, ok!"));
}
