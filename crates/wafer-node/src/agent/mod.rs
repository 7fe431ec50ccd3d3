//! The node agent (`wafer node`): one process per node that runs the functions of every container the
//! shim hands it.
//!
//! Kubernetes creating a container becomes loading a function into the runtime already running on the
//! node: the shim (`containerd-shim-wafer-v1`) keeps containerd's task API, and for each container opens
//! a connection to the agent's socket and hands over the function ([`crate::protocol`]). The agent holds
//! what a process per container would pay for again and again:
//!
//! - **one engine** (and a second, metering fuel, made the first time a function bounds its fuel), with
//!   one pooling allocator shared by every container's instances;
//! - **one compile per module** ([`Modules`]): containers of the same module share its compiled code
//!   while any of them is loaded, each with its own reused instances, and the compiled artifact is kept
//!   on disk ([`crate::artifacts`]), so a restarted agent loads it instead of compiling again.
//!
//! Each container's function is a [`pod`] on its own connection, under its own limits.
//!
//! The socket is root's alone: it is made mode 0600 in a directory of mode 0700 when the agent creates
//! it, and a peer of another user is turned away, since whoever talks to it runs code on the node.

pub mod pod;

use crate::artifacts::{ArtifactCache, Origin};
use crate::protocol::Connection;
use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::{UnixListener, UnixStream};
use wafer_api::Kind;
use wafer_engine::{CompileCache, Engine, EngineOptions, Function};

/// Where compiled artifacts are kept unless the agent is told otherwise.
pub const DEFAULT_CACHE: &str = "/var/lib/wafer/node-cache";

/// The largest wasm binary a container may hand the agent.
pub const DEFAULT_MAX_MODULE: u64 = 256 << 20;

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The socket shims connect to.
    pub socket: PathBuf,
    /// Where compiled artifacts are kept; `None` keeps none on disk.
    pub cache: Option<PathBuf>,
    /// Instance slots of the pooling allocator, shared by every container; `None` allocates on demand.
    pub pool: Option<u32>,
    /// Idle instances kept for functions that set `reuse`, across all containers.
    pub max_idle: usize,
    /// The largest wasm binary accepted.
    pub max_module: u64,
}

