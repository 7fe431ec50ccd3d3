//! Outbound PostgreSQL: `fermyon:spin/postgres@2.0.0`, `spin:postgres/postgres@3.0.0` and `@4.0.0`. An
//! address is a connection URL or `key=value` string whose host and port must be in the function's
//! `allowed_outbound_hosts` (as `postgres://db.internal:5432`); the connection goes to exactly the
//! address that was checked, counts against the function's outbound connections, and each statement is
//! bounded by its outbound timeout. `sslmode=require` verifies the server against the system's roots;
//! otherwise the connection is plain.
//!
//! Values pass through one model ([`Cell`], [`Param`]); `versions.rs` maps each version's types onto it.

mod versions;

use crate::host::outbound::OutboundPolicy;
use crate::host::ComponentState;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{Client, NoTls, Row};

/// An open connection, holding one of the function's outbound slots.
pub struct Connection {
    client: Arc<Client>,
    timeout: Duration,
    _slot: OwnedSemaphorePermit,
}

/// Why a call failed, before it is put in a version's error type.
#[derive(Debug)]
pub(super) enum Failure {
    Connection(String),
    BadParameter(String),
    /// The statement failed; with the server's error fields when the server refused it.
    Query(String, Option<Box<tokio_postgres::error::DbError>>),
    Conversion(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connection(e) => write!(f, "connection failed: {e}"),
            Failure::BadParameter(e) => write!(f, "bad parameter: {e}"),
            Failure::Query(e, _) => write!(f, "query failed: {e}"),
            Failure::Conversion(e) => write!(f, "value conversion failed: {e}"),
        }
    }
}

/// A column's type, as the richest version names it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Boolean,
    Int8,
    Int16,
    Int32,
    Int64,
    Floating32,
    Floating64,
    Str,
    Binary,
    Date,
    Time,
    DateTime,
    Timestamp,
    Uuid,
    Jsonb,
    Decimal,
    ArrayInt32,
    ArrayInt64,
    ArrayDecimal,
    ArrayStr,
    Interval,
    Other(String),
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Boolean(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Floating32(f32),
    Floating64(f64),
    Str(String),
    Binary(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTime(NaiveDateTime),
    /// Seconds since the Unix epoch.
    Timestamp(i64),
    Uuid(String),
    Jsonb(Vec<u8>),
    Decimal(String),
    ArrayInt32(Vec<Option<i32>>),
    ArrayInt64(Vec<Option<i64>>),
    ArrayDecimal(Vec<Option<String>>),
    ArrayStr(Vec<Option<String>>),
    Interval(Interval),
    /// A value of a type no version has, as the server sent it.
    Unsupported(Vec<u8>),
}

/// A parameter, as the richest version passes it.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Null,
    Boolean(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Floating32(f32),
    Floating64(f64),
    Str(String),
    Binary(Vec<u8>),
    Date(NaiveDate),
    Time(NaiveTime),
    DateTime(NaiveDateTime),
    Timestamp(DateTime<Utc>),
    Uuid(uuid::Uuid),
    Jsonb(serde_json::Value),
    Decimal(Decimal),
    ArrayInt32(Vec<Option<i32>>),
    ArrayInt64(Vec<Option<i64>>),
    ArrayDecimal(Vec<Option<Decimal>>),
    ArrayStr(Vec<Option<String>>),
    Interval(Interval),
}

/// PostgreSQL's interval: microseconds, days and months, kept apart as the server keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Interval {
    pub(super) micros: i64,
    pub(super) days: i32,
    pub(super) months: i32,
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("an interval is 16 bytes".into());
        }
        Ok(Interval {
            micros: i64::from_be_bytes(raw[0..8].try_into()?),
            days: i32::from_be_bytes(raw[8..12].try_into()?),
            months: i32::from_be_bytes(raw[12..16].try_into()?),
        })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

impl ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.micros.to_be_bytes());
        out.extend_from_slice(&self.days.to_be_bytes());
        out.extend_from_slice(&self.months.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }

    to_sql_checked!();
}

/// A null for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The bytes of a value of any type, as the server sent them.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

