//! Reading execution and log rows back as the API's types, and the conversions between SQLite's
//! integers and wafer's times and sizes.

use rusqlite::Row;
use wafer_api::{Execution, ExecutionUsage, LogEntry, LogLevel, Summary};

pub(super) const COLUMNS: &str =
    "id, function, version, trigger, status, attempts, max_attempts, queued_at, \
     started_at, finished_at, next_at, duration_us, http_status, exit_code, error, output, \
     output_truncated, instantiate_us, cpu_us, peak_memory, fuel, callback_url, callback_state, \
     destination_state";

/// Milliseconds since the epoch as RFC 3339 UTC, with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(super) fn corrupt(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

pub(super) fn u64_of(value: Option<i64>) -> Option<u64> {
    value.map(|v| u64::try_from(v).unwrap_or_default())
}

pub(super) fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a row of [`COLUMNS`].
pub(super) fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
    let trigger: String = row.get(3)?;
    let status: String = row.get(4)?;
    let time = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(rfc3339))
    };
    let duration_us: Option<i64> = row.get(11)?;
    let output: Option<Vec<u8>> = row.get(15)?;
    let usage = match (
        row.get::<_, Option<i64>>(17)?,
        row.get::<_, Option<i64>>(18)?,
    ) {
        (Some(instantiate_us), Some(cpu_us)) => Some(ExecutionUsage {
            instantiate_us: u64_of(Some(instantiate_us)).unwrap_or_default(),
            cpu_us: u64_of(Some(cpu_us)).unwrap_or_default(),
            peak_memory_bytes: u64_of(row.get(19)?).unwrap_or_default(),
            fuel_consumed: u64_of(row.get(20)?),
        }),
        _ => None,
    };
    Ok(Execution {
        id: row.get(0)?,
        function: row.get(1)?,
        version: row.get(2)?,
        trigger: trigger.parse().map_err(|e| corrupt(3, e))?,
        status: status.parse().map_err(|e| corrupt(4, e))?,
        attempts: row.get(5)?,
        max_attempts: row.get(6)?,
        queued_at: rfc3339(row.get(7)?),
        started_at: time(8)?,
        finished_at: time(9)?,
        next_attempt_at: if status == "queued" { time(10)? } else { None },
        duration_ms: duration_us.map(|us| us as f64 / 1000.0),
        http_status: row
            .get::<_, Option<i64>>(12)?
            .and_then(|s| u16::try_from(s).ok()),
        exit_code: row.get(13)?,
        error: row.get(14)?,
        output: output.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        output_truncated: row.get(16)?,
        usage,
        callback_url: row.get(21)?,
        callback_state: row.get(22)?,
        destination_state: row.get(23)?,
        logs: Vec::new(),
    })
}

pub(super) fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
    Ok(LogEntry {
        seq: row.get(0)?,
        execution_id: row.get(1)?,
        function: row.get(2)?,
        at: rfc3339(row.get(3)?),
        stream: row.get(4)?,
        line: row.get(5)?,
        level: LogLevel::from_rank(row.get(6)?),
    })
}

pub(super) const LOG_COLUMNS: &str = "seq, execution_id, function, at, stream, line, level";

pub(super) fn summary(row: &Row<'_>, first: usize, scale: f64) -> rusqlite::Result<Summary> {
    let value = |i: usize| -> rusqlite::Result<f64> {
        Ok(row.get::<_, Option<f64>>(first + i)?.unwrap_or_default() / scale)
    };
    Ok(Summary {
        min: value(0)?,
        avg: value(1)?,
        max: value(2)?,
    })
}
