//! The in-memory map from names and routes to live, pre-instantiated function versions, with each
//! function's aliases and the other versions calls have named.
//!
//! Reads are on the request path, so they take a read lock only long enough to clone an `Arc`; writes
//! (deploy, rollback, alias changes, delete) are rare and come through [`crate::app::App`], which
//! persists them first.

use crate::containers::ContainerFunction;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use wafer_api::{Alias, Kind, LIVE};
use wafer_engine::{Function, Settings};

/// A live function version.
pub struct Entry {
    /// A container version's function, once its image is in containerd (a wasm version's code is in
    /// the node's [`crate::code::CodeCache`], by module).
    pub container: tokio::sync::OnceCell<Arc<ContainerFunction>>,
    /// The instances a wasm version that sets `reuse` keeps, made on its first call.
    pub instances: std::sync::OnceLock<wafer_engine::Instances>,
    /// Set once the version's read-only files are known to be unpacked on this node.
    pub files_ready: tokio::sync::OnceCell<()>,
    /// The kind of the version.
    pub kind: Kind,
    /// The digest of the version's module.
    pub digest: String,
    /// The digest of its read-only files' bundle, when it has files.
    pub files: Option<String>,
    /// The configuration the version was deployed with.
    pub config: wafer_api::FunctionConfig,
    /// What each invocation gets: name, env, limits.
    pub settings: Settings,
    /// The configuration variables and secrets the settings were built with, to tell whether a change
    /// another node made is one this entry already has.
    pub variables: wafer_store::FunctionVariables,
    /// Whether callers need the server's token.
    pub private: bool,
    /// The largest request body it is handed.
    pub max_request_bytes: usize,
    /// The function's concurrency slots, when it sets `max_concurrency`.
    pub slots: Option<Arc<tokio::sync::Semaphore>>,
    /// The live version's number.
    pub version: u32,
    /// Attempts an async or cron execution gets.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each further attempt.
    pub retry_backoff: std::time::Duration,
    /// The function's cron schedule, with the time (ms) since which it counts: when the live version
    /// last changed.
    pub schedule: Option<(cron::Schedule, i64)>,
    /// Whether the version has not been called yet since it was loaded (its first call is a cold start).
    pub cold: std::sync::atomic::AtomicBool,
    /// A proxy-wasm version's own id (from `proxy_get_id`), once it has been read.
    pub proxy_id: tokio::sync::OnceCell<Option<String>>,
}

/// A live version's runnable form: a compiled wasm function, or a container function's image and
/// pool.
#[derive(Clone)]
pub enum Runner {
    /// A wasm kind, run by the engine.
    Wasm(Function),
    /// Kind `container`, run by containerd and runc.
    Container(Arc<ContainerFunction>),
}

impl Runner {
    /// The kind it runs as.
    pub fn kind(&self) -> Kind {
        match self {
            Runner::Wasm(function) => function.kind(),
            Runner::Container(_) => Kind::Container,
        }
    }

    /// The wasm function, when it is one.
    pub fn wasm(&self) -> Option<&Function> {
        match self {
            Runner::Wasm(function) => Some(function),
            Runner::Container(_) => None,
        }
    }
}

/// A function's aliases, and the versions besides the live one that calls have named (loaded on
/// the first such call, dropped with the release when anything about the function changes).
#[derive(Default)]
pub struct Release {
    /// Every alias by name, `live` among them.
    pub aliases: BTreeMap<String, Alias>,
    /// The newest version: no call may name a later one.
    pub latest: u32,
    /// Whether calls with no qualifier all go to the live version (`live` has no weight above 0),
    /// decided once: every call asks.
    live_is_whole: bool,
    versions: Mutex<HashMap<u32, Arc<Entry>>>,
}

impl Release {
    /// A release with `aliases`, whose newest version is `latest`.
    pub fn new(aliases: BTreeMap<String, Alias>, latest: u32) -> Self {
        let live_is_whole = aliases
            .get(LIVE)
            .is_none_or(|live| live.weights.values().all(|w| *w == 0.0));
        Self {
            aliases,
            latest,
            live_is_whole,
            versions: Mutex::default(),
        }
    }

    /// Whether calls with no qualifier all go to the live version.
    pub fn live_is_whole(&self) -> bool {
        self.live_is_whole
    }

    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Entry>>> {
        self.versions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Version `version`, when a call has loaded it.
    pub fn version(&self, version: u32) -> Option<Arc<Entry>> {
        self.versions().get(&version).cloned()
    }

    /// Keeps `entry` for the next calls of its version; the one kept first wins.
    pub fn keep(&self, entry: Entry) -> Arc<Entry> {
        self.versions()
            .entry(entry.version)
            .or_insert_with(|| Arc::new(entry))
            .clone()
    }
}

#[derive(Default)]
struct Inner {
    functions: HashMap<String, Arc<Entry>>,
    releases: HashMap<String, Arc<Release>>,
    /// Route prefixes to the functions mounted there.
    routes: HashMap<String, String>,
    /// Each function's routes.
    routes_of: HashMap<String, Vec<String>>,
    /// Proxy-wasm ids to the functions that gave them.
    ids: HashMap<String, String>,
    /// Each function's proxy-wasm id.
    id_of: HashMap<String, String>,
}

impl Inner {
    fn unmount(&mut self, name: &str) {
        for route in self.routes_of.remove(name).unwrap_or_default() {
            if self.routes.get(&route).is_some_and(|owner| owner == name) {
                self.routes.remove(&route);
            }
        }
    }

