//! The embedded default [`MetaStore`]: one SQLite database in WAL mode.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool. Function metadata has one
//! connection and execution records another (`sqlite_executions.rs`), so a batch of records being committed
//! never holds up a deploy's reads; SQLite serialises the writers. The data directory is locked while open,
//! so one server at a time owns it.

use crate::meta::{MetaStore, NewVersion, StoredFunction, StoredVersion};
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The current schema; bumped with a migration step in [`migrate`].
const SCHEMA_VERSION: i64 = 4;

/// SQL for "now" as RFC 3339 UTC with milliseconds.
pub(crate) const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

/// SQLite-backed function metadata.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    pub(crate) executions: Arc<Mutex<Connection>>,
    pub(crate) state: Arc<Mutex<Connection>>,
    _lock: Arc<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) `wafer.db` under `data_dir`.
    ///
    /// Fails with [`StoreError::Locked`] while another process has the directory open.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let lock = std::fs::File::create(data_dir.join("wafer.lock"))?;
        lock.try_lock()
            .map_err(|_| StoreError::Locked(data_dir.to_path_buf()))?;
        let conn = connect(data_dir)?;
        migrate(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            executions: Arc::new(Mutex::new(connect(data_dir)?)),
            state: Arc::new(Mutex::new(connect(data_dir)?)),
            _lock: Arc::new(lock),
        })
    }

    /// Runs `f` with the metadata connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(self.conn.clone(), f).await
    }
}

/// Opens a connection to `wafer.db` in WAL mode, every commit durable.
fn connect(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(data_dir.join("wafer.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Runs `f` with `conn` on the blocking pool.
pub(crate) async fn run_on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut conn = conn
            .lock()
            .map_err(|_| StoreError::Corrupt("database lock poisoned".into()))?;
        f(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("database task failed: {e}")))?
}

/// Creates or upgrades the schema.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema {version} is newer than this wafer understands ({SCHEMA_VERSION})"
        )));
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE functions (
                 name TEXT PRIMARY KEY,
                 live_version INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL
             );
             CREATE TABLE versions (
                 name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
                 version INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 config TEXT NOT NULL,
                 digest TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 PRIMARY KEY (name, version)
             );
             CREATE INDEX versions_by_digest ON versions(digest);
             CREATE TABLE routes (
                 path TEXT PRIMARY KEY,
                 name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE executions (
                 id TEXT PRIMARY KEY,
                 function TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 trigger TEXT NOT NULL,
                 status TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 max_attempts INTEGER NOT NULL,
                 queued_at INTEGER NOT NULL,
                 next_at INTEGER,
                 started_at INTEGER,
                 finished_at INTEGER,
                 duration_us INTEGER,
                 http_status INTEGER,
                 exit_code INTEGER,
                 error TEXT,
                 output BLOB,
                 output_truncated INTEGER NOT NULL DEFAULT 0,
                 instantiate_us INTEGER,
                 cpu_us INTEGER,
                 peak_memory INTEGER,
                 fuel INTEGER,
                 request TEXT,
                 body BLOB,
                 callback_url TEXT,
                 callback_state TEXT,
                 callback_attempts INTEGER NOT NULL DEFAULT 0,
                 callback_at INTEGER
             );
             CREATE INDEX executions_by_function ON executions(function, id);
             CREATE INDEX executions_queue ON executions(status, next_at);
             CREATE INDEX executions_finished ON executions(finished_at);
             CREATE INDEX executions_callbacks ON executions(callback_state, callback_at);
             CREATE TABLE logs (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 execution_id TEXT NOT NULL,
                 function TEXT NOT NULL,
                 at INTEGER NOT NULL,
                 stream TEXT NOT NULL,
                 line TEXT NOT NULL
             );
             CREATE INDEX logs_by_function ON logs(function, seq);
             CREATE INDEX logs_by_execution ON logs(execution_id, seq);
             CREATE TABLE schedules (
                 function TEXT PRIMARY KEY,
                 last_tick INTEGER NOT NULL
             );
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE kv (
                 store TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (store, key)
             ) WITHOUT ROWID;
             CREATE TABLE kv_stores (
                 store TEXT PRIMARY KEY,
                 bytes INTEGER NOT NULL
             );
             CREATE TABLE variables (
                 function TEXT NOT NULL,
                 name TEXT NOT NULL,
                 value TEXT NOT NULL,
                 secret INTEGER NOT NULL,
                 PRIMARY KEY (function, name)
             ) WITHOUT ROWID;
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if version < 4 {
        // A log line's level as its rank (LogLevel::rank): 2 is info, which every earlier line was.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE logs ADD COLUMN level INTEGER NOT NULL DEFAULT 2;
             PRAGMA user_version = 4;
             COMMIT;",
        )?;
    }
    Ok(())
}

