//! The compiled code of the wasm modules this node serves, kept in memory under a budget.
//!
//! A module's code is loaded once (memory-mapped from its compiled artifact, or compiled) and shared by
//! every version that runs it as the same kind, whatever its name: a thousand functions deployed from one
//! module cost one load. What is loaded stays within a budget of bytes (the artifacts' sizes) and of
//! modules (each maps its artifact, and the kernel caps a process's memory maps at `vm.max_map_count`);
//! past either, the modules called least recently are dropped and loaded again from disk on their next
//! call. Calls already running keep the code they started with.
//!
//! Each version keeps its own instances for `reuse` ([`wafer_engine::Instances`]), never shared with
//! another version of the same code.

use crate::error::Error;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use wafer_api::Kind;
use wafer_engine::Function;

/// How much loaded code a node keeps by default: bytes of compiled artifacts.
pub const DEFAULT_CODE_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

/// How many modules a node keeps loaded by default. Each maps its artifact in a few memory maps; this
/// stays well under the kernel's default `vm.max_map_count` (65,530) with the instance pool's own.
pub const DEFAULT_CODE_CACHE_MODULES: usize = 10_000;

/// The most loaded code a node keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeBudget {
    /// Bytes of compiled code (the artifacts' sizes).
    pub bytes: u64,
    /// Modules.
    pub modules: usize,
}

impl Default for CodeBudget {
    fn default() -> Self {
        Self {
            bytes: DEFAULT_CODE_CACHE_BYTES,
            modules: DEFAULT_CODE_CACHE_MODULES,
        }
    }
}

/// One module's place in the cache: its code once loaded, and when it was last used.
#[derive(Default)]
struct Slot {
    code: tokio::sync::OnceCell<Function>,
    /// The code's size; set, under the map's write lock, when it is counted in the totals.
    bytes: std::sync::OnceLock<u64>,
    used: AtomicU64,
}

/// Each module's slots by digest, one per kind it runs as (almost always one).
type Slots = HashMap<String, Vec<(Kind, Arc<Slot>)>>;

/// The loaded code of this node's modules (see the module docs).
pub struct CodeCache {
    budget: CodeBudget,
    slots: RwLock<Slots>,
    /// Counts uses: a slot's `used` is the count at its last use, so the smallest is the least recent.
    clock: AtomicU64,
    bytes: AtomicU64,
    modules: AtomicU64,
    evicted: AtomicU64,
}

/// What the cache holds, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeStats {
    /// Modules loaded.
    pub modules: u64,
    /// Their bytes of compiled code.
    pub bytes: u64,
    /// Modules dropped for the budget since start.
    pub evicted: u64,
}

