//! The live registry's build-up: how a stored version becomes a callable [`Entry`] — its settings (by
//! the engine's one rule from its config), its limits and schedule, its routes (never one wafer
//! reserves) — and how its runnable form is had: a wasm module's code from the node's code cache
//! (`code.rs`), loaded from its compiled artifact or compiled again from its module bytes when it is not
//! there; a container's function once its image is in containerd.

use super::App;
use crate::containers::ContainerFunction;
use crate::error::Error;
use crate::registry::{Entry, Release, Runner};
use crate::{journal, validate};
use bytes::Bytes;
use std::sync::Arc;
use wafer_api::{FunctionConfig, FunctionInfo, Kind};
use wafer_engine::{CompileError, Function, PlatformHandle, Settings, Variables};
use wafer_store::{FunctionVariables, StoredFunction, StoredVersion};

/// Attempts an async or cron execution gets unless its function sets `max_attempts`.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The first retry's wait unless a function sets `retry_backoff_ms`.
const DEFAULT_RETRY_BACKOFF_MS: u64 = 1000;

impl App {
    /// Registers the live version of every stored function. Nothing is loaded yet: each is loaded on its
    /// first call or by the background loader, so the server answers at once however many there are.
    pub(super) async fn load_all(&self) -> Result<(), super::StartError> {
        let mut variables = self.state.all_variables().await?;
        let functions = self.meta.list_functions().await?;
        self.registry.reserve(functions.len());
        for function in functions {
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

    /// The runnable function of a version: a wasm version's code from the node's code cache (loaded
    /// from its compiled artifact, or compiled again when that is missing or from another engine build,
    /// the first time it is needed or after it was evicted), a container version's function once its
    /// image is in containerd.
    pub async fn function(&self, entry: &Entry) -> Result<Runner, Error> {
        let runner = self.runner(entry).await.inspect_err(
            |e| tracing::error!(function = %entry.settings.name, "cannot load the version: {e:?}"),
        )?;
        let live = || {
            self.registry
                .get(&entry.settings.name)
                .is_some_and(|live| live.version == entry.version)
        };
        // Only the live version answers to its proxy-wasm id.
        if let Some(function) = runner
            .wasm()
            .filter(|_| entry.kind == Kind::ProxyWasm && entry.proxy_id.get().is_none() && live())
        {
            self.proxy_id(entry, function).await;
        }
        Ok(runner)
    }

    /// [`App::function`] without its logging and proxy-wasm id.
    async fn runner(&self, entry: &Entry) -> Result<Runner, Error> {
        if entry.kind == Kind::Container {
            let container = entry
                .container
                .get_or_try_init(|| async {
                    self.files_of(entry.files.as_deref()).await?;
                    let module = Bytes::from(self.meta.module(&entry.digest).await?);
                    ContainerFunction::load(
                        &self.containers,
                        module,
                        &entry.config,
                        &entry.settings,
                    )
                    .await
                })
                .await?;
            return Ok(Runner::Container(container.clone()));
        }
        entry
            .files_ready
            .get_or_try_init(|| self.files_of(entry.files.as_deref()))
            .await?;
        let code = self.code_of(&entry.digest, entry.kind).await?;
        Ok(Runner::Wasm(if entry.settings.reuse > 1 {
            code.with_instances(entry.instances.get_or_init(|| self.engine.instances()))
        } else {
            code
        }))
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

    /// The live function named `name`; one this node has not heard of yet is looked for in the change
    /// feed first ([`App::catch_up`]).
    pub async fn named(&self, name: &str) -> Option<Arc<Entry>> {
        if let Some(entry) = self.registry.get(name) {
            return Some(entry);
        }
        self.catch_up().await;
        self.registry.get(name)
    }

    /// The function whose route holds `path`, with the route; as with [`App::named`], a path no route
    /// holds yet is looked for in the change feed first.
    pub async fn routed(&self, path: &str) -> Option<(String, Arc<Entry>)> {
        // A path wafer keeps for itself is never a function's, not even the root catch-all's.
        if crate::validate::reserved(path).is_some() {
            return None;
        }
        if let Some(found) = self.registry.route(path) {
            return Some(found);
        }
        self.catch_up().await;
        self.registry.route(path)
    }

    /// The live function named `target`, or the proxy-wasm function whose id it is (reading the ids of
    /// proxy-wasm functions not loaded yet, if need be).
    pub async fn resolve(&self, target: &str) -> Option<Arc<Entry>> {
        match self.named(target).await {
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

    /// What every invocation of a version gets: the engine's rule applied to its config under the
    /// server's defaults, with its configuration and the platform. Components read their configuration
    /// through `wasi:config/store`; core modules, which cannot import it, get it as environment variables
    /// (their own `env` wins).
    pub(super) fn settings(
        &self,
        name: &str,
        kind: Kind,
        config: &FunctionConfig,
        variables: FunctionVariables,
    ) -> Settings {
        let mut merged = variables.variables;
        merged.extend(variables.secrets);
        let base = || {
            merged
                .iter()
                .filter(|_| kind != Kind::Http)
                .map(|(k, v)| (k.clone(), v.clone()))
        };
        let defaults = &self.config.defaults.function;
        let mut settings = defaults.settings(name, config, base()).unwrap_or_else(|e| {
            // Validated at deploy; a stored entry that no longer parses grants nothing.
            tracing::error!(function = name, "outbound hosts ignored: {e}");
            let config = FunctionConfig {
                allowed_outbound_hosts: Vec::new(),
                ..config.clone()
            };
            defaults.settings(name, &config, base()).unwrap_or_default()
        });
        settings.variables = Variables::new(merged);
        settings.platform = PlatformHandle(Some(self.platform.clone()));
        settings
    }

    /// [`App::settings`] of a stored version, with its read-only files where this node unpacks them.
    pub(super) fn version_settings(
        &self,
        stored: &StoredVersion,
        variables: FunctionVariables,
    ) -> Settings {
        let mut settings = self.settings(&stored.name, stored.kind, &stored.config, variables);
        settings.files = stored
            .files
            .as_deref()
            .and_then(|digest| self.files.path(digest).ok());
        settings
    }

    /// The API view of a stored function, with the limits it runs under.
    pub fn info(&self, function: &StoredFunction) -> FunctionInfo {
        FunctionInfo {
            limits: self.config.defaults.effective(&function.live.config),
            ..function.to_info()
        }
    }

    /// Makes the live version of `function` callable, with its container function when it is at hand.
    pub(super) fn install(
        &self,
        function: &StoredFunction,
        container: Option<Arc<ContainerFunction>>,
        variables: FunctionVariables,
    ) {
        self.install_with(function, container, variables, None);
    }

    /// [`App::install`], with the proxy-wasm id when it is known already. A route wafer reserves (one a
    /// version stored before that path was reserved may hold) is logged and not mounted, so it never
    /// shadows wafer's own.
    pub(super) fn install_with(
        &self,
        function: &StoredFunction,
        container: Option<Arc<ContainerFunction>>,
        variables: FunctionVariables,
        proxy_id: Option<Option<String>>,
    ) {
        let live = &function.live;
        let routes: Vec<String> = live
            .config
            .routes
            .iter()
            .filter(|route| match validate::reserved(route) {
                Some(prefix) => {
                    tracing::error!(function = %live.name, %route, "route not mounted: {prefix} is reserved by wafer");
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        let entry = self.entry(live, &function.updated_at, container, variables, proxy_id);
        let id = entry.proxy_id.get().cloned().flatten();
        let release = Release::new(function.aliases.clone(), function.latest_version);
        self.registry.install(&live.name, entry, &routes, release);
        if let Some(id) = id {
            if let Err(owner) = self.registry.set_id(&live.name, &id) {
                tracing::warn!(function = %live.name, id, owner, "proxy-wasm id already taken");
            }
        }
    }

    /// The callable form of `stored` (the live version, or one a call named), with its container
    /// function when it is at hand; its schedule counts from `updated_at`, when the live version last
    /// changed.
    pub(super) fn entry(
        &self,
        stored: &StoredVersion,
        updated_at: &str,
        container: Option<Arc<ContainerFunction>>,
        variables: FunctionVariables,
        proxy_id: Option<Option<String>>,
    ) -> Entry {
        Entry {
            container: tokio::sync::OnceCell::new_with(container),
            instances: std::sync::OnceLock::new(),
            files_ready: tokio::sync::OnceCell::new(),
            proxy_id: tokio::sync::OnceCell::new_with(proxy_id),
            kind: stored.kind,
            digest: stored.digest.clone(),
            files: stored.files.clone(),
            config: stored.config.clone(),
            settings: self.version_settings(stored, variables.clone()),
            variables,
            private: stored.config.private,
            max_request_bytes: usize::try_from(
                self.config
                    .defaults
                    .effective(&stored.config)
                    .max_request_bytes,
            )
            .unwrap_or(usize::MAX),
            // A container server's bound covers all its instances; `port` is a container's only.
            slots: crate::containers::slots(&stored.config)
                .or(stored.config.max_concurrency)
                .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize))),
            version: stored.version,
            max_attempts: stored.config.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            retry_backoff: std::time::Duration::from_millis(
                stored
                    .config
                    .retry_backoff_ms
                    .unwrap_or(DEFAULT_RETRY_BACKOFF_MS),
            ),
            cold: std::sync::atomic::AtomicBool::new(true),
            schedule: stored.config.schedule.as_deref().and_then(|expr| {
                let since = chrono::DateTime::parse_from_rfc3339(updated_at)
                    .map_or_else(|_| journal::now_ms(), |t| t.timestamp_millis());
                // Validated at deploy; a stored expression that no longer parses schedules nothing.
                wafer_formats::cron::parse(expr)
                    .inspect_err(
                        |e| tracing::error!(function = %stored.name, "schedule ignored: {e}"),
                    )
                    .ok()
                    .map(|schedule| (schedule, since))
            }),
        }
    }

    /// Readies a stored version to run, so its first call does not wait: its files bundle unpacked on
    /// this node and, for a wasm version, its module's code in the code cache (see [`App::code_of`]).
    /// A container version's function, with its image imported into containerd from the stored tarball,
    /// is returned for its entry.
    pub(super) async fn prepare(
        &self,
        digest: &str,
        files: Option<&str>,
        kind: Kind,
        config: &FunctionConfig,
        settings: &Settings,
    ) -> Result<Option<Arc<ContainerFunction>>, Error> {
        self.files_of(files).await?;
        if kind == Kind::Container {
            let module = Bytes::from(self.meta.module(digest).await?);
            let function =
                ContainerFunction::load(&self.containers, module, config, settings).await?;
            return Ok(Some(function));
        }
        self.code_of(digest, kind).await?;
        Ok(None)
    }

    /// Module `digest`'s code as `kind`, from the code cache, loaded into it when it is not there.
    async fn code_of(&self, digest: &str, kind: Kind) -> Result<Function, Error> {
        self.code
            .get_or_load(digest, kind, || async {
                let (function, bytes, kept) =
                    self.load_or_compile(digest, None, Some(kind)).await?;
                self.keep(digest, kind, kept).await?;
                Ok((function, bytes))
            })
            .await
    }

    /// Keeps what a load or compile of module `digest` (run as `kind`) left, once a stored version runs
    /// it: an artifact goes to this node's disk, baseline code to the queue of optimizing compiles.
    pub(super) async fn keep(&self, digest: &str, kind: Kind, kept: Kept) -> Result<(), Error> {
        match kept {
            Kept::Nothing => {}
            Kept::Artifact(artifact) => self.keep_artifact(digest, artifact).await?,
            Kept::Baseline(module) => self.tier_ups.queue(digest, kind, module),
        }
        Ok(())
    }

    /// Unpacks files bundle `digest`, when there is one and this node does not have it yet.
    async fn files_of(&self, digest: Option<&str>) -> Result<(), Error> {
        if let Some(digest) = digest {
            if !self.files.contains(digest) {
                let bundle = Bytes::from(self.meta.module(digest).await?);
                self.unpack_files(digest, bundle).await?;
            }
        }
        Ok(())
    }

    /// Unpacks files bundle `digest` on this node's disk (a no-op when it is there already).
    pub(super) async fn unpack_files(&self, digest: &str, bundle: Bytes) -> Result<(), Error> {
        let (files, digest) = (self.files.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || files.unpack(&digest, &bundle))
            .await
            .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))??;
        Ok(())
    }

    /// Writes a freshly compiled artifact of module `digest` to this node's disk.
    pub(super) async fn keep_artifact(&self, digest: &str, artifact: Vec<u8>) -> Result<(), Error> {
        let (artifacts, digest) = (self.artifacts.clone(), digest.to_string());
        let fingerprint = self.engine.fingerprint().to_string();
        tokio::task::spawn_blocking(move || artifacts.put(&digest, &fingerprint, &artifact))
            .await
            .map_err(|e| Error::Internal(format!("write task failed: {e}")))??;
        Ok(())
    }

    /// The function of module `digest` with the size of its code: its stored artifact for this engine
    /// when there is one (the same bytes deployed before, under any name), otherwise compiled from
    /// `module` (or, when `None`, the stored module) by the baseline compiler when it is small enough,
    /// else by the optimizing one; with what to [`App::keep`]. Either way `kind`, when given, is
    /// checked.
    pub(super) async fn load_or_compile(
        &self,
        digest: &str,
        module: Option<Bytes>,
        kind: Option<Kind>,
    ) -> Result<(Function, u64, Kept), Error> {
        let artifact = self.artifacts.path(digest, self.engine.fingerprint());
        let engine = self.engine.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let Ok(metadata) = std::fs::metadata(&artifact) else {
                return Ok(None);
            };
            match engine.load(&artifact, kind) {
                Ok(function) => Ok(Some((function, metadata.len()))),
                Err(CompileError::Unsupported(reason)) => Err(CompileError::Unsupported(reason)),
                Err(e) => {
                    tracing::warn!(artifact = %artifact.display(), "stored artifact unusable, compiling: {e}");
                    Ok(None)
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("load task failed: {e}")))??;
        if let Some((function, bytes)) = loaded {
            return Ok((function, bytes, Kept::Nothing));
        }
        let module = match module {
            Some(module) => module,
            None => Bytes::from(self.meta.module(digest).await?),
        };
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let (compiled, optimized) = tokio::task::spawn_blocking(move || {
            if let Some(baseline) = engine.compile_baseline(&module, kind)? {
                let kept = Kept::Baseline(module);
                return Ok(((baseline.function, baseline.bytes, kept), false));
            }
            let compiled = engine.compile(&module, kind)?;
            let bytes = compiled.artifact.len() as u64;
            let kept = Kept::Artifact(compiled.artifact);
            Ok::<_, CompileError>(((compiled.function, bytes, kept), true))
        })
        .await
        .map_err(|e| Error::Internal(format!("compile task failed: {e}")))??;
        if optimized {
            self.metrics.compile(started.elapsed());
        }
        Ok(compiled)
    }
}

/// What a load or compile leaves to keep once a stored version runs the module (see [`App::keep`]).
pub(super) enum Kept {
    /// Nothing: the code was loaded from this node's artifact.
    Nothing,
    /// The artifact of an optimizing compile, for this node's disk.
    Artifact(Vec<u8>),
    /// The module, whose code is the baseline compiler's, for its optimizing compile.
    Baseline(Bytes),
}
