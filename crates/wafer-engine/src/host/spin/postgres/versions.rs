//! Each version of Spin's PostgreSQL interface mapped onto the one model of `postgres.rs`: version 2
//! (`fermyon:spin/postgres`, rdbms-types) has scalars only, version 3 adds dates and times, version 4 the
//! rest and the server's error fields. A value a version cannot carry is `unsupported` in a row and a
//! `bad-parameter` error as a parameter.

use super::{Cell, Connection, Failure, Interval, Kind, Param, Rows};
use crate::host::spin::bindings::fermyon::spin::{postgres as v2_api, rdbms_types as v2};
use crate::host::spin::bindings::spin::postgres3_0_0::postgres as v3;
use crate::host::spin::bindings::spin::postgres4_0_0::postgres as v4;
use crate::host::ComponentState;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use wasmtime::component::Resource;

fn date((year, month, day): (i32, u8, u8)) -> Result<NaiveDate, Failure> {
    NaiveDate::from_ymd_opt(year, month.into(), day.into())
        .ok_or_else(|| Failure::BadParameter(format!("{year}-{month}-{day} is not a date")))
}

fn time((hour, minute, second, nanos): (u8, u8, u8, u32)) -> Result<NaiveTime, Failure> {
    NaiveTime::from_hms_nano_opt(hour.into(), minute.into(), second.into(), nanos).ok_or_else(
        || Failure::BadParameter(format!("{hour}:{minute}:{second}.{nanos} is not a time")),
    )
}

fn datetime(
    (y, mo, d, h, mi, s, ns): (i32, u8, u8, u8, u8, u8, u32),
) -> Result<NaiveDateTime, Failure> {
    Ok(NaiveDateTime::new(date((y, mo, d))?, time((h, mi, s, ns))?))
}

fn timestamp(seconds: i64) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    chrono::DateTime::from_timestamp(seconds, 0)
        .ok_or_else(|| Failure::BadParameter(format!("{seconds} is not a timestamp")))
}

fn date_parts(d: NaiveDate) -> (i32, u8, u8) {
    (d.year(), d.month() as u8, d.day() as u8)
}

fn time_parts(t: NaiveTime) -> (u8, u8, u8, u32) {
    (
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    )
}

fn datetime_parts(dt: NaiveDateTime) -> (i32, u8, u8, u8, u8, u8, u32) {
    let ((y, mo, d), (h, mi, s, ns)) = (date_parts(dt.date()), time_parts(dt.time()));
    (y, mo, d, h, mi, s, ns)
}

fn decimal(s: &str) -> Result<rust_decimal::Decimal, Failure> {
    s.parse()
        .map_err(|e| Failure::BadParameter(format!("{s:?} is not a decimal: {e}")))
}

fn unsigned<T: TryFrom<u64>>(v: u64, what: &str) -> Result<T, Failure> {
    T::try_from(v)
        .map_err(|_| Failure::BadParameter(format!("{v} does not fit PostgreSQL's {what}")))
}

// --- version 2 ---------------------------------------------------------------------------------

fn v2_param(p: v2::ParameterValue) -> Result<Param, Failure> {
    use v2::ParameterValue as P;
    Ok(match p {
        P::Boolean(v) => Param::Boolean(v),
        P::Int8(v) => Param::Int8(v),
        P::Int16(v) => Param::Int16(v),
        P::Int32(v) => Param::Int32(v),
        P::Int64(v) => Param::Int64(v),
        P::Uint8(v) => Param::Int16(v.into()),
        P::Uint16(v) => Param::Int32(v.into()),
        P::Uint32(v) => Param::Int64(v.into()),
        P::Uint64(v) => Param::Int64(unsigned(v, "bigint")?),
        P::Floating32(v) => Param::Floating32(v),
        P::Floating64(v) => Param::Floating64(v),
        P::Str(v) => Param::Str(v),
        P::Binary(v) => Param::Binary(v),
        P::DbNull => Param::Null,
    })
}

