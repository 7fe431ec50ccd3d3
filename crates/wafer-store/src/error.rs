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
    Db(rusqlite::Error),
    /// The shared database failed a statement.
    #[error("database error: {0}")]
    Database(String),
    /// The shared database cannot be reached (it is down, or every connection is busy): worth trying
    /// again shortly.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database holds a schema newer than this wafer knows: a newer wafer migrated it.
    #[error(
        "the database's schema is version {found}, newer than this wafer knows ({known}): run a wafer \
         at least as new as the one that migrated it"
    )]
    NewerSchema {
        /// The schema found.
        found: i64,
        /// The newest this wafer knows.
        known: i64,
    },
    /// The filesystem failed.
    #[error("storage I/O error: {0}")]
    Io(std::io::Error),
    /// The disk the data lives on (the data directory's, or the shared database's) is full: nothing
    /// was written, and writing works again once there is space.
    #[error("no space left to store it: {0}")]
    NoSpace(String),
    /// Stored data could not be read back.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The key secrets are sealed with is missing, unreadable, or not the one the store's secrets were
    /// sealed with.
    #[error("secrets key: {0}")]
    SecretsKey(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StoreError::NoSpace(e.to_string())
            }
            _ => StoreError::Io(e),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::NoSpace(e.to_string()),
            _ => StoreError::Db(e),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if *db.code() == tokio_postgres::error::SqlState::DISK_FULL => {
                StoreError::NoSpace(db.message().to_string())
            }
            Some(db) => StoreError::Database(match db.detail() {
                Some(detail) => format!("{}: {detail}", db.message()),
                None => db.message().to_string(),
            }),
            // No answer from the server: the connection is gone or could not be made.
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}
