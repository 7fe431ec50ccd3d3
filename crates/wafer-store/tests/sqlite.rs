//! The store conformance suite against the embedded SQLite store, each case on a fresh data directory.

use std::sync::Arc;
use wafer_store::conformance::Stores;
use wafer_store::SqliteStore;

async fn sqlite() -> Option<Stores> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open the store");
    Some(Stores {
        meta: Arc::new(store.clone()),
        executions: Arc::new(store.clone()),
        state: Arc::new(store.clone()),
        cluster: Arc::new(store.clone()),
        access: Arc::new(store),
        keep: Box::new(dir),
    })
}

wafer_store::conformance!(sqlite);