impl Param {
    fn boxed(self) -> Box<dyn ToSql + Sync + Send> {
        match self {
            Param::Null => Box::new(Null),
            Param::Boolean(v) => Box::new(v),
            Param::Int8(v) => Box::new(v),
            Param::Int16(v) => Box::new(v),
            Param::Int32(v) => Box::new(v),
            Param::Int64(v) => Box::new(v),
            Param::Floating32(v) => Box::new(v),
            Param::Floating64(v) => Box::new(v),
            Param::Str(v) => Box::new(v),
            Param::Binary(v) => Box::new(v),
            Param::Date(v) => Box::new(v),
            Param::Time(v) => Box::new(v),
            Param::DateTime(v) => Box::new(v),
            Param::Timestamp(v) => Box::new(v),
            Param::Uuid(v) => Box::new(v),
            Param::Jsonb(v) => Box::new(v),
            Param::Decimal(v) => Box::new(v),
            Param::ArrayInt32(v) => Box::new(v),
            Param::ArrayInt64(v) => Box::new(v),
            Param::ArrayDecimal(v) => Box::new(v),
            Param::ArrayStr(v) => Box::new(v),
            Param::Interval(v) => Box::new(v),
        }
    }
}

/// The kind of a column of type `ty`.
fn kind(ty: &Type) -> Kind {
    match *ty {
        Type::BOOL => Kind::Boolean,
        Type::CHAR => Kind::Int8,
        Type::INT2 => Kind::Int16,
        Type::INT4 => Kind::Int32,
        Type::INT8 => Kind::Int64,
        Type::FLOAT4 => Kind::Floating32,
        Type::FLOAT8 => Kind::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Kind::Str,
        Type::BYTEA => Kind::Binary,
        Type::DATE => Kind::Date,
        Type::TIME => Kind::Time,
        Type::TIMESTAMP => Kind::DateTime,
        Type::TIMESTAMPTZ => Kind::Timestamp,
        Type::UUID => Kind::Uuid,
        Type::JSONB | Type::JSON => Kind::Jsonb,
        Type::NUMERIC => Kind::Decimal,
        Type::INT4_ARRAY => Kind::ArrayInt32,
        Type::INT8_ARRAY => Kind::ArrayInt64,
        Type::NUMERIC_ARRAY => Kind::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => Kind::ArrayStr,
        Type::INTERVAL => Kind::Interval,
        _ => Kind::Other(ty.name().to_string()),
    }
}

/// The value in column `i` of `row`, whose kind is `kind`.
fn cell(row: &Row, i: usize, kind: &Kind) -> Result<Cell, Failure> {
    fn get<'a, T: FromSql<'a>>(
        row: &'a Row,
        i: usize,
        wrap: impl FnOnce(T) -> Cell,
    ) -> Result<Cell, Failure> {
        let value: Option<T> = row
            .try_get(i)
            .map_err(|e| Failure::Conversion(describe(&e)))?;
        Ok(value.map_or(Cell::Null, wrap))
    }
    match kind {
        Kind::Boolean => get(row, i, Cell::Boolean),
        Kind::Int8 => get(row, i, Cell::Int8),
        Kind::Int16 => get(row, i, Cell::Int16),
        Kind::Int32 => get(row, i, Cell::Int32),
        Kind::Int64 => get(row, i, Cell::Int64),
        Kind::Floating32 => get(row, i, Cell::Floating32),
        Kind::Floating64 => get(row, i, Cell::Floating64),
        Kind::Str => get(row, i, Cell::Str),
        Kind::Binary => get(row, i, Cell::Binary),
        Kind::Date => get(row, i, Cell::Date),
        Kind::Time => get(row, i, Cell::Time),
        Kind::DateTime => get(row, i, Cell::DateTime),
        Kind::Timestamp => get(row, i, |t: DateTime<Utc>| Cell::Timestamp(t.timestamp())),
        Kind::Uuid => get(row, i, |u: uuid::Uuid| Cell::Uuid(u.to_string())),
        Kind::Jsonb => get(row, i, |j: serde_json::Value| {
            Cell::Jsonb(j.to_string().into_bytes())
        }),
        Kind::Decimal => get(row, i, |d: Decimal| Cell::Decimal(d.to_string())),
        Kind::ArrayInt32 => get(row, i, Cell::ArrayInt32),
        Kind::ArrayInt64 => get(row, i, Cell::ArrayInt64),
        Kind::ArrayDecimal => get(row, i, |a: Vec<Option<Decimal>>| {
            Cell::ArrayDecimal(a.into_iter().map(|d| d.map(|d| d.to_string())).collect())
        }),
        Kind::ArrayStr => get(row, i, Cell::ArrayStr),
        Kind::Interval => get(row, i, Cell::Interval),
        Kind::Other(_) => get(row, i, |r: Raw| Cell::Unsupported(r.0)),
    }
}

