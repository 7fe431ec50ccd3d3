//! The compile cache: Cranelift's machine code for single wasm functions, kept on disk and reused when
//! another binary holds the same function.
//!
//! Binaries from one toolchain share most of their code: every C module links the same libc functions,
//! every componentize-py component holds the same libpython, every componentize-js one the same
//! JavaScript engine. A new version of a function usually changes a few of its functions and keeps the
//! rest. Cranelift keys each function's machine code by its intermediate form (the body, the engine's
//! settings and the target, but not the indices of the functions it calls, which are patched in). Every
//! function is still translated to that form, about a third of a compile; the rest is done only for
//! functions no earlier compile on this node had.
//!
//! Entries live in one SQLite file (`compile-cache.db` in the data directory), written in one transaction
//! per compile, in the background (the next compile waits for it), so an entry is whole or absent even
//! after a crash. Each entry carries Cranelift's version, checked before use, so a new build of wafer
//! misses the old entries rather than misreading them; they age out like the rest. The cache is bounded
//! in bytes: past its budget, the entries used least recently (counted in compiles) are deleted. The
//! cache only saves time: when it cannot be read or written, compiles go on without it.

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How long a cache connection waits for another one's write before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What eviction brings the cache down to, as a fraction of its budget, so one compile past the
/// budget does not make every later one evict again.
const EVICT_TO: f64 = 0.9;

/// How many commits an entry's `used` may lag behind before a use records it again: least recently
/// used is kept to that precision, and a compile that reuses thousands of recent entries writes nothing.
const TOUCH_AFTER: i64 = 32;

/// Compiled functions by Cranelift's cache key, on disk. Share one per data directory.
#[derive(Debug)]
pub struct CompileCache {
    /// Read-only connections for the compiler threads, taken and given back by each lookup.
    readers: Mutex<Vec<Connection>>,
    pending: Mutex<Pending>,
    shared: Arc<Shared>,
    /// The commit being written in the background, if any.
    writing: Mutex<Option<std::thread::JoinHandle<()>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What the next commit writes.
#[derive(Debug, Default)]
struct Pending {
    /// New entries since the last commit.
    inserted: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys of entries used since the last commit whose `used` is [`TOUCH_AFTER`] commits old.
    used: Vec<Vec<u8>>,
}

/// What the background writer shares with the cache.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    budget: u64,
    /// Bytes of compiled code the cache holds.
    bytes: AtomicU64,
    /// The commit count: an entry's `used` is the commit that last inserted or used it.
    clock: AtomicI64,
    conn: Mutex<Connection>,
}

/// Counters of the compile cache since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompileCacheStats {
    /// Functions whose compiled code came from the cache.
    pub hits: u64,
    /// Functions compiled because the cache did not have them.
    pub misses: u64,
    /// Bytes of compiled code the cache holds.
    pub bytes: u64,
}

/// Why the compile cache could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the compile cache {path}: {source}")]
pub struct CompileCacheError {
    path: String,
    source: rusqlite::Error,
}

impl CompileCache {
    /// The budget a node gives its compile cache unless told otherwise (`--compile-cache-size`).
    pub const DEFAULT_BUDGET: u64 = 1 << 30;

