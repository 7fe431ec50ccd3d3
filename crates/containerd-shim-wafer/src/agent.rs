//! Agent mode: the shim keeps containerd's task API (through runwasi's `containerd-shimkit`, which
//! lets a shim implement each task without a container process, as Layotto's and kuasar's shims do),
//! and the node agent runs the function.
//!
//! - **Create** reads the container's spec and root filesystem (`container.rs`) — or, for a wasm OCI
//!   artifact, its image's wasm layer (`layer.rs`) — opens its log FIFOs, connects to the agent and
//!   hands it the function: the wasm, its config, environment, arguments, memory and CPU limits, and
//!   the FIFOs' descriptors. The agent compiles it (or shares the
//!   compiled module) and answers with its kind, or with why it cannot run it — which fails the Create.
//! - **Start** of a function serving HTTP binds its listener inside the container's network namespace
//!   (the pod's, from the spec), on `WAFER_LISTEN`, and passes the socket to the agent; the function
//!   can listen nowhere else. A command just starts.
//! - **Kill** passes the signal on; **Wait** and **State** report the exit the agent sends; **Delete**
//!   closes the connection, which unloads the function.
//! - The agent going away is a node event: every task it ran exits with [`AGENT_GONE`], and its
//!   container's stderr says why, so Kubernetes restarts the pods by their restart policy.
//!
//! A pod's sandbox (its pause container) runs nothing: it lives until it is killed. Its network
//! namespace is CRI's, pinned before the sandbox is created, so the pod's functions need nothing of it.
//! The task's pid is the shim's own.

use crate::container::{Container, Network};
use chrono::{DateTime, Utc};
use containerd_shimkit::sandbox::sync::WaitableCell;
use containerd_shimkit::sandbox::{Error, Instance, InstanceConfig};
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, Mutex};
use wafer_api::{FunctionConfig, Kind};
use wafer_node::function::{listen_address, serves_http};
use wafer_node::protocol::{Connection, Load, Reply, Request};

/// The exit code of a task whose agent went away.
pub const AGENT_GONE: u32 = 255;

/// The largest wasm layer the shim copies for the agent (which holds modules to its own limit).
const MAX_LAYER: u64 = 1 << 30;

/// The agent's socket, set once in `main`.
static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Runs the shim in agent mode, with the agent at `socket`.
pub fn run(socket: PathBuf) {
    let _ = SOCKET.set(socket);
    containerd_shimkit::sandbox::cli::shim_main::<AgentInstance>(
        "wafer",
        containerd_shim_wasm::shim::version!(),
        Some(containerd_shimkit::Config {
            default_log_level: "info".into(),
            ..Default::default()
        }),
    );
}

/// One container's task.
pub struct AgentInstance {
    exit: WaitableCell<(u32, DateTime<Utc>)>,
    task: Task,
}

enum Task {
    /// A pod's sandbox, which runs nothing.
    Sandbox,
    /// A function loaded in the agent.
    Function(Loaded),
}

/// A function the agent has loaded, and the connection that keeps it loaded.
struct Loaded {
    connection: Arc<Connection>,
    kind: Kind,
    network: Network,
    listen: Option<SocketAddr>,
    /// The agent's answers to Start.
    replies: Mutex<mpsc::Receiver<Reply>>,
    /// Set once Delete has let the function go.
    deleted: Arc<AtomicBool>,
}

impl Instance for AgentInstance {
    async fn new(id: String, cfg: &InstanceConfig) -> Result<Self, Error> {
        let container = Container::from_bundle(&cfg.bundle).map_err(Error::InvalidArgument)?;
        let exit = WaitableCell::new();
        if container.sandbox {
            return Ok(Self {
                exit,
                task: Task::Sandbox,
            });
        }
        let loaded = load(&id, &container, cfg, exit.clone()).await?;
        Ok(Self {
            exit,
            task: Task::Function(loaded),
        })
    }