    fn forget_id(&mut self, name: &str) {
        if let Some(id) = self.id_of.remove(name) {
            self.ids.remove(&id);
        }
    }
}

/// Live functions by name and by route.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.read().functions.get(name).cloned()
    }

    /// The function mounted at the longest route that covers `path` (the route itself or below it), with
    /// that route. Routes are normalised at deploy (no trailing `/` but the root's), so the candidates
    /// are the path and each of its prefixes that ends before a `/`, longest first.
    pub fn route(&self, path: &str) -> Option<(String, Arc<Entry>)> {
        let inner = self.read();
        if inner.routes.is_empty() {
            return None;
        }
        candidates(path).find_map(|prefix| {
            let name = inner.routes.get(prefix)?;
            let entry = inner.functions.get(name)?;
            Some((prefix.to_string(), entry.clone()))
        })
    }

    /// The live function that gave itself proxy-wasm id `id`.
    pub fn by_id(&self, id: &str) -> Option<Arc<Entry>> {
        let inner = self.read();
        inner
            .ids
            .get(id)
            .and_then(|name| inner.functions.get(name))
            .cloned()
    }

    /// What the live version of `name` knows of its proxy-wasm id, for the entry that replaces it with
    /// the same module: `Some(id)` once it has been read, `None` when it has not (or there is none).
    pub fn known_proxy_id(&self, name: &str) -> Option<Option<String>> {
        self.get(name)
            .and_then(|entry| entry.proxy_id.get().cloned())
    }

    /// The function that holds proxy-wasm id `id`, if another than `name` does.
    pub fn id_owner(&self, id: &str, name: &str) -> Option<String> {
        self.read()
            .ids
            .get(id)
            .filter(|owner| *owner != name)
            .cloned()
    }

    /// Makes `id` address function `name`, unless another function holds it (whose name is returned).
    pub fn set_id(&self, name: &str, id: &str) -> Result<(), String> {
        let mut inner = self.write();
        if let Some(owner) = inner.ids.get(id).filter(|owner| *owner != name) {
            return Err(owner.clone());
        }
        inner.forget_id(name);
        inner.ids.insert(id.to_string(), name.to_string());
        inner.id_of.insert(name.to_string(), id.to_string());
        Ok(())
    }

    /// The aliases of `name`, and the other versions its calls have loaded.
    pub fn release(&self, name: &str) -> Option<Arc<Release>> {
        self.read().releases.get(name).cloned()
    }

    /// Makes room for `n` more functions (before registering many at once).
    pub fn reserve(&self, n: usize) {
        let mut inner = self.write();
        inner.functions.reserve(n);
        inner.releases.reserve(n);
    }

    /// Makes `entry` the live version of `name`, mounted at `routes`, with `release`'s aliases.
    pub fn install(&self, name: &str, entry: Entry, routes: &[String], release: Release) {
        let mut inner = self.write();
        inner.releases.insert(name.to_string(), Arc::new(release));
        let keeps_id = entry.proxy_id.get().cloned().flatten();
        if inner.id_of.get(name) != keeps_id.as_ref() {
            inner.forget_id(name);
        }
        inner.functions.insert(name.to_string(), Arc::new(entry));
        inner.unmount(name);
        for route in routes {
            inner.routes.insert(route.clone(), name.to_string());
        }
        if !routes.is_empty() {
            inner.routes_of.insert(name.to_string(), routes.to_vec());
        }
    }

    /// Forgets `name` and its routes; whether it was there.
    pub fn remove(&self, name: &str) -> bool {
        let mut inner = self.write();
        let removed = inner.functions.remove(name).is_some();
        inner.releases.remove(name);
        inner.unmount(name);
        inner.forget_id(name);
        removed
    }

    /// The names of every live function.
    pub fn names(&self) -> Vec<String> {
        self.read().functions.keys().cloned().collect()
    }

    /// Every live function.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.read().functions.values().cloned().collect()
    }

    /// The live functions that have a schedule.
    pub fn scheduled(&self) -> Vec<Arc<Entry>> {
        self.read()
            .functions
            .values()
            .filter(|entry| entry.schedule.is_some())
            .cloned()
            .collect()
    }

    /// How many functions are live.
    pub fn len(&self) -> usize {
        self.read().functions.len()
    }
}

/// The routes that would cover `path`, longest first: the path itself, each of its prefixes that ends
/// before a `/`, and the root.
fn candidates(path: &str) -> impl Iterator<Item = &str> {
    let cuts = path.rmatch_indices('/').map(|(i, _)| i).filter(|i| *i > 0);
    std::iter::once(path)
        .chain(cuts.map(|i| &path[..i]))
        .chain(std::iter::once("/"))
}

/// Whether a route prefix covers a request path: the path is the prefix or lies below it.
#[cfg(test)]
fn covers(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{candidates, covers};

    #[test]
    fn a_route_covers_itself_and_its_subpaths_only() {
        assert!(covers("/api", "/api"));
        assert!(covers("/api", "/api/x/y"));
        assert!(!covers("/api", "/apix"));
        assert!(!covers("/api", "/"));
        assert!(covers("/", "/") && covers("/", "/anything/below"));
    }

    #[test]
    fn the_first_candidate_mounted_is_the_longest_route_that_covers_the_path() {
        let mounted = ["/", "/api", "/api/v2", "/apix", "/a/b/c"];
        for path in [
            "/",
            "/api",
            "/api/",
            "/api/v2",
            "/api/v2/x",
            "/api/v3",
            "/apix/1",
            "/apixy",
            "/a/b",
            "/a/b/c/d",
            "/x//y",
            "//",
        ] {
            let walked = candidates(path).find(|c| mounted.contains(c));
            let longest = mounted
                .iter()
                .filter(|prefix| covers(prefix, path))
                .max_by_key(|prefix| prefix.len())
                .copied();
            assert_eq!(walked, longest, "{path}");
        }
    }
}
