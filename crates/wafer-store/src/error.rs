//! The errors of the store crate.

/// What can go wrong reading or writing wafer's state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named function, or version of it, does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A route asked for is already mounted by another function.
    #[error("route `{route}` is already mounted by function `{owner}`")]
    RouteTaken {
        /// The contested path.
        route: String,
        /// The function that holds it.
        owner: String,
    },
    /// A key-value store would pass its size cap.
    #[error("key-value store `{store}` would hold {would} bytes, more than its limit of {limit}")]
    Full {
        /// The store.
        store: String,
        /// Its size after the write.
        would: u64,
        /// Its cap.
        limit: u64,
    },
    /// A value to increment is not a decimal integer (or the sum overflows).
    #[error("the value of `{0}` is not a 64-bit decimal integer")]
    NotANumber(String),
    /// Another process has the data directory open.
    #[error("the data directory {} is in use by another wafer process", .0.display())]
    Locked(std::path::PathBuf),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The filesystem failed.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
