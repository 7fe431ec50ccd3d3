//! wafer's persistence, behind three traits so that another database can take SQLite's place:
//!
//! - [`MetaStore`] (`meta.rs`) — functions, their immutable versions with their module bytes, and which
//!   version is live;
//! - [`ExecutionStore`] (`executions.rs`) — execution records, their logs, the async queue (claims with
//!   a node and a lease), callbacks owed and cron ticks, written in batches;
//! - [`StateStore`] (`state.rs`) — the key-value stores functions share, and each function's variables
//!   and secrets;
//!
//! with [`ModuleBlobs`] (`blobs.rs`), where a store keeps module bytes ([`DirBlobs`]: files in the data
//! directory), and [`Artifacts`] (`artifacts.rs`), each node's own cache of compiled modules.
//! [`SqliteStore`] (`sqlite/`) implements all three traits on one embedded database; it is the default.
//!
//! `conformance/` (feature `conformance`) is the behaviour every implementation must have, as tests
//! written against the traits; [`conformance!`] runs them against a store.
//!
//! Every write that acknowledges a deploy is durable before it returns: SQLite runs in WAL mode with
//! `synchronous=FULL`, and blobs are fsynced before they are renamed into place.

mod artifacts;
mod blobs;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod executions;
mod meta;
mod sqlite;
mod state;

pub use artifacts::Artifacts;
pub use blobs::{DirBlobs, ModuleBlobs};
pub use error::StoreError;
pub use executions::{
    Attempt, Claimed, DueCallback, ExecutionStore, NewExecution, NewLog, Page, QueueStats,
    Retention, StoredRequest, Write,
};
pub use meta::{MetaStore, NewVersion, StoredFunction, StoredVersion};
pub use sqlite::{rfc3339, SqliteStore};
pub use state::{FunctionVariables, KeyPage, StateStore};

/// Runs `f` on tokio's blocking pool: the store's file and database I/O is synchronous (and fsyncs), and
/// must not hold up the executor.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Corrupt(format!("store task failed: {e}")))?
}