/// A tokio-postgres error with its cause, which is where the server's message is.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

fn query_failure(e: tokio_postgres::Error) -> Failure {
    Failure::Query(describe(&e), e.as_db_error().map(|db| Box::new(db.clone())))
}

/// A statement's columns (names and kinds) and rows.
pub(super) struct Rows {
    pub(super) columns: Vec<(String, Kind)>,
    pub(super) rows: Vec<Vec<Cell>>,
}

/// A TLS connector that verifies the server against the system's roots.
fn verified_tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, Failure> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Connection(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects to `address` once `policy` lets the function reach it.
pub(super) async fn connect(policy: OutboundPolicy, address: &str) -> Result<Connection, Failure> {
    let mut config: tokio_postgres::Config = address
        .parse()
        .map_err(|e| Failure::Connection(format!("invalid address: {e}")))?;
    let host = match config.get_hosts() {
        [Host::Tcp(host)] => host.clone(),
        [] => "localhost".to_string(),
        _ => {
            return Err(Failure::Connection(
                "name one TCP host (not several, nor a unix socket)".into(),
            ))
        }
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let addresses = policy
        .resolve("postgres", &host, port)
        .await
        .map_err(Failure::Connection)?;
    let target = addresses
        .first()
        .ok_or_else(|| Failure::Connection(format!("{host} has no address")))?;
    let slot = policy
        .acquire()
        .await
        .ok_or_else(|| Failure::Connection("too many outbound connections in flight".into()))?;
    let timeout = policy.timeout();
    config.hostaddr(target.ip()).connect_timeout(timeout);
    let client = if config.get_ssl_mode() == SslMode::Require {
        let (client, connection) = config
            .connect(verified_tls()?)
            .await
            .map_err(|e| Failure::Connection(describe(&e)))?;
        tokio::spawn(connection);
        client
    } else {
        config.ssl_mode(SslMode::Disable);
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| Failure::Connection(describe(&e)))?;
        tokio::spawn(connection);
        client
    };
    Ok(Connection {
        client: Arc::new(client),
        timeout,
        _slot: slot,
    })
}

impl ComponentState {
    /// Runs a query on an open connection.
    async fn postgres_query(
        &mut self,
        connection: &wasmtime::component::Resource<Connection>,
        statement: &str,
        params: Vec<Param>,
    ) -> wasmtime::Result<Result<Rows, Failure>> {
        let open = self.table.get(connection)?;
        let (client, timeout) = (open.client.clone(), open.timeout);
        let params: Vec<Box<dyn ToSql + Sync + Send>> =
            params.into_iter().map(Param::boxed).collect();
        let result = async {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
            let statement = client.prepare(statement).await.map_err(query_failure)?;
            let columns: Vec<(String, Kind)> = statement
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), kind(c.type_())))
                .collect();
            let rows = client
                .query(&statement, &refs)
                .await
                .map_err(query_failure)?;
            let rows = rows
                .iter()
                .map(|row| {
                    columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, kind))| cell(row, i, kind))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Rows { columns, rows })
        };
        let result = bounded(timeout, result).await;
        Ok(result.map_err(|e| self.refused("postgres", "query", e)))
    }

    /// Runs a statement on an open connection; how many rows it touched.
    async fn postgres_execute(
        &mut self,
        connection: &wasmtime::component::Resource<Connection>,
        statement: &str,
        params: Vec<Param>,
    ) -> wasmtime::Result<Result<u64, Failure>> {
        let open = self.table.get(connection)?;
        let (client, timeout) = (open.client.clone(), open.timeout);
        let params: Vec<Box<dyn ToSql + Sync + Send>> =
            params.into_iter().map(Param::boxed).collect();
        let result = async {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
            client
                .execute(statement, &refs)
                .await
                .map_err(query_failure)
        };
        let result = bounded(timeout, result).await;
        Ok(result.map_err(|e| self.refused("postgres", "execute", e)))
    }
}

/// `work` within `timeout`.
async fn bounded<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Query(
            format!("the statement took longer than {} ms", timeout.as_millis()),
            None,
        )),
    }
}
