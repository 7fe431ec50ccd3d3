//! The server's state ([`App`]) and its start: opening the stores, making every deployed function
//! callable, queueing again what this node left running, and starting the background tasks.
//!
//! - `live.rs` builds up the live registry: a stored version becomes an [`crate::registry::Entry`]
//!   (its settings by the engine's one rule), loaded lazily from its compiled artifact;
//! - `changes.rs` holds the operations that change what is deployed: deploy, rollback, delete and
//!   configuration. Each is persisted first (blobs fsynced, the database committed) and only then made
//!   live, under one lock so the registry always matches the database;
//! - `cluster.rs` keeps the registry in step with changes other nodes make to a shared database, and
//!   beats this node's heartbeat.

mod changes;
mod cluster;
mod live;
mod release;
mod tiers;

pub use changes::Upload;
pub use release::Target;

use crate::admission::Admission;
use crate::code::CodeCache;
use crate::config::ServerConfig;
use crate::containers::Containers;
use crate::journal::{self, Journal};
use crate::metrics::Metrics;
use crate::platform::ServerPlatform;
use crate::queue::{self, Queue};
use crate::registry::Registry;
use crate::schedule;
use std::path::Path;
use std::sync::Arc;
use wafer_engine::{CompileCache, Engine, EngineOptions, OutboundPolicy};
use wafer_store::{
    AccessStore, Artifacts, ClusterStore, ExecutionStore, MetaStore, PgOptions, PgStore,
    SqliteStore, StateStore,
};

/// How often instances kept for `reuse` are checked for idleness.
const EVICT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or database could not be opened.
    #[error(transparent)]
    Store(#[from] wafer_store::StoreError),
    /// The wasm engine could not be set up.
    #[error(transparent)]
    Engine(#[from] wafer_engine::SetupError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed: in the message itself, not also as its source, so a printed chain names
        /// it once.
        reason: std::io::Error,
    },
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Shared server state.
pub struct App {
    pub(crate) engine: Arc<Engine>,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) artifacts: Artifacts,
    /// The versions' read-only files, unpacked on this node.
    pub(crate) files: wafer_store::files::Unpacked,
    pub(crate) registry: Registry,
    /// The compiled code of the modules this node serves, under its budget.
    pub(crate) code: CodeCache,
    /// The modules running baseline code, waiting for their optimizing compile.
    pub(crate) tier_ups: tiers::TierUps,
    pub(crate) admission: Admission,
    pub(crate) metrics: Metrics,
    pub(crate) config: ServerConfig,
    pub(crate) executions: Arc<dyn ExecutionStore>,
    pub(crate) journal: Journal,
    /// Finished attempts counted per function and minute, on their way to the store.
    pub(crate) rollups: Arc<crate::rollups::Rollups>,
    pub(crate) queue: Queue,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) platform: Arc<ServerPlatform>,
    pub(crate) cluster: Arc<dyn ClusterStore>,
    /// The API keys, and the audit log.
    pub(crate) keys: Arc<crate::auth::Keys>,
    /// Container functions: containerd, images and pools.
    pub(crate) containers: Containers,
    /// This node's id: the name its claims on queued executions carry.
    pub(crate) node: String,
    changes: tokio::sync::Mutex<()>,
    /// How far this node has applied the change feed, and what it does not serve at the live version yet.
    pub(crate) applied: cluster::Applied,
    /// The address the listener is bound to, once it is.
    listening: std::sync::OnceLock<std::net::SocketAddr>,
    /// The address the console's listener is bound to, if it has one.
    console: std::sync::OnceLock<std::net::SocketAddr>,
}

/// The stores, on one database.
struct Stores {
    meta: Arc<dyn MetaStore>,
    executions: Arc<dyn ExecutionStore>,
    state: Arc<dyn StateStore>,
    cluster: Arc<dyn ClusterStore>,
    access: Arc<dyn AccessStore>,
}