impl Default for AgentOptions {
    fn default() -> Self {
        let engine = EngineOptions::default();
        Self {
            socket: crate::protocol::DEFAULT_SOCKET.into(),
            cache: Some(DEFAULT_CACHE.into()),
            pool: engine.pool,
            max_idle: engine.max_idle,
            max_module: DEFAULT_MAX_MODULE,
        }
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The engine could not be set up.
    #[error(transparent)]
    Engine(#[from] wafer_engine::SetupError),
    /// The socket could not be made.
    #[error("cannot listen on {path}: {reason}")]
    Socket {
        path: PathBuf,
        /// Why: in the message, not also as its source, so a printed chain names it once.
        reason: std::io::Error,
    },
    /// Another agent answers on the socket.
    #[error("another node agent is listening on {0}")]
    Running(PathBuf),
}

/// The running agent's shared state.
pub struct Agent {
    options: AgentOptions,
    plain: Arc<Engine>,
    metered: OnceLock<Result<Arc<Engine>, String>>,
    modules: Modules,
    cache: Option<ArtifactCache>,
    /// Beside the artifacts: the machine code of single wasm functions, shared by both engines.
    compile_cache: Option<Arc<CompileCache>>,
    loaded: AtomicU64,
}

/// Compiled modules by digest, engine and kind, shared by the containers using them.
#[derive(Default)]
struct Modules {
    entries: Mutex<HashMap<ModuleKey, ModuleEntry>>,
    compiled: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ModuleKey {
    digest: String,
    metered: bool,
    kind: Option<Kind>,
}

struct ModuleEntry {
    function: Arc<tokio::sync::OnceCell<Result<Function, String>>>,
    users: usize,
}

/// A module in use by one container; the compiled code is let go when its last user is gone.
pub struct ModuleLease {
    agent: Arc<Agent>,
    key: ModuleKey,
}

impl Agent {
    /// Sets the agent up: its engine and its artifact cache.
    pub fn new(options: AgentOptions) -> Result<Arc<Self>, AgentError> {
        let cache = options
            .cache
            .as_deref()
            .and_then(|dir| match ArtifactCache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!("no compile cache at {}: {e}", dir.display());
                    None
                }
            });
        let compile_cache = options
            .cache
            .as_deref()
            .filter(|_| cache.is_some())
            .and_then(|dir| {
                CompileCache::open_or_warn(
                    &dir.join("compile-cache.db"),
                    CompileCache::DEFAULT_BUDGET,
                )
            });
        let plain = Engine::new(&engine_options(&options, false, &compile_cache))?;
        Ok(Arc::new(Self {
            options,
            plain,
            metered: OnceLock::new(),
            modules: Modules::default(),
            cache,
            compile_cache,
            loaded: AtomicU64::new(0),
        }))
    }

    /// Modules compiled since start (a module loaded from its cached artifact does not count).
    pub fn compiled(&self) -> u64 {
        self.modules.compiled.load(Ordering::Relaxed)
    }

    /// Containers whose functions are loaded now.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Listens on the socket and serves shims until `shutdown` resolves; then every loaded function is
    /// stopped at once and the socket removed.
    pub async fn serve(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let listener = listen(&self.options.socket).await?;
        tracing::info!(
            socket = %self.options.socket.display(),
            pool = ?self.plain.pool_slots(),
            "node agent listening"
        );
        let mut pods = tokio::task::JoinSet::new();
        // SAFETY: geteuid has no preconditions.
        let owner = unsafe { libc::geteuid() };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        match stream.peer_cred() {
                            Ok(peer) if peer.uid() == owner => {
                                pods.spawn(pod::run(self.clone(), Connection::new(stream)));
                            }
                            Ok(peer) => tracing::warn!(uid = peer.uid(), "refused a connection from another user"),
                            Err(e) => tracing::warn!("refused a connection without credentials: {e}"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = pods.join_next(), if !pods.is_empty() => {}
            }
        }
        pods.shutdown().await;
        let _ = std::fs::remove_file(&self.options.socket);
        tracing::info!("node agent stopped");
        Ok(())
    }

    /// The engine for functions that do (`metered`) or do not meter fuel.
    fn engine(&self, metered: bool) -> Result<Arc<Engine>, String> {
        if !metered {
            return Ok(self.plain.clone());
        }
        self.metered
            .get_or_init(|| {
                Engine::new(&engine_options(&self.options, true, &self.compile_cache))
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The compiled function of `wasm` (SHA-256 `digest`) as `kind`, compiled once however many
    /// containers load it at the same time, with a lease that keeps it while the container runs.
    pub async fn module(
        self: &Arc<Self>,
        wasm: Arc<Vec<u8>>,
        digest: String,
        kind: Option<Kind>,
        metered: bool,
    ) -> (ModuleLease, Result<Function, String>) {
        let key = ModuleKey {
            digest,
            metered,
            kind,
        };
        let cell = {
            let mut entries = self.modules.lock();
            let entry = entries.entry(key.clone()).or_insert_with(|| ModuleEntry {
                function: Arc::default(),
                users: 0,
            });
            entry.users += 1;
            entry.function.clone()
        };
        let lease = ModuleLease {
            agent: self.clone(),
            key: key.clone(),
        };
        let agent = self.clone();
        let function = cell
            .get_or_init(|| async move {
                let engine = agent.engine(key.metered)?;
                let compiled = tokio::task::spawn_blocking(move || {
                    let warn = |text: String| tracing::warn!("{text}");
                    let cache = agent.cache.as_ref();
                    let started = std::time::Instant::now();
                    let result = ArtifactCache::load_or_compile(
                        cache,
                        &engine,
                        &wasm,
                        &key.digest,
                        key.kind,
                        &warn,
                    );
                    if let Ok((_, origin)) = &result {
                        if *origin == Origin::Compiled {
                            agent.modules.compiled.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::info!(
                            digest = %key.digest,
                            ?origin,
                            ms = started.elapsed().as_millis() as u64,
                            "module ready"
                        );
                    }
                    result
                })
                .await
                .map_err(|e| format!("the compile failed: {e}"))?;
                compiled
                    .map(|(function, _)| function)
                    .map_err(|e| e.to_string())
            })
            .await
            .clone();
        (lease, function)
    }
}

impl Modules {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ModuleKey, ModuleEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for ModuleLease {
    fn drop(&mut self) {
        let mut entries = self.agent.modules.lock();
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                entries.remove(&self.key);
            }
        }
    }
}

fn engine_options(
    options: &AgentOptions,
    fuel: bool,
    compile_cache: &Option<Arc<CompileCache>>,
) -> EngineOptions {
    EngineOptions {
        fuel,
        pool: options.pool,
        max_idle: options.max_idle,
        compile_cache: compile_cache.clone(),
        // A pod's container starts once per module and then runs for long: it takes the optimizing
        // compiler (and the artifact it keeps) from the start.
        baseline_limit: 0,
    }
}

/// Binds the agent's socket, root's alone: a stale socket left by an agent that died is replaced, a
/// live one refused.
async fn listen(path: &Path) -> Result<UnixListener, AgentError> {
    let failed = |reason| AgentError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(failed)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::Running(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(failed)?;
    }
    let listener = UnixListener::bind(path).map_err(failed)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    Ok(listener)
}
