//! SQLite as Spin's SDKs reach it: `fermyon:spin/sqlite@2.0.0` and `spin:sqlite/sqlite@3.0.0`. A label
//! the function is granted (`sqlite_databases`) is one database file in the node's data directory,
//! shared by every function granted the same label. Statements run on a blocking thread, each bounded
//! by the function's outbound timeout (interrupted past it), and a result is capped in size.

use super::bindings::fermyon::spin::sqlite as v2;
use super::bindings::spin::sqlite::sqlite as v3;
use crate::host::platform::PlatformError;
use crate::host::ComponentState;
use rusqlite::types::{Value, ValueRef};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::Resource;

/// The most bytes of values one statement's result may hold.
const MAX_RESULT_BYTES: usize = 64 << 20;

/// How long a statement waits for another writer's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// An open database, and what its last statement changed.
pub struct Connection {
    db: Arc<Mutex<rusqlite::Connection>>,
    last_insert_rowid: i64,
    changes: u64,
}

/// Why a statement failed, before it is put in a version's error type.
enum Failure {
    NoSuchDatabase,
    AccessDenied,
    Full,
    Io(String),
}

/// A statement's result, before it is put in a version's types.
struct Rows {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
    last_insert_rowid: i64,
    changes: u64,
}

impl From<PlatformError> for Failure {
    fn from(e: PlatformError) -> Self {
        match e {
            PlatformError::Denied(_) => Failure::AccessDenied,
            PlatformError::NotFound(_) => Failure::NoSuchDatabase,
            other => Failure::Io(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Failure::Full,
            _ => Failure::Io(e.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoSuchDatabase => f.write_str("no such database"),
            Failure::AccessDenied => f.write_str("the database is not granted"),
            Failure::Full => f.write_str("the database is full"),
            Failure::Io(e) => f.write_str(e),
        }
    }
}

/// Opens the database file `path`.
async fn open(path: PathBuf) -> Result<rusqlite::Connection, Failure> {
    tokio::task::spawn_blocking(move || {
        let db = rusqlite::Connection::open(&path)?;
        db.busy_timeout(BUSY_TIMEOUT)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        Ok(db)
    })
    .await
    .map_err(|e| Failure::Io(format!("the database could not be opened: {e}")))?
}

/// Runs `statement` with `parameters`, interrupting it past `timeout`.
async fn execute(
    db: Arc<Mutex<rusqlite::Connection>>,
    statement: String,
    parameters: Vec<Value>,
    timeout: Duration,
) -> Result<Rows, Failure> {
    let interrupt = db
        .lock()
        .map_err(|_| Failure::Io("the connection is broken".into()))?
        .get_interrupt_handle();
    let run = tokio::task::spawn_blocking(move || {
        let db = db
            .lock()
            .map_err(|_| Failure::Io("the connection is broken".into()))?;
        run(&db, &statement, parameters)
    });
    match tokio::time::timeout(timeout, run).await {
        Ok(joined) => joined.map_err(|e| Failure::Io(format!("the statement failed: {e}")))?,
        Err(_) => {
            interrupt.interrupt();
            Err(Failure::Io(format!(
                "the statement took longer than {} ms and was interrupted",
                timeout.as_millis()
            )))
        }
    }
}

fn run(
    db: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<Value>,
) -> Result<Rows, Failure> {
    let mut prepared = db.prepare(statement)?;
    let columns: Vec<String> = prepared
        .column_names()
        .into_iter()
        .map(String::from)
        .collect();
    let mut query = prepared.query(rusqlite::params_from_iter(parameters))?;
    let (mut rows, mut bytes) = (Vec::new(), 0usize);
    while let Some(row) = query.next()? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let value = row.get_ref(i)?;
            bytes += match value {
                ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
                _ => 8,
            };
            values.push(Value::from(value));
        }
        if bytes > MAX_RESULT_BYTES {
            return Err(Failure::Io(format!(
                "the result holds more than {MAX_RESULT_BYTES} bytes"
            )));
        }
        rows.push(values);
    }
    drop(query);
    Ok(Rows {
        columns,
        rows,
        last_insert_rowid: db.last_insert_rowid(),
        changes: db.changes(),
    })
}

