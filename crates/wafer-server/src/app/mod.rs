//! The server's state and the operations that change it: deploy, rollback, delete, and making every live
//! function callable at start-up (registered at once, loaded lazily).
//!
//! Each change is persisted first (blobs fsynced, the database committed) and only then made live in the
//! [`Registry`]. Changes are serialised by one lock so the registry always matches the database; compiling,
//! the slow part of a deploy, happens before the lock is taken.

use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::journal::{self, Journal};
use crate::metrics::Metrics;
use crate::platform::ServerPlatform;
use crate::queue::{self, Queue};
use crate::registry::{Entry, Registry};
use crate::schedule;
use crate::validate;
use bytes::Bytes;
use std::sync::Arc;
use wafer_api::{FunctionConfig, FunctionInfo, Kind};
use wafer_engine::{
    CompileError, Engine, Function, Grants, OutboundLimits, OutboundPolicy, PlatformHandle,
    Settings, Variables,
};
use wafer_store::{
    BlobStore, ExecutionStore, FunctionVariables, MetaStore, NewVersion, SqliteStore, StateStore,
    StoredFunction,
};

/// Loads, one after another, every live function nobody has called yet, so first calls after a restart
/// find them ready.
fn start_background_load(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        for entry in app.registry.all() {
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

/// How often instances kept for `reuse` are checked for idleness.
const EVICT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A non-loopback address was asked for without a token to protect the management API.
    #[error(
        "refusing to serve the management API on {0} without a token: set --token (or WAFER_TOKEN), \
         or listen on a loopback address"
    )]
    Insecure(std::net::SocketAddr),
    /// A setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server failed while running.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Attempts an async or cron execution gets unless its function sets `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The first retry's wait unless a function sets `retry_backoff_ms`.
pub const DEFAULT_RETRY_BACKOFF_MS: u64 = 1000;

/// Outbound requests a function may have in flight unless it sets `max_outbound`.
pub const DEFAULT_MAX_OUTBOUND: u32 = 16;

/// The outbound timeout unless a function sets `outbound_timeout_ms`.
pub const DEFAULT_OUTBOUND_TIMEOUT_MS: u64 = 30_000;

/// Shared server state.
pub struct App {
    pub(crate) engine: Arc<Engine>,
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) blobs: BlobStore,
    pub(crate) registry: Registry,
    pub(crate) admission: Admission,
    pub(crate) metrics: Metrics,
    pub(crate) config: ServerConfig,
    pub(crate) executions: Arc<dyn ExecutionStore>,
    pub(crate) journal: Journal,
    pub(crate) queue: Queue,
    pub(crate) state: Arc<dyn StateStore>,
    pub(crate) platform: Arc<ServerPlatform>,
    changes: tokio::sync::Mutex<()>,
}

impl App {
    /// Opens the data directory, makes every deployed function live again, queues again the executions
    /// a crash left running, and starts the queue workers, the cron scheduler and record retention.
    pub async fn open(config: ServerConfig) -> Result<Arc<Self>, StartError> {
        OutboundPolicy::parse(&config.executions.callback_hosts)
            .map_err(|e| StartError::Config(format!("callback hosts: {e}")))?;
        let store = SqliteStore::open(&config.data_dir)?;
        let blobs = BlobStore::open(&config.data_dir)?;
        let executions: Arc<dyn ExecutionStore> = Arc::new(store.clone());
        let state: Arc<dyn StateStore> = Arc::new(store.clone());
        let platform = Arc::new(ServerPlatform::new(
            state.clone(),
            config.defaults.kv_store_bytes,
        ));
        let app = Arc::new(Self {
            engine: Engine::new(&config.defaults.engine_options())?,
            meta: Arc::new(store),
            journal: Journal::start(executions.clone()),
            executions,
            queue: Queue::default(),
            blobs,
            registry: Registry::default(),
            admission: Admission::new(
                config.defaults.max_instances,
                std::time::Duration::from_millis(config.defaults.queue_wait_ms),
            ),
            metrics: Metrics::default(),
            config,
            state,
            platform,
            changes: tokio::sync::Mutex::new(()),
        });
        app.platform.attach(&app);
        app.load_all().await?;
        let requeued = app.executions.requeue_running(journal::now_ms()).await?;
        if requeued > 0 {
            tracing::info!(executions = requeued, "queued again after an unclean stop");
        }
        queue::start(&app);
        schedule::start(&app);
        journal::start_retention(&app);
        start_background_load(&app);
        start_idle_eviction(&app);
        Ok(app)
    }