const VERSION_COLUMNS: &str = "name, version, kind, config, digest, size, created_at";

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVersion> {
    version_at(row, 0)
}

/// Reads [`VERSION_COLUMNS`] starting at column `base`.
fn version_at(row: &rusqlite::Row<'_>, base: usize) -> rusqlite::Result<StoredVersion> {
    let kind: String = row.get(base + 2)?;
    let config: String = row.get(base + 3)?;
    let size: i64 = row.get(base + 5)?;
    let corrupt = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            base + 2,
            rusqlite::types::Type::Text,
            what.into(),
        )
    };
    Ok(StoredVersion {
        name: row.get(base)?,
        version: row.get(base + 1)?,
        kind: kind.parse().map_err(corrupt)?,
        config: serde_json::from_str(&config).map_err(|e| corrupt(e.to_string()))?,
        digest: row.get(base + 4)?,
        size: u64::try_from(size).unwrap_or_default(),
        created_at: row.get(base + 6)?,
    })
}

/// `SELECT` of functions joined with their live version, read by [`function_from_row`]; `tail` adds
/// `WHERE`/`ORDER BY`.
fn function_query(tail: &str) -> String {
    let columns = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT f.created_at, f.updated_at,
                (SELECT MAX(version) FROM versions WHERE name = f.name), {columns}
         FROM functions f JOIN versions v ON v.name = f.name AND v.version = f.live_version {tail}"
    )
}

fn load_function(conn: &Connection, name: &str) -> Result<Option<StoredFunction>, StoreError> {
    Ok(conn
        .query_row(
            &function_query("WHERE f.name = ?1"),
            [name],
            function_from_row,
        )
        .optional()?)
}

/// Reads a row of `created_at, updated_at, latest, <version columns>`.
fn function_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFunction> {
    let live = version_at(row, 3)?;
    Ok(StoredFunction {
        live,
        latest_version: row.get(2)?,
        created_at: row.get(0)?,
        updated_at: row.get(1)?,
    })
}