impl Stores {
    fn of<S>(store: S) -> Self
    where
        S: MetaStore + ExecutionStore + StateStore + ClusterStore + AccessStore + Clone + 'static,
    {
        Self {
            meta: Arc::new(store.clone()),
            executions: Arc::new(store.clone()),
            state: Arc::new(store.clone()),
            cluster: Arc::new(store.clone()),
            access: Arc::new(store),
        }
    }

    /// The cluster's PostgreSQL when the configuration names one, otherwise the data directory's SQLite.
    async fn open(config: &ServerConfig) -> Result<Self, StartError> {
        Ok(match &config.database {
            Some(database) => {
                let options = PgOptions {
                    ca_file: database.ca_file.clone(),
                    secrets: config.secrets.clone(),
                    ..PgOptions::new(&database.url)
                };
                let store = PgStore::connect(&options, &config.data_dir).await?;
                tracing::info!(
                    database = %wafer_store::redact_url(&database.url),
                    "cluster database connected"
                );
                Self::of(store)
            }
            None => Self::of(SqliteStore::open_with(&config.data_dir, &config.secrets)?),
        })
    }
}

impl App {
    /// Opens the data directory, makes every deployed function live again, queues again the executions
    /// this node left running, and starts the queue workers, the cron scheduler and record retention.
    pub async fn open(config: ServerConfig) -> Result<Arc<Self>, StartError> {
        OutboundPolicy::parse(&config.executions.callback_hosts)
            .map_err(|e| StartError::Config(format!("callback hosts: {e}")))?;
        let Stores {
            meta,
            executions,
            state,
            cluster,
            access,
        } = Stores::open(&config).await?;
        let keys = Arc::new(crate::auth::Keys::open(access).await?);
        crate::auth::Keys::keep_reading(&keys);
        let node = match &config.node_id {
            Some(id) => valid_node_id(id)?,
            None => node_id(&config.data_dir)?,
        };
        let platform = Arc::new(ServerPlatform::new(
            state.clone(),
            config.defaults.kv_store_bytes,
            &config.data_dir,
        ));
        let (config_containers, data_dir) = (config.containers.clone(), config.data_dir.clone());
        // Where the feed stands before anything is loaded: whatever changes meanwhile is applied after.
        let feed = cluster.changes_since(u64::MAX).await?.seq;
        let app = Arc::new(Self {
            engine: Engine::new(&EngineOptions {
                compile_cache: compile_cache(&config),
                ..config.defaults.engine_options()
            })?,
            meta,
            cluster,
            keys,
            applied: cluster::Applied::new(feed),
            artifacts: Artifacts::open(&config.data_dir)?,
            files: wafer_store::files::Unpacked::open(&config.data_dir)?,
            journal: Journal::start(executions.clone()),
            rollups: Arc::default(),
            executions,
            queue: Queue::default(),
            registry: Registry::default(),
            code: CodeCache::new(config.defaults.code),
            tier_ups: tiers::TierUps::default(),
            admission: Admission::new(
                config.defaults.max_instances,
                std::time::Duration::from_millis(config.defaults.queue_wait_ms),
            ),
            metrics: Metrics::default(),
            config,
            state,
            platform,
            containers: Containers::new(config_containers, &data_dir, &node),
            node,
            changes: tokio::sync::Mutex::new(()),
            listening: std::sync::OnceLock::new(),
            console: std::sync::OnceLock::new(),
        });
        app.platform.attach(&app);
        app.containers.clean_up().await;
        app.load_all().await?;
        let requeued = app.executions.requeue_claims(&app.node).await?;
        if requeued > 0 {
            tracing::info!(executions = requeued, "queued again after an unclean stop");
        }
        queue::start(&app);
        schedule::start(&app);
        cluster::start(&app);
        journal::start_retention(app.executions.clone(), &app.config.executions);
        crate::auth::Keys::start_audit_retention(&app.keys, app.config.executions.retain_audit);
        crate::rollups::start_flushing(app.rollups.clone(), app.executions.clone());
        tiers::start(&app);
        start_background_load(&app);
        start_idle_eviction(&app);
        Ok(app)
    }
}