fn v2_rows(rows: Rows) -> v2::RowSet {
    let kind = |k: &Kind| match k {
        Kind::Boolean => v2::DbDataType::Boolean,
        Kind::Int8 => v2::DbDataType::Int8,
        Kind::Int16 => v2::DbDataType::Int16,
        Kind::Int32 => v2::DbDataType::Int32,
        Kind::Int64 => v2::DbDataType::Int64,
        Kind::Floating32 => v2::DbDataType::Floating32,
        Kind::Floating64 => v2::DbDataType::Floating64,
        Kind::Str => v2::DbDataType::Str,
        Kind::Binary => v2::DbDataType::Binary,
        _ => v2::DbDataType::Other,
    };
    let value = |c: Cell| match c {
        Cell::Null => v2::DbValue::DbNull,
        Cell::Boolean(v) => v2::DbValue::Boolean(v),
        Cell::Int8(v) => v2::DbValue::Int8(v),
        Cell::Int16(v) => v2::DbValue::Int16(v),
        Cell::Int32(v) => v2::DbValue::Int32(v),
        Cell::Int64(v) => v2::DbValue::Int64(v),
        Cell::Floating32(v) => v2::DbValue::Floating32(v),
        Cell::Floating64(v) => v2::DbValue::Floating64(v),
        Cell::Str(v) => v2::DbValue::Str(v),
        Cell::Binary(v) => v2::DbValue::Binary(v),
        _ => v2::DbValue::Unsupported,
    };
    v2::RowSet {
        columns: rows
            .columns
            .iter()
            .map(|(name, k)| v2::Column {
                name: name.clone(),
                data_type: kind(k),
            })
            .collect(),
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(value).collect())
            .collect(),
    }
}

impl From<Failure> for v2::Error {
    fn from(e: Failure) -> Self {
        match e {
            Failure::Connection(e) => v2::Error::ConnectionFailed(e),
            Failure::BadParameter(e) => v2::Error::BadParameter(e),
            Failure::Query(e, _) => v2::Error::QueryFailed(e),
            Failure::Conversion(e) => v2::Error::ValueConversionFailed(e),
        }
    }
}

// --- version 3 ---------------------------------------------------------------------------------

fn v3_param(p: v3::ParameterValue) -> Result<Param, Failure> {
    use v3::ParameterValue as P;
    Ok(match p {
        P::Boolean(v) => Param::Boolean(v),
        P::Int8(v) => Param::Int8(v),
        P::Int16(v) => Param::Int16(v),
        P::Int32(v) => Param::Int32(v),
        P::Int64(v) => Param::Int64(v),
        P::Floating32(v) => Param::Floating32(v),
        P::Floating64(v) => Param::Floating64(v),
        P::Str(v) => Param::Str(v),
        P::Binary(v) => Param::Binary(v),
        P::Date(v) => Param::Date(date(v)?),
        P::Time(v) => Param::Time(time(v)?),
        P::Datetime(v) => Param::DateTime(datetime(v)?),
        P::Timestamp(v) => Param::Timestamp(timestamp(v)?),
        P::DbNull => Param::Null,
    })
}

fn v3_rows(rows: Rows) -> v3::RowSet {
    let kind = |k: &Kind| match k {
        Kind::Boolean => v3::DbDataType::Boolean,
        Kind::Int8 => v3::DbDataType::Int8,
        Kind::Int16 => v3::DbDataType::Int16,
        Kind::Int32 => v3::DbDataType::Int32,
        Kind::Int64 => v3::DbDataType::Int64,
        Kind::Floating32 => v3::DbDataType::Floating32,
        Kind::Floating64 => v3::DbDataType::Floating64,
        Kind::Str => v3::DbDataType::Str,
        Kind::Binary => v3::DbDataType::Binary,
        Kind::Date => v3::DbDataType::Date,
        Kind::Time => v3::DbDataType::Time,
        Kind::DateTime => v3::DbDataType::Datetime,
        Kind::Timestamp => v3::DbDataType::Timestamp,
        _ => v3::DbDataType::Other,
    };
    let value = |c: Cell| match c {
        Cell::Null => v3::DbValue::DbNull,
        Cell::Boolean(v) => v3::DbValue::Boolean(v),
        Cell::Int8(v) => v3::DbValue::Int8(v),
        Cell::Int16(v) => v3::DbValue::Int16(v),
        Cell::Int32(v) => v3::DbValue::Int32(v),
        Cell::Int64(v) => v3::DbValue::Int64(v),
        Cell::Floating32(v) => v3::DbValue::Floating32(v),
        Cell::Floating64(v) => v3::DbValue::Floating64(v),
        Cell::Str(v) => v3::DbValue::Str(v),
        Cell::Binary(v) => v3::DbValue::Binary(v),
        Cell::Date(v) => v3::DbValue::Date(date_parts(v)),
        Cell::Time(v) => v3::DbValue::Time(time_parts(v)),
        Cell::DateTime(v) => v3::DbValue::Datetime(datetime_parts(v)),
        Cell::Timestamp(v) => v3::DbValue::Timestamp(v),
        _ => v3::DbValue::Unsupported,
    };
    v3::RowSet {
        columns: rows
            .columns
            .iter()
            .map(|(name, k)| v3::Column {
                name: name.clone(),
                data_type: kind(k),
            })
            .collect(),
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(value).collect())
            .collect(),
    }
}

