//! wafer's persistence.
//!
//! Two parts, kept apart because they scale differently:
//! - [`MetaStore`] — function and version metadata behind one async trait; [`SqliteStore`] is the embedded
//!   default (a Postgres implementation can sit behind the same trait);
//! - [`ExecutionStore`] — execution records, their logs, the async queue and cron ticks, written in batches;
//! - [`StateStore`] — key-value stores functions share and each function's variables and secrets;
//! - [`BlobStore`] — content-addressed module bytes on disk (`modules/sha256/<hex>`) with their compiled
//!   artifacts beside them.
//!
//! Every write that acknowledges a deploy is durable before it returns: SQLite runs in WAL mode with
//! `synchronous=FULL`, and blobs are fsynced before they are renamed into place.

mod blobs;
mod error;
mod executions;
mod meta;
mod sqlite;
mod sqlite_executions;
mod sqlite_state;
mod state;

pub use blobs::BlobStore;
pub use error::StoreError;
pub use executions::{
    Attempt, Claimed, DueCallback, ExecutionStore, NewExecution, NewLog, Page, QueueStats,
    Retention, StoredRequest, Write,
};
pub use meta::{MetaStore, NewVersion, StoredFunction, StoredVersion};
pub use sqlite::SqliteStore;
pub use sqlite_executions::rfc3339;
pub use state::{FunctionVariables, KeyPage, StateStore};
