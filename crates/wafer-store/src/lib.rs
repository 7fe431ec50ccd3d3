//! wafer's persistence, behind five traits, implemented on SQLite (one node) and PostgreSQL (a cluster):
//!
//! - [`MetaStore`] (`meta.rs`) — functions, their immutable versions with their module bytes, and which
//!   version is live;
//! - [`ExecutionStore`] (`executions.rs`) — execution records, their logs, the async queue (claims with
//!   a node and a lease), callbacks owed and cron ticks, written in batches;
//! - [`StateStore`] (`state.rs`) — the key-value stores functions share, and each function's variables
//!   and secrets;
//!
//! - [`AccessStore`] (`access.rs`) — API keys with their scopes, and the audit log of management
//!   actions;
//!
//! with [`ModuleBlobs`] (`blobs.rs`), where a store keeps module bytes ([`DirBlobs`]: files in the data
//! directory), and [`Artifacts`] (`artifacts.rs`), each node's own cache of compiled modules.
//! [`ClusterStore`] (`cluster.rs`) is what nodes sharing a store know of each other: the change feed,
//! the nodes table and the wake-ups of [`Events`].
//!
//! [`SqliteStore`] (`sqlite/`) implements every trait on one embedded database; it is the default.
//! [`PgStore`] (`postgres/`) implements them on a PostgreSQL database that any number of nodes share
//! (cluster mode), with module bytes in the database and cached on each node's disk.
//!
//! `conformance/` (feature `conformance`) is the behaviour every implementation must have, as tests
//! written against the traits; [`conformance!`] runs them against a store.
//!
//! Secrets are sealed before a store writes them and opened when it reads them (`secrets.rs`), under a
//! key each node is given or keeps in its data directory.
//!
//! Every write that acknowledges a deploy is durable before it returns: SQLite runs in WAL mode with
//! `synchronous=FULL`, and blobs are fsynced before they are renamed into place.

mod access;
mod artifacts;
mod blobs;
mod cluster;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod executions;
pub mod files;
mod meta;
mod postgres;
mod secrets;
mod sql;
mod sqlite;
mod state;

pub use access::{
    key_hash, new_key_material, AccessStore, AuditEntry, NewAudit, NewKey, StoredKey,
};
pub use artifacts::Artifacts;
pub use blobs::{DirBlobs, ModuleBlobs};
pub use cluster::{Changes, ClusterStore, Events, NodeBeat, NodeRecord};
pub use error::StoreError;
pub use executions::{
    Admit, Attempt, Claim, Claimed, Delivered, Delivery, Due, Enqueued, ExecutionStore,
    NewExecution, NewLog, Page, QueueStats, Retention, Retried, StoredRequest, Write, Written,
    ROLLUP_RETENTION,
};
pub use meta::{FilesBundle, MetaStore, NewVersion, StoredFunction, StoredVersion};
pub use postgres::{redact_url, PgOptions, PgStore};
pub use secrets::{KeySource, SecretsKey, KEY_FILE};
pub use sqlite::backup::{self, BackupSummary, FUNCTION_DATABASES, NODE_ID_FILE};
pub use sqlite::{rfc3339, SqliteStore};
pub use state::{FunctionVariables, KeyPage, StateStore};

/// Runs `f` on tokio's blocking pool: the store's file and database I/O is synchronous (and fsyncs), and
/// must not hold up the executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| match e.is_cancelled() {
            // The runtime is shutting down: nothing is wrong with the data.
            true => StoreError::Unavailable("the server is stopping".into()),
            false => StoreError::Database(format!("a store task failed: {e}")),
        })?
}

/// Locks `data_dir` (creating it if needed) for this process: while the returned file is open, another
/// process opening the directory fails with [`StoreError::Locked`].
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(data_dir)?;
    let lock = std::fs::File::create(data_dir.join("wafer.lock"))?;
    lock.try_lock()
        .map_err(|_| StoreError::Locked(data_dir.to_path_buf()))?;
    Ok(lock)
}