    /// Opens (or creates) the cache file at `path`, holding at most `budget` bytes of compiled code.
    pub fn open(path: &Path, budget: u64) -> Result<Self, CompileCacheError> {
        let fail = |source| CompileCacheError {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        // auto_vacuum only takes effect before the first table exists; it lets eviction hand pages back.
        // The code comes last in a row and the index covers `used` and `size`, so the sums at start and
        // eviction read the index, never the code's overflow pages.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS entries (
                 key BLOB PRIMARY KEY,
                 size INTEGER NOT NULL,
                 used INTEGER NOT NULL,
                 code BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS entries_used ON entries (used, size);",
        )
        .map_err(fail)?;
        let (bytes, clock): (i64, i64) = conn
            .query_row(
                "SELECT COALESCE(SUM(size), 0), COALESCE(MAX(used), 0) FROM entries",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        Ok(Self {
            readers: Mutex::default(),
            pending: Mutex::default(),
            shared: Arc::new(Shared {
                path: path.to_owned(),
                budget,
                bytes: AtomicU64::new(u64::try_from(bytes).unwrap_or(0)),
                clock: AtomicI64::new(clock),
                conn: Mutex::new(conn),
            }),
            writing: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// [`CompileCache::open`] for an engine to share, or `None` with a warning: compiles then go on
    /// without a cache.
    pub fn open_or_warn(path: &Path, budget: u64) -> Option<Arc<Self>> {
        Self::open(path, budget)
            .inspect_err(|e| tracing::warn!("{e}; compiling without it"))
            .ok()
            .map(Arc::new)
    }

    /// Counters since start.
    pub fn stats(&self) -> CompileCacheStats {
        CompileCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
        }
    }

    /// Writes the entries compiled and the uses seen since the last commit, in one transaction and in
    /// the background, then evicts past the budget. Call it once a compile has finished: the compiled
    /// function need not wait for its cache entries.
    pub(crate) fn commit(&self) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.inserted.is_empty() && pending.used.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let mut writing = lock(&self.writing);
        let previous = writing.take();
        let spawned = std::thread::Builder::new()
            .name("wafer-compile-cache".into())
            .spawn(move || {
                // Commits are written in the order they were made.
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
                shared.write(pending);
            });
        match spawned {
            Ok(handle) => *writing = Some(handle),
            Err(e) => {
                tracing::warn!("compile cache: cannot start its writer, dropping entries: {e}")
            }
        }
    }

    /// Waits for the last commit to be written, so a compile finds everything compiled before it.
    pub(crate) fn settle(&self) {
        let writing = lock(&self.writing).take();
        if let Some(writing) = writing {
            let _ = writing.join();
        }
    }

    fn lookup(&self, key: &[u8]) -> rusqlite::Result<Option<(Vec<u8>, i64)>> {
        let taken = lock(&self.readers).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.shared.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                conn
            }
        };
        let found = conn
            .prepare_cached("SELECT code, used FROM entries WHERE key = ?1")?
            .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional();
        lock(&self.readers).push(conn);
        found
    }
}

impl Drop for CompileCache {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Shared {
    /// Writes one commit and evicts past the budget; a failure loses only these entries.
    fn write(&self, pending: Pending) {
        let started = std::time::Instant::now();
        let entries = pending.inserted.len();
        let mut conn = lock(&self.conn);
        let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let written = insert(&mut conn, pending, clock).and_then(|added| {
            tracing::debug!(entries, added, took = ?started.elapsed(), "compile cache written");
            let bytes = self.bytes.fetch_add(added, Ordering::Relaxed) + added;
            if bytes > self.budget {
                let left = evict(&conn, bytes, (self.budget as f64 * EVICT_TO) as u64)?;
                self.bytes.store(left, Ordering::Relaxed);
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(
                "compile cache {}: cannot write, going on without these entries: {e}",
                self.path.display()
            );
        }
    }
}

/// Writes `pending` as commit `clock` in one transaction; returns the bytes it added.
fn insert(conn: &mut Connection, pending: Pending, clock: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let mut added = 0u64;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO entries (key, code, size, used) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO NOTHING",
        )?;
        let mut touch = tx.prepare_cached("UPDATE entries SET used = ?2 WHERE key = ?1")?;
        for (key, code) in &pending.inserted {
            // A key compiled twice between commits (two compiles at once) is stored once.
            if insert.execute(params![key, code, code.len() as i64, clock])? == 1 {
                added += code.len() as u64;
            }
        }
        for key in &pending.used {
            touch.execute(params![key, clock])?;
        }
    }
    tx.commit()?;
    Ok(added)
}

/// Deletes the entries used least recently until the cache, holding `bytes`, holds at most `target`;
/// returns what it holds then.
fn evict(conn: &Connection, bytes: u64, target: u64) -> rusqlite::Result<u64> {
    let mut excess = bytes.saturating_sub(target);
    let mut until = None;
    {
        let mut oldest =
            conn.prepare_cached("SELECT used, SUM(size) FROM entries GROUP BY used ORDER BY used")?;
        let mut rows = oldest.query([])?;
        while let Some(row) = rows.next()? {
            let (used, size): (i64, i64) = (row.get(0)?, row.get(1)?);
            until = Some(used);
            excess = excess.saturating_sub(u64::try_from(size).unwrap_or(0));
            if excess == 0 {
                break;
            }
        }
    }
    if let Some(until) = until {
        conn.execute("DELETE FROM entries WHERE used <= ?1", [until])?;
        conn.execute_batch("PRAGMA incremental_vacuum")?;
    }
    let left: i64 = conn.query_row("SELECT COALESCE(SUM(size), 0) FROM entries", [], |row| {
        row.get(0)
    })?;
    Ok(u64::try_from(left).unwrap_or(0))
}

impl wasmtime::CacheStore for CompileCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        match self.lookup(key) {
            Ok(Some((code, used))) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                if used + TOUCH_AFTER <= self.shared.clock.load(Ordering::Relaxed) {
                    lock(&self.pending).used.push(key.to_vec());
                }
                Some(Cow::Owned(code))
            }
            Ok(None) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "compile cache {}: cannot read: {e}",
                    self.shared.path.display()
                );
                None
            }
        }
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        lock(&self.pending).inserted.push((key.to_vec(), value));
        true
    }
}