impl From<Failure> for v3::Error {
    fn from(e: Failure) -> Self {
        match e {
            Failure::Connection(e) => v3::Error::ConnectionFailed(e),
            Failure::BadParameter(e) => v3::Error::BadParameter(e),
            Failure::Query(e, _) => v3::Error::QueryFailed(e),
            Failure::Conversion(e) => v3::Error::ValueConversionFailed(e),
        }
    }
}

// --- version 4 ---------------------------------------------------------------------------------

fn v4_param(p: v4::ParameterValue) -> Result<Param, Failure> {
    use v4::ParameterValue as P;
    let ranges = || Failure::BadParameter("range parameters are not supported".into());
    Ok(match p {
        P::Boolean(v) => Param::Boolean(v),
        P::Int8(v) => Param::Int8(v),
        P::Int16(v) => Param::Int16(v),
        P::Int32(v) => Param::Int32(v),
        P::Int64(v) => Param::Int64(v),
        P::Floating32(v) => Param::Floating32(v),
        P::Floating64(v) => Param::Floating64(v),
        P::Str(v) => Param::Str(v),
        P::Binary(v) => Param::Binary(v),
        P::Date(v) => Param::Date(date(v)?),
        P::Time(v) => Param::Time(time(v)?),
        P::Datetime(v) => Param::DateTime(datetime(v)?),
        P::Timestamp(v) => Param::Timestamp(timestamp(v)?),
        P::Uuid(v) => Param::Uuid(
            v.parse()
                .map_err(|e| Failure::BadParameter(format!("{v:?} is not a UUID: {e}")))?,
        ),
        P::Jsonb(v) => Param::Jsonb(
            serde_json::from_slice(&v)
                .map_err(|e| Failure::BadParameter(format!("the jsonb value is not JSON: {e}")))?,
        ),
        P::Decimal(v) => Param::Decimal(decimal(&v)?),
        P::RangeInt32(_) | P::RangeInt64(_) | P::RangeDecimal(_) => return Err(ranges()),
        P::ArrayInt32(v) => Param::ArrayInt32(v),
        P::ArrayInt64(v) => Param::ArrayInt64(v),
        P::ArrayDecimal(v) => Param::ArrayDecimal(
            v.iter()
                .map(|d| d.as_deref().map(decimal).transpose())
                .collect::<Result<_, _>>()?,
        ),
        P::ArrayStr(v) => Param::ArrayStr(v),
        P::Interval(v) => Param::Interval(Interval {
            micros: v.micros,
            days: v.days,
            months: v.months,
        }),
        P::DbNull => Param::Null,
    })
}

fn v4_rows(rows: Rows) -> v4::RowSet {
    let kind = |k: &Kind| match k {
        Kind::Boolean => v4::DbDataType::Boolean,
        Kind::Int8 => v4::DbDataType::Int8,
        Kind::Int16 => v4::DbDataType::Int16,
        Kind::Int32 => v4::DbDataType::Int32,
        Kind::Int64 => v4::DbDataType::Int64,
        Kind::Floating32 => v4::DbDataType::Floating32,
        Kind::Floating64 => v4::DbDataType::Floating64,
        Kind::Str => v4::DbDataType::Str,
        Kind::Binary => v4::DbDataType::Binary,
        Kind::Date => v4::DbDataType::Date,
        Kind::Time => v4::DbDataType::Time,
        Kind::DateTime => v4::DbDataType::Datetime,
        Kind::Timestamp => v4::DbDataType::Timestamp,
        Kind::Uuid => v4::DbDataType::Uuid,
        Kind::Jsonb => v4::DbDataType::Jsonb,
        Kind::Decimal => v4::DbDataType::Decimal,
        Kind::ArrayInt32 => v4::DbDataType::ArrayInt32,
        Kind::ArrayInt64 => v4::DbDataType::ArrayInt64,
        Kind::ArrayDecimal => v4::DbDataType::ArrayDecimal,
        Kind::ArrayStr => v4::DbDataType::ArrayStr,
        Kind::Interval => v4::DbDataType::Interval,
        Kind::Other(name) => v4::DbDataType::Other(name.clone()),
    };
    let value = |c: Cell| match c {
        Cell::Null => v4::DbValue::DbNull,
        Cell::Boolean(v) => v4::DbValue::Boolean(v),
        Cell::Int8(v) => v4::DbValue::Int8(v),
        Cell::Int16(v) => v4::DbValue::Int16(v),
        Cell::Int32(v) => v4::DbValue::Int32(v),
        Cell::Int64(v) => v4::DbValue::Int64(v),
        Cell::Floating32(v) => v4::DbValue::Floating32(v),
        Cell::Floating64(v) => v4::DbValue::Floating64(v),
        Cell::Str(v) => v4::DbValue::Str(v),
        Cell::Binary(v) => v4::DbValue::Binary(v),
        Cell::Date(v) => v4::DbValue::Date(date_parts(v)),
        Cell::Time(v) => v4::DbValue::Time(time_parts(v)),
        Cell::DateTime(v) => v4::DbValue::Datetime(datetime_parts(v)),
        Cell::Timestamp(v) => v4::DbValue::Timestamp(v),
        Cell::Uuid(v) => v4::DbValue::Uuid(v),
        Cell::Jsonb(v) => v4::DbValue::Jsonb(v),
        Cell::Decimal(v) => v4::DbValue::Decimal(v),
        Cell::ArrayInt32(v) => v4::DbValue::ArrayInt32(v),
        Cell::ArrayInt64(v) => v4::DbValue::ArrayInt64(v),
        Cell::ArrayDecimal(v) => v4::DbValue::ArrayDecimal(v),
        Cell::ArrayStr(v) => v4::DbValue::ArrayStr(v),
        Cell::Interval(v) => v4::DbValue::Interval(v4::Interval {
            micros: v.micros,
            days: v.days,
            months: v.months,
        }),
        Cell::Unsupported(v) => v4::DbValue::Unsupported(v),
    };
    v4::RowSet {
        columns: rows
            .columns
            .iter()
            .map(|(name, k)| v4::Column {
                name: name.clone(),
                data_type: kind(k),
            })
            .collect(),
        rows: rows
            .rows
            .into_iter()
            .map(|row| row.into_iter().map(value).collect())
            .collect(),
    }
}