impl App {
    /// Records the address the listener is bound to.
    pub fn listening_on(&self, addr: std::net::SocketAddr) {
        let _ = self.listening.set(addr);
    }

    /// Records the address the console's listener is bound to.
    pub fn console_on(&self, addr: std::net::SocketAddr) {
        let _ = self.console.set(addr);
    }

    /// The address the console's listener is bound to, if it has one.
    pub fn console_address(&self) -> Option<std::net::SocketAddr> {
        self.console.get().copied()
    }

    /// Where other nodes and operators reach this node: the configured `advertise` address, or the one
    /// the listener is bound to.
    pub fn address(&self) -> String {
        match (&self.config.advertise, self.listening.get()) {
            (Some(advertised), _) => advertised.clone(),
            (None, Some(addr)) => addr.to_string(),
            (None, None) => self.config.listen.to_string(),
        }
    }

    /// The nodes sharing this node's store (just this one on the embedded store) heard from lately.
    pub async fn nodes(&self) -> Result<Vec<wafer_store::NodeRecord>, crate::Error> {
        Ok(self.cluster.nodes(cluster::NODE_EXPIRY).await?)
    }

    /// The change feed's position now.
    pub async fn feed(&self) -> Result<u64, crate::Error> {
        Ok(self.cluster.changes_since(u64::MAX).await?.seq)
    }

    /// Says this node is going: other nodes stop listing it at once. What it counted goes to the store.
    pub async fn leave(&self) {
        self.rollups.flush(self.executions.as_ref()).await;
        if let Err(e) = self.cluster.leave(&self.node).await {
            tracing::warn!("cannot leave the nodes table: {e}");
        }
        self.containers.stop().await;
    }
}

/// This node's id, kept in the data directory so a restarted node knows its own claims: read, or
/// generated and written the first time.
/// The data directory's compile cache, or none when `--compile-cache-size` is 0 or the file cannot be
/// opened (compiles then translate every function, as they would without it).
fn compile_cache(config: &ServerConfig) -> Option<Arc<CompileCache>> {
    let budget = config.defaults.compile_cache_bytes;
    if budget == 0 {
        return None;
    }
    CompileCache::open_or_warn(&config.data_dir.join("compile-cache.db"), budget)
}

fn node_id(data_dir: &Path) -> Result<String, StartError> {
    let path = data_dir.join(wafer_store::NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(wafer_store::StoreError::from(e).into()),
    }
    let id = format!("node-{}", uuid::Uuid::now_v7().simple());
    std::fs::write(&path, format!("{id}\n")).map_err(wafer_store::StoreError::from)?;
    Ok(id)
}

/// A node id given in the configuration, if it is one: 1 to 128 of `A-Z a-z 0-9 . _ -`.
fn valid_node_id(id: &str) -> Result<String, StartError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if id.is_empty() || id.len() > 128 || !id.chars().all(fits) {
        return Err(StartError::Config(format!(
            "node id {id:?} must be 1 to 128 of A-Z, a-z, 0-9, `.`, `_` and `-`"
        )));
    }
    Ok(id.to_string())
}

/// Loads, one after another, every live function nobody has called yet, so first calls after a restart
/// find them ready — until the code cache is full: the rest load on their first call.
fn start_background_load(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        for entry in app.registry.all() {
            if app.code.is_full() {
                break;
            }
            // A failure is logged by `function` and tried again on the next call.
            let _ = app.function(&entry).await;
        }
        let stats = app.engine.stats();
        tracing::info!(
            functions = app.registry.len(),
            loaded = stats.loaded,
            compiled = stats.compiled,
            took_ms = started.elapsed().as_millis() as u64,
            "functions loaded"
        );
    });
}

/// Drops the instances kept for `reuse` once they have idled past [`wafer_engine::IDLE_TIMEOUT`].
fn start_idle_eviction(app: &Arc<App>) {
    let engine = app.engine.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVICT_EVERY).await;
            engine.evict_idle();
        }
    });
}