    async fn start(&self) -> Result<u32, Error> {
        if let Task::Function(loaded) = &self.task {
            loaded.start().await?;
        }
        Ok(std::process::id())
    }

    async fn kill(&self, signal: u32) -> Result<(), Error> {
        match &self.task {
            Task::Sandbox => {
                let graceful = signal == libc::SIGTERM as u32 || signal == libc::SIGINT as u32;
                let code = if graceful { 0 } else { 128 + signal };
                let _ = self.exit.set((code, Utc::now()));
            }
            Task::Function(loaded) => {
                // A function that has already exited has closed nothing yet; a send that fails finds
                // the agent gone, which has ended the task already.
                let _ = loaded.connection.send(&Request::Kill { signal }, &[]).await;
            }
        }
        Ok(())
    }

    async fn delete(&self) -> Result<(), Error> {
        if let Task::Function(loaded) = &self.task {
            loaded.deleted.store(true, Ordering::Release);
            let fd = loaded.connection.stream().as_raw_fd();
            // SAFETY: `fd` is the connection's open socket; shutting it down makes the agent unload
            // the function and ends the reader task, and the descriptor stays owned by the stream.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
        Ok(())
    }

    async fn wait(&self) -> (u32, DateTime<Utc>) {
        *self.exit.wait().await
    }
}

/// Hands the container's function to the agent and waits for it to be loaded.
async fn load(
    id: &str,
    container: &Container,
    cfg: &InstanceConfig,
    exit: WaitableCell<(u32, DateTime<Utc>)>,
) -> Result<Loaded, Error> {
    let (wasm, config) = source(id, container, cfg).await?;
    let env = wafer_node::function::container_env(&container.env);
    let stdout = open_log(&cfg.stdout);
    let stderr = open_log(&cfg.stderr);
    let socket = SOCKET
        .get()
        .ok_or_else(|| Error::Others("no node agent".into()))?;
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        Error::Others(format!(
            "the node agent at {} is unreachable: {e}",
            socket.display()
        ))
    })?;
    let connection = Arc::new(Connection::new(stream));
    let load = Load {
        id: id.to_string(),
        namespace: cfg.namespace.clone(),
        name: container.name(),
        config,
        env: container.env.clone(),
        args: container.args.clone(),
        memory_limit: container.memory_limit,
        cpu_limit: container.cpu_limit,
        stdout: stdout.is_some(),
        stderr: stderr.is_some(),
    };
    let mut fds: Vec<BorrowedFd<'_>> = vec![wasm.as_fd()];
    fds.extend(stdout.iter().chain(stderr.iter()).map(|f| f.as_fd()));
    connection
        .send(&Request::Load(Box::new(load)), &fds)
        .await
        .map_err(|e| Error::Others(format!("cannot reach the node agent: {e}")))?;
    let kind = match connection.receive::<Reply>().await {
        Ok(Some((Reply::Loaded { kind }, _))) => kind,
        Ok(Some((Reply::Failed { message }, _))) => return Err(Error::InvalidArgument(message)),
        Ok(Some((other, _))) => {
            return Err(Error::Others(format!(
                "the node agent answered {other:?} to a load"
            )))
        }
        Ok(None) | Err(_) => {
            return Err(Error::Others("the node agent closed the connection".into()))
        }
    };
    let listen = if serves_http(kind) {
        Some(listen_address(&env).map_err(Error::InvalidArgument)?)
    } else {
        None
    };
    let (replies, inbox) = mpsc::channel(2);
    let deleted = Arc::new(AtomicBool::new(false));
    // The shim keeps stderr to say why a task ended, if the agent cannot.
    tokio::spawn(follow(
        connection.clone(),
        replies,
        exit,
        deleted.clone(),
        stderr.map(OwnedFd::from),
    ));
    Ok(Loaded {
        connection,
        kind,
        network: container.network.clone(),
        listen,
        replies: Mutex::new(inbox),
        deleted,
    })
}