impl From<Failure> for v4::Error {
    fn from(e: Failure) -> Self {
        match e {
            Failure::Connection(e) => v4::Error::ConnectionFailed(e),
            Failure::BadParameter(e) => v4::Error::BadParameter(e),
            Failure::Query(e, None) => v4::Error::QueryFailed(v4::QueryError::Text(e)),
            Failure::Query(e, Some(db)) => {
                v4::Error::QueryFailed(v4::QueryError::DbError(v4::DbError {
                    as_text: e,
                    severity: db.severity().to_string(),
                    code: db.code().code().to_string(),
                    message: db.message().to_string(),
                    detail: db.detail().map(String::from),
                    extras: [
                        ("hint", db.hint()),
                        ("table", db.table()),
                        ("column", db.column()),
                        ("constraint", db.constraint()),
                        ("schema", db.schema()),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                    .collect(),
                }))
            }
            Failure::Conversion(e) => v4::Error::ValueConversionFailed(e),
        }
    }
}

// --- the three interfaces ----------------------------------------------------------------------

/// The host side of one version: open, query and execute, with its value and error mappings.
macro_rules! postgres_version {
    ($api:ident, $types:ident, $param:ident, $rows:ident) => {
        impl $api::Host for ComponentState {}

        impl $api::HostConnection for ComponentState {
            async fn open(
                &mut self,
                address: String,
            ) -> wasmtime::Result<Result<Resource<Connection>, $types::Error>> {
                match super::connect(self.hooks.policy.clone(), &address).await {
                    Ok(connection) => Ok(Ok(self.table.push(connection)?)),
                    Err(e) => Ok(Err(self.refused("postgres", "open", e).into())),
                }
            }

            async fn query(
                &mut self,
                connection: Resource<Connection>,
                statement: String,
                params: Vec<$types::ParameterValue>,
            ) -> wasmtime::Result<Result<$types::RowSet, $types::Error>> {
                let params = match params
                    .into_iter()
                    .map($param)
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(params) => params,
                    Err(e) => return Ok(Err(self.refused("postgres", "query", e).into())),
                };
                let rows = self.postgres_query(&connection, &statement, params).await?;
                Ok(rows.map($rows).map_err(Into::into))
            }

            async fn execute(
                &mut self,
                connection: Resource<Connection>,
                statement: String,
                params: Vec<$types::ParameterValue>,
            ) -> wasmtime::Result<Result<u64, $types::Error>> {
                let params = match params
                    .into_iter()
                    .map($param)
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(params) => params,
                    Err(e) => return Ok(Err(self.refused("postgres", "execute", e).into())),
                };
                let touched = self
                    .postgres_execute(&connection, &statement, params)
                    .await?;
                Ok(touched.map_err(Into::into))
            }

            async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
                self.table.delete(connection)?;
                Ok(())
            }
        }
    };
}

postgres_version!(v2_api, v2, v2_param, v2_rows);
postgres_version!(v3, v3, v3_param, v3_rows);
postgres_version!(v4, v4, v4_param, v4_rows);

impl v2::Host for ComponentState {}