    /// Registers the live version of every stored function. Nothing is loaded yet: each is loaded on its
    /// first call or by the background loader, so the server answers at once however many there are.
    async fn load_all(&self) -> Result<(), StartError> {
        let mut variables = self.state.all_variables().await?;
        for function in self.meta.list_functions().await? {
            let own = variables.remove(&function.live.name).unwrap_or_default();
            self.install(&function, None, own);
        }
        tracing::info!(
            functions = self.registry.len(),
            pool_slots = self.engine.pool_slots().unwrap_or(0),
            "functions registered"
        );
        Ok(())
    }

    /// The runnable function of a live entry, loading it from its compiled artifact (compiling it again
    /// when the artifact is missing or from another engine build) the first time it is needed.
    pub async fn function<'e>(&self, entry: &'e Entry) -> Result<&'e Function, ApiError> {
        let function = entry
            .function
            .get_or_try_init(|| self.prepare(&entry.digest, entry.kind))
            .await
            .inspect_err(|e| {
                tracing::error!(function = %entry.settings.name, "cannot load the live version: {e:?}")
            })?;
        if entry.kind == Kind::ProxyWasm {
            self.proxy_id(entry, function).await;
        }
        Ok(function)
    }

    /// Reads a proxy-wasm version's id (once) and makes the function reachable by it.
    async fn proxy_id(&self, entry: &Entry, function: &Function) {
        let id = entry
            .proxy_id
            .get_or_init(|| async {
                function
                    .proxy_id(&entry.settings)
                    .await
                    .inspect_err(|e| {
                        tracing::warn!(function = %entry.settings.name, "proxy_get_id failed: {e}")
                    })
                    .ok()
                    .flatten()
            })
            .await;
        if let Some(id) = id {
            if let Err(owner) = self.registry.set_id(&entry.settings.name, id) {
                tracing::warn!(function = %entry.settings.name, id, owner, "proxy-wasm id already taken; not routed by id");
            }
        }
    }

    /// The live function named `target`, or the proxy-wasm function whose id it is (reading the ids of
    /// proxy-wasm functions not loaded yet, if need be).
    pub async fn resolve(&self, target: &str) -> Option<Arc<Entry>> {
        match self.registry.get(target) {
            Some(entry) => Some(entry),
            None => self.by_proxy_id(target).await,
        }
    }

    /// The live proxy-wasm function whose id is `id`, reading the ids of those not loaded yet if need be.
    pub async fn by_proxy_id(&self, id: &str) -> Option<Arc<Entry>> {
        if let Some(entry) = self.registry.by_id(id) {
            return Some(entry);
        }
        for entry in self.registry.all() {
            if entry.kind == Kind::ProxyWasm && entry.proxy_id.get().is_none() {
                let _ = self.function(&entry).await;
            }
        }
        self.registry.by_id(id)
    }

    /// What every invocation of a version gets: its name, env, limits, grants and configuration.
    fn settings(
        &self,
        name: &str,
        kind: Kind,
        config: &FunctionConfig,
        variables: FunctionVariables,
    ) -> Settings {
        let outbound_limits = OutboundLimits::new(
            std::time::Duration::from_millis(
                config
                    .outbound_timeout_ms
                    .unwrap_or(DEFAULT_OUTBOUND_TIMEOUT_MS),
            ),
            config.max_outbound.unwrap_or(DEFAULT_MAX_OUTBOUND),
        );
        let mut merged = variables.variables;
        merged.extend(variables.secrets);
        // Components read their configuration through wasi:config/store; core modules, which cannot
        // import it, get it as environment variables (their own `env` wins).
        let mut env: Vec<(String, String)> = Vec::new();
        if kind != Kind::Http {
            env.extend(
                merged
                    .iter()
                    .filter(|(k, _)| !config.env.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Settings {
            name: name.to_string(),
            env,
            limits: self.config.defaults.engine_limits(config),
            // Validated at deploy; a stored entry that no longer parses grants nothing.
            outbound: OutboundPolicy::parse(&config.allowed_outbound_hosts)
                .unwrap_or_else(|e| {
                    tracing::error!(function = name, "outbound hosts ignored: {e}");
                    OutboundPolicy::default()
                })
                .with_limits(outbound_limits),
            reuse: config.reuse.unwrap_or(1),
            grants: Grants {
                kv_stores: config.key_value_stores.clone().into(),
                functions: config.allowed_functions.clone().into(),
            },
            variables: Variables::new(merged),
            platform: PlatformHandle(Some(self.platform.clone())),
        }
    }

    /// The API view of a stored function, with the limits it runs under.
    pub fn info(&self, function: &StoredFunction) -> FunctionInfo {
        FunctionInfo {
            limits: self.config.defaults.effective(&function.live.config),
            ..function.to_info()
        }
    }

    /// Makes the live version of `function` callable, with its runnable form when it is at hand.
    fn install(
        &self,
        function: &StoredFunction,
        prepared: Option<Function>,
        variables: FunctionVariables,
    ) {
        self.install_with(function, prepared, variables, None);
    }

    /// [`App::install`], with the proxy-wasm id when it is known already.
    fn install_with(
        &self,
        function: &StoredFunction,
        prepared: Option<Function>,
        variables: FunctionVariables,
        proxy_id: Option<Option<String>>,
    ) {
        let live = &function.live;
        let entry = Entry {
            function: tokio::sync::OnceCell::new_with(prepared),
            proxy_id: tokio::sync::OnceCell::new_with(proxy_id),
            kind: live.kind,
            digest: live.digest.clone(),
            settings: self.settings(&live.name, live.kind, &live.config, variables),
            private: live.config.private,
            max_request_bytes: usize::try_from(
                self.config
                    .defaults
                    .effective(&live.config)
                    .max_request_bytes,
            )
            .unwrap_or(usize::MAX),
            slots: live
                .config
                .max_concurrency
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            version: live.version,
            max_attempts: live.config.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            retry_backoff: std::time::Duration::from_millis(
                live.config
                    .retry_backoff_ms
                    .unwrap_or(DEFAULT_RETRY_BACKOFF_MS),
            ),
            cold: std::sync::atomic::AtomicBool::new(true),
            schedule: live.config.schedule.as_deref().and_then(|expr| {
                let since = chrono::DateTime::parse_from_rfc3339(&function.updated_at)
                    .map_or_else(|_| journal::now_ms(), |t| t.timestamp_millis());
                // Validated at deploy; a stored expression that no longer parses schedules nothing.
                schedule::parse(expr)
                    .inspect_err(
                        |e| tracing::error!(function = %live.name, "schedule ignored: {e}"),
                    )
                    .ok()
                    .map(|schedule| (schedule, since))
            }),
        };
        let id = entry.proxy_id.get().cloned().flatten();
        self.registry
            .install(&live.name, entry, &live.config.routes);
        if let Some(id) = id {
            if let Err(owner) = self.registry.set_id(&live.name, &id) {
                tracing::warn!(function = %live.name, id, owner, "proxy-wasm id already taken");
            }
        }
    }

    /// A stored version, runnable: from its compiled artifact when there is one for this engine, otherwise
    /// compiled again from its stored module (and the artifact written for next time).
    async fn prepare(&self, digest: &str, kind: Kind) -> Result<Function, ApiError> {
        let (function, artifact) = self.load_or_compile(digest, None, Some(kind)).await?;
        if let Some(artifact) = artifact {
            let (blobs, digest) = (self.blobs.clone(), digest.to_string());
            let fingerprint = self.engine.fingerprint().to_string();
            tokio::task::spawn_blocking(move || {
                blobs.put_artifact(&digest, &fingerprint, &artifact)
            })
            .await
            .map_err(|e| ApiError::internal(format!("write task failed: {e}")))??;
        }
        Ok(function)
    }

    /// Validates, compiles and stores a new version of `name`, and makes it live.
    ///
    /// Nothing is written unless the module compiles and fits its kind; if storing fails half-way, the blobs
    /// written for it are removed again. Bytes deployed before (under any name) are not compiled again.
    pub async fn deploy(
        &self,
        name: &str,
        module: Bytes,
        config: FunctionConfig,
        variables: FunctionVariables,
    ) -> Result<StoredFunction, ApiError> {
        validate::name(name)?;
        let config = validate::config(config, self.config.defaults.fuel)?;
        validate::variables(&variables)?;
        let digest = BlobStore::digest(&module);
        let (function, artifact) = self
            .load_or_compile(&digest, Some(module.clone()), config.kind)
            .await?;
        validate::fits(&config, function.kind())?;
        let mut current = self.state.variables(name).await?;
        current.variables.extend(variables.variables.clone());
        current.secrets.extend(variables.secrets.clone());
        let proxy_id = function
            .proxy_id(&self.settings(name, function.kind(), &config, current.clone()))
            .await
            .map_err(|e| {
                ApiError::bad_request(
                    "unsupported_module",
                    format!("the module's proxy_get_id failed: {e}"),
                )
            })?;
        if let Some(owner) = proxy_id
            .as_deref()
            .and_then(|id| self.registry.id_owner(id, name))
        {
            return Err(ApiError::conflict(
                "id_taken",
                format!(
                    "proxy-wasm id `{}` is already used by function `{owner}`",
                    proxy_id.as_deref().unwrap_or_default()
                ),
            ));
        }
        let new = NewVersion {
            name: name.to_string(),
            kind: function.kind(),
            config,
            digest: digest.clone(),
            size: module.len() as u64,
        };
        let _changes = self.changes.lock().await;
        let existed = self.blobs.module_path(&digest).exists();
        let blobs = self.blobs.clone();
        let fingerprint = self.engine.fingerprint().to_string();
        let written = tokio::task::spawn_blocking(move || {
            blobs.put_module(&new.digest, &module)?;
            if let Some(artifact) = artifact {
                blobs.put_artifact(&new.digest, &fingerprint, &artifact)?;
            }
            Ok::<_, wafer_store::StoreError>(new)
        })
        .await
        .map_err(|e| ApiError::internal(format!("write task failed: {e}")))
        .and_then(|written| written.map_err(ApiError::from));
        let stored = match written {
            Ok(new) => self.meta.insert_version(new).await.map_err(ApiError::from),
            Err(e) => Err(e),
        };
        let stored = match stored {
            Ok(stored) => self
                .state
                .merge_variables(name, variables)
                .await
                .map(|()| stored)
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        match stored {
            Ok(stored) => {
                self.install_with(&stored, Some(function), current, Some(proxy_id));
                tracing::info!(
                    function = name,
                    version = stored.live.version,
                    kind = %stored.live.kind,
                    "deployed"
                );
                Ok(stored)
            }
            Err(e) => {
                if !existed && !self.meta.digest_in_use(&digest).await.unwrap_or(true) {
                    if let Err(cleanup) = self.blobs.remove(&digest) {
                        tracing::warn!(%digest, "cannot remove blobs of a failed deploy: {cleanup}");
                    }
                }
                Err(e)
            }
        }
    }

    /// The function of module `digest`: its stored artifact for this engine when there is one (the same
    /// bytes deployed before, under any name), otherwise compiled from `module` (or, when `None`, the stored
    /// module), with the new artifact returned for storing. Either way `kind`, when given, is checked.
    async fn load_or_compile(
        &self,
        digest: &str,
        module: Option<Bytes>,
        kind: Option<Kind>,
    ) -> Result<(Function, Option<Vec<u8>>), ApiError> {
        let engine = self.engine.clone();
        let blobs = self.blobs.clone();
        let digest = digest.to_string();
        let loaded = tokio::task::spawn_blocking(move || {
            let artifact = blobs.artifact_path(&digest, engine.fingerprint());
            if artifact.exists() {
                match engine.load(&artifact, kind) {
                    Ok(function) => return Ok((function, None, None)),
                    Err(CompileError::Unsupported(reason)) => {
                        return Err(ApiError::from(CompileError::Unsupported(reason)))
                    }
                    Err(e) => tracing::warn!(%digest, "stored artifact unusable, compiling: {e}"),
                }
            }
            let module = match module {
                Some(module) => module,
                None => Bytes::from(blobs.read_module(&digest)?),
            };
            let started = std::time::Instant::now();
            let compiled = engine.compile(&module, kind)?;
            Ok((
                compiled.function,
                Some(compiled.artifact),
                Some(started.elapsed()),
            ))
        })
        .await
        .map_err(|e| ApiError::internal(format!("compile task failed: {e}")))?;
        let (function, artifact, took) = loaded?;
        if let Some(took) = took {
            self.metrics.compile(took);
        }
        Ok((function, artifact))
    }

    /// Makes an earlier (or later) stored version of `name` live again.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<StoredFunction, ApiError> {
        validate::name(name)?;
        let _changes = self.changes.lock().await;
        let target = self
            .meta
            .list_versions(name)
            .await?
            .into_iter()
            .find(|v| v.version == version);
        let Some(target) = target else {
            return Err(match self.meta.get_function(name).await? {
                Some(_) => {
                    ApiError::not_found(format!("function `{name}` has no version {version}"))
                }
                None => ApiError::not_found(format!("function `{name}` does not exist")),
            });
        };
        let prepared = self.prepare(&target.digest, target.kind).await?;
        let function = self.meta.set_live(name, version).await?;
        let variables = self.state.variables(name).await?;
        self.install(&function, Some(prepared), variables);
        tracing::info!(function = name, version, "rolled back");
        Ok(function)
    }

    /// Replaces the configuration variables of `name` and sets or removes the named secrets; the next
    /// call sees them. Returns the new configuration.
    pub async fn set_variables(
        &self,
        name: &str,
        variables: std::collections::BTreeMap<String, String>,
        secrets: std::collections::BTreeMap<String, Option<String>>,
    ) -> Result<FunctionVariables, ApiError> {
        validate::name(name)?;
        validate::variables(&FunctionVariables {
            variables: variables.clone(),
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect(),
        })?;
        let _changes = self.changes.lock().await;
        let function = self
            .meta
            .get_function(name)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("function `{name}` does not exist")))?;
        self.state.set_variables(name, variables, secrets).await?;
        let current = self.state.variables(name).await?;
        let (prepared, proxy_id) = match self.registry.get(name) {
            Some(entry) => (entry.function.get().cloned(), entry.proxy_id.get().cloned()),
            None => (None, None),
        };
        self.install_with(&function, prepared, current.clone(), proxy_id);
        tracing::info!(function = name, "configuration changed");
        Ok(current)
    }

    /// Deletes `name` with every version, and the blobs no other function uses.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        validate::name(name)?;
        let _changes = self.changes.lock().await;
        let orphaned = self.meta.delete_function(name).await?;
        self.registry.remove(name);
        if let Err(e) = self.state.forget_variables(name).await {
            tracing::warn!(
                function = name,
                "cannot forget the configuration of a deleted function: {e}"
            );
        }
        for digest in orphaned {
            if let Err(e) = self.blobs.remove(&digest) {
                tracing::warn!(%digest, "cannot remove blobs of a deleted function: {e}");
            }
        }
        tracing::info!(function = name, "deleted");
        Ok(())
    }
}