impl ComponentState {
    /// Opens database `label`, once the function is granted it.
    async fn sqlite_open(
        &mut self,
        label: &str,
    ) -> wasmtime::Result<Result<Resource<Connection>, Failure>> {
        let opened = match self.hooks.guest.sqlite_file(label) {
            Ok(file) => open(file).await,
            Err(e) => Err(e.into()),
        };
        match opened {
            Ok(db) => Ok(Ok(self.table.push(Connection {
                db: Arc::new(Mutex::new(db)),
                last_insert_rowid: 0,
                changes: 0,
            })?)),
            Err(e) => Ok(Err(self.refused("sqlite", "open", e))),
        }
    }

    /// Runs a statement on an open database, remembering what it changed.
    async fn sqlite_execute(
        &mut self,
        connection: &Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<Rows, Failure>> {
        let db = self.table.get(connection)?.db.clone();
        let timeout = self.hooks.policy.timeout();
        match execute(db, statement, parameters, timeout).await {
            Ok(rows) => {
                let open = self.table.get_mut(connection)?;
                open.last_insert_rowid = rows.last_insert_rowid;
                open.changes = rows.changes;
                Ok(Ok(rows))
            }
            Err(e) => Ok(Err(self.refused("sqlite", "execute", e))),
        }
    }
}

/// The value types of both versions, which are the same.
macro_rules! sqlite_version {
    ($v:ident) => {
        impl From<Failure> for $v::Error {
            fn from(e: Failure) -> Self {
                match e {
                    Failure::NoSuchDatabase => $v::Error::NoSuchDatabase,
                    Failure::AccessDenied => $v::Error::AccessDenied,
                    Failure::Full => $v::Error::DatabaseFull,
                    Failure::Io(e) => $v::Error::Io(e),
                }
            }
        }

        impl From<$v::Value> for Value {
            fn from(v: $v::Value) -> Self {
                match v {
                    $v::Value::Integer(i) => Value::Integer(i),
                    $v::Value::Real(r) => Value::Real(r),
                    $v::Value::Text(t) => Value::Text(t),
                    $v::Value::Blob(b) => Value::Blob(b),
                    $v::Value::Null => Value::Null,
                }
            }
        }

        impl From<Rows> for $v::QueryResult {
            fn from(rows: Rows) -> Self {
                let value = |v: Value| match v {
                    Value::Integer(i) => $v::Value::Integer(i),
                    Value::Real(r) => $v::Value::Real(r),
                    Value::Text(t) => $v::Value::Text(t),
                    Value::Blob(b) => $v::Value::Blob(b),
                    Value::Null => $v::Value::Null,
                };
                $v::QueryResult {
                    columns: rows.columns,
                    rows: rows
                        .rows
                        .into_iter()
                        .map(|values| $v::RowResult {
                            values: values.into_iter().map(value).collect(),
                        })
                        .collect(),
                }
            }
        }

        impl $v::Host for ComponentState {}
    };
}

sqlite_version!(v2);
sqlite_version!(v3);

impl v2::HostConnection for ComponentState {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v2::Error>> {
        Ok(self.sqlite_open(&database).await?.map_err(Into::into))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<v2::Value>,
    ) -> wasmtime::Result<Result<v2::QueryResult, v2::Error>> {
        let parameters = parameters.into_iter().map(Value::from).collect();
        let rows = self
            .sqlite_execute(&connection, statement, parameters)
            .await?;
        Ok(rows.map(Into::into).map_err(Into::into))
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl v3::HostConnection for ComponentState {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v3::Error>> {
        Ok(self.sqlite_open(&database).await?.map_err(Into::into))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        parameters: Vec<v3::Value>,
    ) -> wasmtime::Result<Result<v3::QueryResult, v3::Error>> {
        let parameters = parameters.into_iter().map(Value::from).collect();
        let rows = self
            .sqlite_execute(&connection, statement, parameters)
            .await?;
        Ok(rows.map(Into::into).map_err(Into::into))
    }

    async fn last_insert_rowid(
        &mut self,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        Ok(self.table.get(&connection)?.last_insert_rowid)
    }

    async fn changes(&mut self, connection: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&connection)?.changes)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
