//! The embedded default store: one SQLite database in WAL mode (`wafer.db` in the data directory) behind
//! every store trait, with module bytes as files beside it.
//!
//! - `schema.rs` creates and migrates the tables;
//! - `meta.rs` is the [`crate::MetaStore`] (functions, versions, routes, module bytes);
//! - `executions.rs` is the [`crate::ExecutionStore`] (records, logs, the queue, callbacks, ticks),
//!   with `rows.rs` reading its rows back;
//! - `state.rs` is the [`crate::StateStore`] (key-value stores, variables and secrets);
//! - `cluster.rs` is the [`crate::ClusterStore`] (the change feed and the nodes table);
//! - `access.rs` is the [`crate::AccessStore`] (API keys and the audit log);
//! - `backup.rs` backs a live data directory up, and restores a backup into a fresh one.
//!
//! rusqlite is synchronous, so every call runs on tokio's blocking pool. Each trait has its own
//! connection, so a batch of records being committed never holds up a deploy's reads or a function's
//! key-value read; SQLite serialises the writers. Every commit is durable (`synchronous=FULL`). The data
//! directory is locked while open, so one server at a time owns it.
//!
//! A cached statement's `LIMIT` is written `LIMIT +?n`, not `LIMIT ?n`: SQLite plans a bare parameter
//! limit with its value, so it compiles the statement again every time it is bound (the queue's claim
//! spent a tenth of the server's time being parsed); as an expression it is read when the statement runs.

mod access;
pub mod backup;
mod cluster;
mod executions;
mod meta;
mod queue;
mod records;
mod retention;
mod rollups;
mod rows;
mod schema;
mod state;

pub use rows::rfc3339;

use crate::blobs::{DirBlobs, ModuleBlobs};
use crate::cluster::Events;
use crate::{KeySource, SecretsKey, StoreError};
use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// SQL for "now" as RFC 3339 UTC with milliseconds.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ','now')";

/// How many old executions record retention deletes in one transaction.
const PRUNE_BATCH: usize = 500;

/// SQL for "now" in milliseconds since the Unix epoch: the store's clock, which every comparison of
/// times uses.
const NOW_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// wafer's state in SQLite.
#[derive(Clone)]
pub struct SqliteStore {
    meta: Arc<Mutex<Connection>>,
    executions: Arc<Mutex<Connection>>,
    state: Arc<Mutex<Connection>>,
    /// Record retention's reads, which scan every finished execution: on a connection of their own,
    /// they hold up neither the journal nor a deploy.
    maintenance: Arc<Mutex<Connection>>,
    blobs: Arc<dyn ModuleBlobs>,
    /// Serialises storing a version's bytes with its row, so a failed deploy's clean-up never removes
    /// bytes a concurrent deploy of the same module has just stored.
    deploys: Arc<tokio::sync::Mutex<()>>,
    events: Events,
    /// The key secrets are sealed with.
    secrets: Arc<SecretsKey>,
    _lock: Arc<std::fs::File>,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) `wafer.db` under `data_dir`, with module bytes in
    /// `data_dir/modules/sha256`.
    ///
    /// Fails with [`StoreError::Locked`] while another process has the directory open. Secrets are
    /// sealed with the key the directory keeps ([`KeySource::DataDir`]).
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, &KeySource::DataDir)
    }

    /// [`Self::open`], sealing secrets with the key from `secrets`: refused with
    /// [`StoreError::SecretsKey`] when the database's secrets were sealed with another.
    pub fn open_with(data_dir: &Path, secrets: &KeySource) -> Result<Self, StoreError> {
        let lock = crate::lock_data_dir(data_dir)?;
        let mut conn = connect(data_dir)?;
        schema::migrate(&conn)?;
        let secrets = secrets
            .load(data_dir, state::recorded_key(&conn)?.as_deref())
            .map_err(StoreError::SecretsKey)?;
        state::adopt_key(&mut conn, &secrets)?;
        Ok(Self {
            meta: Arc::new(Mutex::new(conn)),
            executions: Arc::new(Mutex::new(connect(data_dir)?)),
            state: Arc::new(Mutex::new(connect(data_dir)?)),
            maintenance: Arc::new(Mutex::new(connect(data_dir)?)),
            blobs: Arc::new(DirBlobs::open(data_dir)?),
            deploys: Arc::new(tokio::sync::Mutex::new(())),
            events: Events::default(),
            secrets: Arc::new(secrets),
            _lock: Arc::new(lock),
        })
    }
}