/// Replaces the routes of `name` with `routes`, refusing any held by another function.
fn mount_routes(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    routes: &[String],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM routes WHERE name = ?1", [name])?;
    for route in routes {
        let owner: Option<String> = tx
            .query_row("SELECT name FROM routes WHERE path = ?1", [route], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::RouteTaken {
                route: route.clone(),
                owner,
            });
        }
        tx.execute(
            "INSERT INTO routes (path, name) VALUES (?1, ?2)",
            params![route, name],
        )?;
    }
    Ok(())
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn insert_version(&self, new: NewVersion) -> Result<StoredFunction, StoreError> {
        let config = serde_json::to_string(&new.config)
            .map_err(|e| StoreError::Corrupt(format!("config does not serialise: {e}")))?;
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                &format!(
                    "INSERT INTO functions (name, live_version, created_at, updated_at)
                     VALUES (?1, 0, {NOW}, {NOW}) ON CONFLICT(name) DO NOTHING"
                ),
                [&new.name],
            )?;
            let version: u32 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?1",
                [&new.name],
                |r| r.get(0),
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW})"
                ),
                params![
                    new.name,
                    version,
                    new.kind.as_str(),
                    config,
                    new.digest,
                    i64::try_from(new.size).unwrap_or(i64::MAX)
                ],
            )?;
            tx.execute(
                &format!("UPDATE functions SET live_version = ?2, updated_at = {NOW} WHERE name = ?1"),
                params![new.name, version],
            )?;
            mount_routes(&tx, &new.name, &new.config.routes)?;
            let function = load_function(&tx, &new.name)?
                .ok_or_else(|| StoreError::Corrupt("inserted function vanished".into()))?;
            tx.commit()?;
            Ok(function)
        })
        .await
    }

    async fn list_functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare(&function_query("ORDER BY f.name"))?;
            let rows = stmt.query_map([], function_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn get_function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| load_function(conn, &name)).await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?1 ORDER BY version"
            ))?;
            let rows = stmt.query_map([&name], version_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn set_live(&self, name: &str, version: u32) -> Result<StoredFunction, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let target = tx
                .query_row(
                    &format!(
                        "SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?1 AND version = ?2"
                    ),
                    params![name, version],
                    version_from_row,
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("version {version} of `{name}`")))?;
            tx.execute(
                &format!(
                    "UPDATE functions SET live_version = ?2, updated_at = {NOW} WHERE name = ?1"
                ),
                params![name, version],
            )?;
            mount_routes(&tx, &name, &target.config.routes)?;
            let function = load_function(&tx, &name)?
                .ok_or_else(|| StoreError::Corrupt("function vanished during rollback".into()))?;
            tx.commit()?;
            Ok(function)
        })
        .await
    }

    async fn delete_function(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let digests: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT DISTINCT digest FROM versions WHERE name = ?1")?;
                let rows = stmt.query_map([&name], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let deleted = tx.execute("DELETE FROM functions WHERE name = ?1", [&name])?;
            tx.execute("DELETE FROM schedules WHERE function = ?1", [&name])?;
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("function `{name}`")));
            }
            let mut orphaned = Vec::new();
            for digest in digests {
                let used: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
                    [&digest],
                    |r| r.get(0),
                )?;
                if !used {
                    orphaned.push(digest);
                }
            }
            tx.commit()?;
            Ok(orphaned)
        })
        .await
    }

    async fn digest_in_use(&self, digest: &str) -> Result<bool, StoreError> {
        let digest = digest.to_owned();
        self.with_conn(move |conn| {
            Ok(conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)",
                [&digest],
                |r| r.get(0),
            )?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_api::{FunctionConfig, Kind};

    fn new_version(name: &str, digest: &str, routes: &[&str]) -> NewVersion {
        NewVersion {
            name: name.into(),
            kind: Kind::Wagi,
            config: FunctionConfig {
                routes: routes.iter().map(|r| r.to_string()).collect(),
                ..Default::default()
            },
            digest: digest.into(),
            size: 3,
        }
    }

    #[tokio::test]
    async fn versions_count_from_one_and_the_newest_goes_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let v1 = store
            .insert_version(new_version("f", "aa", &[]))
            .await
            .unwrap();
        let v2 = store
            .insert_version(new_version("f", "bb", &[]))
            .await
            .unwrap();
        assert_eq!((v1.live.version, v2.live.version), (1, 2));
        assert_eq!(v2.latest_version, 2);
        let rolled = store.set_live("f", 1).await.unwrap();
        assert_eq!(
            (rolled.live.version, rolled.live.digest.as_str()),
            (1, "aa")
        );
        assert_eq!(store.list_versions("f").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_taken_route_refuses_the_whole_deploy() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .insert_version(new_version("a", "aa", &["/x"]))
            .await
            .unwrap();
        let err = store
            .insert_version(new_version("b", "bb", &["/x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::RouteTaken { ref owner, .. } if owner == "a"));
        assert!(store.get_function("b").await.unwrap().is_none());
        assert!(!store.digest_in_use("bb").await.unwrap());
    }

    #[tokio::test]
    async fn delete_reports_only_unshared_digests() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .insert_version(new_version("a", "shared", &["/a"]))
            .await
            .unwrap();
        store
            .insert_version(new_version("a", "own", &[]))
            .await
            .unwrap();
        store
            .insert_version(new_version("b", "shared", &[]))
            .await
            .unwrap();
        let orphaned = store.delete_function("a").await.unwrap();
        assert_eq!(orphaned, vec!["own".to_string()]);
        assert!(store.get_function("a").await.unwrap().is_none());
        // The route went with the function, so another may take it.
        store
            .insert_version(new_version("c", "cc", &["/a"]))
            .await
            .unwrap();
        assert!(matches!(
            store.delete_function("a").await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        SqliteStore::open(dir.path())
            .unwrap()
            .insert_version(new_version("f", "aa", &[]))
            .await
            .unwrap();
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list_functions().await.unwrap().len(), 1);
    }
}