/// Locks `mutex`; the data behind these locks stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, EngineOptions};
    use std::sync::Arc;
    use wasmtime::CacheStore;

    /// A WAGI module whose `_start` differs with `answer` and whose `$sum` is the same in every one.
    fn module(answer: i32) -> Vec<u8> {
        wat::parse_str(format!(
            r#"(module
                (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                (memory (export "memory") 1)
                (func $sum (param $n i32) (result i32) (local $total i32)
                    (block $done (loop $next
                        (br_if $done (i32.eqz (local.get $n)))
                        (local.set $total (i32.add (local.get $total) (local.get $n)))
                        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                        (br $next)))
                    (local.get $total))
                (func (export "_start") (call $exit (call $sum (i32.const {answer})))))"#
        ))
        .unwrap()
    }

    fn engine(cache: &Arc<CompileCache>) -> Arc<Engine> {
        Engine::new(&EngineOptions {
            pool: None,
            compile_cache: Some(cache.clone()),
            ..EngineOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn a_function_compiled_once_is_taken_from_the_cache_by_later_compiles_and_processes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compile-cache.db");
        let cache = Arc::new(CompileCache::open(&path, 1 << 30).unwrap());
        let engine = engine(&cache);
        engine.compile(&module(1), None).unwrap();
        cache.settle();
        let first = cache.stats();
        assert_eq!(first.hits, 0);
        assert!(first.misses >= 2, "{first:?}");
        assert!(first.bytes > 0);

        engine.compile(&module(2), None).unwrap();
        cache.settle();
        let second = cache.stats();
        assert!(second.hits >= 1, "`$sum` is the same: {second:?}");
        assert!(second.misses > first.misses, "`_start` differs: {second:?}");
        drop(engine);

        // A new process finds what the first one compiled.
        let reopened = Arc::new(CompileCache::open(&path, 1 << 30).unwrap());
        assert_eq!(reopened.stats().bytes, cache.stats().bytes);
        let engine = self::engine(&reopened);
        let compiled = engine.compile(&module(2), None).unwrap();
        assert_eq!(compiled.function.kind(), crate::Kind::Wagi);
        assert_eq!(reopened.stats().misses, 0, "{:?}", reopened.stats());
        assert!(reopened.stats().hits >= 2);
    }

    #[test]
    fn past_its_budget_the_cache_drops_the_entries_used_least_recently() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("c.db"), 250).unwrap();
        let commit = |key: &[u8], size: usize| {
            cache.insert(key, vec![1; size]);
            cache.commit();
            cache.settle();
        };
        commit(b"a", 100);
        commit(b"b", 100);
        // Uses are recorded once an entry is TOUCH_AFTER commits old.
        for i in 0..TOUCH_AFTER {
            commit(format!("small {i}").as_bytes(), 1);
        }
        assert!(cache.get(b"a").is_some());
        commit(b"c", 100);
        assert!(cache.stats().bytes <= 225, "{:?}", cache.stats());
        assert!(cache.get(b"b").is_none(), "b was used least recently");
        assert_eq!(cache.get(b"a").as_deref(), Some(&[1; 100][..]));
        assert!(cache.get(b"c").is_some());
    }

    #[test]
    fn a_file_that_is_not_a_cache_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compile-cache.db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let error = CompileCache::open(&path, 1 << 30).unwrap_err().to_string();
        assert!(error.contains("compile-cache.db"), "{error}");
    }
}