impl CodeCache {
    /// An empty cache that keeps at most `budget`.
    pub fn new(budget: CodeBudget) -> Self {
        Self {
            budget,
            slots: RwLock::default(),
            clock: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            modules: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// The code of module `digest` as `kind`, loaded by `load` (which also returns its size in bytes)
    /// when it is not in memory; concurrent callers for one module wait for one load.
    pub async fn get_or_load<F, L>(
        &self,
        digest: &str,
        kind: Kind,
        load: L,
    ) -> Result<Function, Error>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<(Function, u64), Error>>,
    {
        let slot = self.slot(digest, kind);
        if let Some(code) = slot.code.get() {
            slot.used.store(self.tick(), Ordering::Relaxed);
            return Ok(code.clone());
        }
        let mut loaded = None;
        let code = slot
            .code
            .get_or_try_init(|| async {
                let (code, bytes) = load().await?;
                loaded = Some(bytes);
                Ok::<_, Error>(code)
            })
            .await?
            .clone();
        slot.used.store(self.tick(), Ordering::Relaxed);
        if let Some(bytes) = loaded {
            self.admit(digest, kind, &slot, bytes);
        }
        Ok(code)
    }

    /// Keeps `code` (of `bytes` bytes), just compiled or loaded at a deploy, as module `digest`'s code as
    /// its kind, unless that is in memory already.
    pub fn insert(&self, digest: &str, code: Function, bytes: u64) {
        let kind = code.kind();
        let slot = self.slot(digest, kind);
        if slot.code.set(code).is_ok() {
            slot.used.store(self.tick(), Ordering::Relaxed);
            self.admit(digest, kind, &slot, bytes);
        }
    }

    /// Puts `code` (of `bytes` bytes), a module's optimized code, in place of the baseline code it may
    /// have in memory: calls from now on run it, calls running keep what they started with.
    pub fn upgrade(&self, digest: &str, code: Function, bytes: u64) {
        let kind = code.kind();
        let slot = Arc::new(Slot::default());
        // A new slot: its code is unset.
        let _ = slot.code.set(code);
        slot.used.store(self.tick(), Ordering::Relaxed);
        {
            let mut slots = self.slots_mut();
            let kinds = slots.entry(digest.to_string()).or_default();
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, old)) => {
                    let old = std::mem::replace(old, slot.clone());
                    self.forget(&old);
                }
                None => kinds.push((kind, slot.clone())),
            }
        }
        self.admit(digest, kind, &slot, bytes);
    }

    /// Drops module `digest`'s code as every kind (its artifact is being deleted).
    pub fn remove(&self, digest: &str) {
        for (_, slot) in self.slots_mut().remove(digest).unwrap_or_default() {
            self.forget(&slot);
        }
    }

    /// Whether the cache holds as much as its budget allows (so loading more would drop some).
    pub fn is_full(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) >= self.budget.bytes
            || self.modules.load(Ordering::Relaxed) >= self.budget.modules as u64
    }

    /// What the cache holds.
    pub fn stats(&self) -> CodeStats {
        CodeStats {
            modules: self.modules.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Module `digest`'s slot as `kind`, made empty when there is none.
    fn slot(&self, digest: &str, kind: Kind) -> Arc<Slot> {
        let found = self
            .slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(digest)
            .and_then(|kinds| find(kinds, kind))
            .cloned();
        found.unwrap_or_else(|| {
            let mut slots = self.slots_mut();
            let kinds = slots.entry(digest.to_string()).or_default();
            if let Some(slot) = find(kinds, kind) {
                return slot.clone();
            }
            let slot = Arc::new(Slot::default());
            kinds.push((kind, slot.clone()));
            slot
        })
    }

    fn slots_mut(&self) -> std::sync::RwLockWriteGuard<'_, Slots> {
        self.slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a newly loaded module (unless it was removed meanwhile), then drops the least recently
    /// used others while over budget.
    fn admit(&self, digest: &str, kind: Kind, slot: &Arc<Slot>, bytes: u64) {
        let mut slots = self.slots_mut();
        let current = slots.get(digest).and_then(|kinds| find(kinds, kind));
        if !current.is_some_and(|s| Arc::ptr_eq(s, slot)) || slot.bytes.set(bytes).is_err() {
            return;
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.modules.fetch_add(1, Ordering::Relaxed);
        while self.bytes.load(Ordering::Relaxed) > self.budget.bytes
            || self.modules.load(Ordering::Relaxed) > self.budget.modules as u64
        {
            let oldest = slots
                .iter()
                .flat_map(|(d, kinds)| kinds.iter().map(move |(k, s)| (d, *k, s)))
                .filter(|(_, _, s)| !Arc::ptr_eq(s, slot) && s.bytes.get().is_some())
                .min_by_key(|(_, _, s)| s.used.load(Ordering::Relaxed))
                .map(|(d, k, _)| (d.clone(), k));
            let Some((oldest, oldest_kind)) = oldest else {
                break;
            };
            if let Some(kinds) = slots.get_mut(&oldest) {
                if let Some(i) = kinds.iter().position(|(k, _)| *k == oldest_kind) {
                    let (_, evicted) = kinds.swap_remove(i);
                    self.forget(&evicted);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
                if kinds.is_empty() {
                    slots.remove(&oldest);
                }
            }
        }
    }

    /// Takes a slot just removed from the map (under its write lock) off the totals, when it was
    /// counted.
    fn forget(&self, slot: &Slot) {
        if let Some(bytes) = slot.bytes.get() {
            self.bytes.fetch_sub(*bytes, Ordering::Relaxed);
            self.modules.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The slot of `kind` among a module's.
fn find(kinds: &[(Kind, Arc<Slot>)], kind: Kind) -> Option<&Arc<Slot>> {
    kinds.iter().find(|(k, _)| *k == kind).map(|(_, slot)| slot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use wafer_engine::{Engine, EngineOptions};

    fn engine() -> Arc<Engine> {
        Engine::new(&EngineOptions {
            pool: None,
            ..EngineOptions::default()
        })
        .expect("engine")
    }

    /// A WASI command module (kind `command` when forced, `wagi` when detected).
    fn code(engine: &Engine) -> Function {
        let wasm =
            wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
                .expect("wat");
        engine
            .compile(&wasm, Some(Kind::Command))
            .expect("compile")
            .function
    }

    /// Gets `digest` through the cache, counting the loads it needed in `loads`.
    async fn get(cache: &CodeCache, engine: &Engine, digest: &str, loads: &AtomicUsize) {
        cache
            .get_or_load(digest, Kind::Command, || async {
                loads.fetch_add(1, Ordering::Relaxed);
                Ok((code(engine), 10))
            })
            .await
            .expect("load");
    }

    #[tokio::test]
    async fn the_least_recently_used_module_goes_first_when_over_the_count() {
        let engine = engine();
        let cache = CodeCache::new(CodeBudget {
            bytes: u64::MAX,
            modules: 2,
        });
        let loads = AtomicUsize::new(0);
        get(&cache, &engine, "a", &loads).await;
        get(&cache, &engine, "b", &loads).await;
        get(&cache, &engine, "a", &loads).await;
        assert_eq!(loads.load(Ordering::Relaxed), 2, "a was loaded once");
        get(&cache, &engine, "c", &loads).await;
        let stats = cache.stats();
        assert_eq!((stats.modules, stats.bytes, stats.evicted), (2, 20, 1));
        assert!(cache.is_full());
        // b went, not a (used after b): a is still there, b is loaded again.
        get(&cache, &engine, "a", &loads).await;
        assert_eq!(loads.load(Ordering::Relaxed), 3);
        get(&cache, &engine, "b", &loads).await;
        assert_eq!(loads.load(Ordering::Relaxed), 4);
        assert_eq!(cache.stats().evicted, 2);
    }

    #[tokio::test]
    async fn the_byte_budget_bounds_it_too_but_keeps_the_module_just_loaded() {
        let engine = engine();
        let cache = CodeCache::new(CodeBudget {
            bytes: 15,
            modules: 100,
        });
        cache.insert("a", code(&engine), 10);
        cache.insert("b", code(&engine), 10);
        let stats = cache.stats();
        assert_eq!((stats.modules, stats.bytes, stats.evicted), (1, 10, 1));
        // A module larger than the whole budget is still kept while it is the only one.
        cache.insert("big", code(&engine), 100);
        let stats = cache.stats();
        assert_eq!((stats.modules, stats.bytes), (1, 100));
    }

    #[tokio::test]
    async fn concurrent_first_calls_load_once_and_a_failed_load_is_tried_again() {
        let engine = engine();
        let cache = CodeCache::new(CodeBudget::default());
        let loads = AtomicUsize::new(0);
        let slow = || async {
            loads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Ok((code(&engine), 10))
        };
        let (a, b) = tokio::join!(
            cache.get_or_load("a", Kind::Command, slow),
            cache.get_or_load("a", Kind::Command, slow)
        );
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(loads.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats().modules, 1);

        let failed = cache
            .get_or_load("gone", Kind::Command, || async {
                Err(Error::Internal("no artifact".into()))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.stats().modules, 1, "a failed load is not counted");
        get(&cache, &engine, "gone", &loads).await;
        assert_eq!(cache.stats().modules, 2);
    }

    #[tokio::test]
    async fn optimized_code_takes_the_place_of_baseline_code_and_is_not_replaced_back() {
        let engine = engine();
        let cache = CodeCache::new(CodeBudget::default());
        let loads = AtomicUsize::new(0);
        get(&cache, &engine, "a", &loads).await;
        cache.upgrade("a", code(&engine), 30);
        assert_eq!((cache.stats().modules, cache.stats().bytes), (1, 30));
        // What a deploy inserts after the upgrade (its baseline code) stays out; calls load nothing.
        cache.insert("a", code(&engine), 10);
        get(&cache, &engine, "a", &loads).await;
        assert_eq!(loads.load(Ordering::Relaxed), 1);
        assert_eq!((cache.stats().modules, cache.stats().bytes), (1, 30));
        // A module not in memory (evicted, or its deploy not yet stored) is put in by the upgrade.
        cache.upgrade("b", code(&engine), 20);
        assert_eq!((cache.stats().modules, cache.stats().bytes), (2, 50));
        cache.remove("a");
        cache.remove("b");
        assert_eq!((cache.stats().modules, cache.stats().bytes), (0, 0));
    }

    #[tokio::test]
    async fn removing_a_module_drops_its_code_as_every_kind() {
        let engine = engine();
        let cache = CodeCache::new(CodeBudget::default());
        let loads = AtomicUsize::new(0);
        get(&cache, &engine, "a", &loads).await;
        cache.insert("a", code(&engine), 10);
        assert_eq!(
            cache.stats().modules,
            1,
            "inserting what is there keeps one"
        );
        cache.remove("a");
        assert_eq!(
            cache.stats(),
            CodeStats {
                modules: 0,
                bytes: 0,
                evicted: 0
            }
        );
        get(&cache, &engine, "a", &loads).await;
        assert_eq!(loads.load(Ordering::Relaxed), 2);
    }
}