/// The container's wasm and config: the wasm file its first argument names in its root filesystem,
/// with `/wafer.json`; or else, for a wasm OCI artifact, its image's wasm layer (`layer.rs`).
async fn source(
    id: &str,
    container: &Container,
    cfg: &InstanceConfig,
) -> Result<(File, Option<FunctionConfig>), Error> {
    let missing = match container.open_wasm() {
        Ok(wasm) => {
            let config = container.read_config().map_err(Error::InvalidArgument)?;
            return Ok((wasm, config));
        }
        Err(missing) => missing,
    };
    let address = Path::new(&cfg.containerd_address);
    match crate::layer::read(address, &cfg.namespace, id, MAX_LAYER).await {
        Ok(Some(source)) => Ok(source),
        Ok(None) => Err(Error::InvalidArgument(format!(
            "{missing}, and its image has no wasm layer"
        ))),
        Err(e) => Err(Error::InvalidArgument(format!(
            "{missing}, and its image's wasm layer cannot be used: {e}"
        ))),
    }
}

impl Loaded {
    /// Starts the function: for one serving HTTP, with its listener bound in the container's network.
    async fn start(&self) -> Result<(), Error> {
        let listener = match self.listen {
            Some(address) => Some(bind(&self.network, address).await.map_err(|e| {
                Error::Others(format!(
                    "cannot listen on {address} in the container's network: {e}"
                ))
            })?),
            None => None,
        };
        let fds: Vec<BorrowedFd<'_>> = listener.iter().map(|l| l.as_fd()).collect();
        self.connection
            .send(&Request::Start, &fds)
            .await
            .map_err(|e| Error::Others(format!("cannot reach the node agent: {e}")))?;
        drop(listener);
        match self.replies.lock().await.recv().await {
            Some(Reply::Started) => Ok(()),
            Some(Reply::Failed { message }) => Err(Error::FailedPrecondition(message)),
            _ => Err(Error::Others(format!(
                "the node agent did not start the {} function",
                self.kind
            ))),
        }
    }
}

/// Reads the agent's messages for one task: answers to Start go to `replies`, the exit to `exit`. When
/// the connection ends without an exit, the agent is gone: the task exits with [`AGENT_GONE`].
async fn follow(
    connection: Arc<Connection>,
    replies: mpsc::Sender<Reply>,
    exit: WaitableCell<(u32, DateTime<Utc>)>,
    deleted: Arc<AtomicBool>,
    stderr: Option<OwnedFd>,
) {
    loop {
        match connection.receive::<Reply>().await {
            Ok(Some((Reply::Exited { code }, _))) => {
                let _ = exit.set((code, Utc::now()));
            }
            Ok(Some((reply, _))) => {
                let _ = replies.send(reply).await;
            }
            Ok(None) | Err(_) => break,
        }
    }
    if exit.set((AGENT_GONE, Utc::now())).is_ok() && !deleted.load(Ordering::Acquire) {
        if let Some(stderr) = stderr {
            let _ = writeln!(
                File::from(stderr),
                "[wafer] the node agent went away: the function ended with it"
            );
        }
        log::warn!("the node agent went away; a task ended with exit code {AGENT_GONE}");
    }
}

/// A listener on `address` in `network`.
async fn bind(network: &Network, address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use wafer_container::netns::Namespace;
    match network {
        Network::Host => std::net::TcpListener::bind(address),
        Network::Namespace(path) => Namespace::at(path).await?.listen(address).await,
        Network::New => Namespace::new_empty().await?.listen(address).await,
    }
}

/// The write end of a container's log FIFO (or file), without waiting for a reader; `None` when the
/// container has no such stream or it cannot be opened.
fn open_log(path: &Path) -> Option<File> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let open = |flags| {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_NONBLOCK) {
        Ok(file) => Some(file),
        // A FIFO nobody reads yet: hold it open read-write, which never waits.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ok(),
        Err(e) => {
            log::warn!("cannot open {}: {e}", path.display());
            None
        }
    }
}