/// Opens a connection to `wafer.db` in WAL mode, every commit durable.
fn connect(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(data_dir.join("wafer.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // After a checkpoint, the WAL is cut back to this size rather than kept at its largest.
    conn.pragma_update(None, "journal_size_limit", 64i64 << 20)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Runs `f` with `conn` on the blocking pool.
async fn run_on<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = conn.clone();
    crate::blocking(move || {
        let mut conn = conn
            .lock()
            .map_err(|_| StoreError::Corrupt("database lock poisoned".into()))?;
        f(&mut conn)
    })
    .await
}

/// A duration as the milliseconds SQL adds to [`NOW_MS`].
fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetaStore, NewVersion};
    use wafer_api::{FunctionConfig, Kind};

    #[tokio::test]
    async fn data_survives_reopening_and_one_process_owns_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let module = bytes::Bytes::from_static(b"\0asm");
        let digest = wafer_api::oci::sha256_hex(&module);
        store
            .insert_version(
                NewVersion {
                    name: "f".into(),
                    kind: Kind::Wagi,
                    config: FunctionConfig::default(),
                    digest: digest.clone(),
                    size: 4,
                    variables: Default::default(),
                    files: None,
                },
                module,
                true,
            )
            .await
            .unwrap();
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(store);
        let reopened = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list_functions().await.unwrap().len(), 1);
        assert_eq!(reopened.module(&digest).await.unwrap(), b"\0asm");
    }

    /// Every stored value of secrets, straight from the database file.
    fn stored_secrets(dir: &Path) -> Vec<String> {
        let conn = Connection::open(dir.join("wafer.db")).unwrap();
        let mut statement = conn
            .prepare("SELECT value FROM variables WHERE secret = 1 ORDER BY function")
            .unwrap();
        let values = statement.query_map([], |r| r.get(0)).unwrap();
        values.map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn secrets_are_sealed_on_disk_and_need_the_key_they_were_sealed_with() {
        use crate::StateStore;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let secrets = [("token".to_string(), Some("plain-text-secret".to_string()))];
        store
            .set_variables("f", Default::default(), secrets.into_iter().collect())
            .await
            .unwrap();
        let update = crate::FunctionVariables {
            secrets: [("merged".to_string(), "merged-secret".to_string())].into(),
            ..Default::default()
        };
        store.merge_variables("f", update).await.unwrap();
        drop(store);
        // A secret written by a wafer from before secrets were sealed.
        Connection::open(dir.path().join("wafer.db"))
            .unwrap()
            .execute(
                "INSERT INTO variables (function, name, value, secret) VALUES ('g', 'old', 'older', 1)",
                [],
            )
            .unwrap();
        let bytes = |path: &str| std::fs::read(dir.path().join(path)).unwrap_or_default();

        let store = SqliteStore::open(dir.path()).unwrap();
        let all = store.all_variables().await.unwrap();
        assert_eq!(all["f"].secrets["token"], "plain-text-secret");
        assert_eq!(all["f"].secrets["merged"], "merged-secret");
        assert_eq!(store.variables("g").await.unwrap().secrets["old"], "older");
        drop(store);
        for value in stored_secrets(dir.path()) {
            assert!(value.starts_with("sealed:v1:"), "{value}");
        }
        for file in ["wafer.db", "wafer.db-wal"] {
            let bytes = bytes(file);
            let found = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!found(b"plain-text-secret"), "{file} holds a secret");
            assert!(!found(b"merged-secret"), "{file} holds a secret");
        }

        let other = KeySource::Value("ab".repeat(32));
        match SqliteStore::open_with(dir.path(), &other) {
            Err(StoreError::SecretsKey(message)) => {
                assert!(message.contains("same key"), "{message}")
            }
            other => panic!("another key is refused, not {:?}", other.err()),
        }
        std::fs::remove_file(dir.path().join(crate::KEY_FILE)).unwrap();
        match SqliteStore::open(dir.path()) {
            Err(StoreError::SecretsKey(message)) => {
                assert!(message.contains("missing"), "{message}")
            }
            other => panic!("a lost key file is not replaced, not {:?}", other.err()),
        }
        assert!(!dir.path().join(crate::KEY_FILE).exists());
    }
}
