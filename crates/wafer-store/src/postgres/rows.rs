//! Reading execution and log rows back as the API's types. The columns are SQLite's, in the same order
//! (`crate::sqlite`'s `rows.rs`), as PostgreSQL's `BIGINT`s.

use super::unsigned;
use crate::{rfc3339, StoreError};
use tokio_postgres::Row;
use wafer_api::{Execution, ExecutionUsage, LogEntry, LogLevel, Summary};

pub(super) const COLUMNS: &str =
    "id, function, version, trigger, status, attempts, max_attempts, queued_at, \
     started_at, finished_at, next_at, duration_us, http_status, exit_code, error, output, \
     output_truncated, instantiate_us, cpu_us, peak_memory, fuel, callback_url, callback_state, \
     destination_state";

pub(super) const LOG_COLUMNS: &str = "seq, execution_id, function, at, stream, line, level";

/// A `BIGINT` column as a `u32` count.
fn count(row: &Row, i: usize) -> Result<u32, StoreError> {
    Ok(u32::try_from(row.try_get::<_, i64>(i)?).unwrap_or(u32::MAX))
}

/// Reads a row of [`COLUMNS`].
pub(super) fn execution_from_row(row: &Row) -> Result<Execution, StoreError> {
    let trigger: String = row.try_get(3)?;
    let status: String = row.try_get(4)?;
    let time = |i: usize| -> Result<Option<String>, StoreError> {
        Ok(row.try_get::<_, Option<i64>>(i)?.map(rfc3339))
    };
    let number = |i: usize| -> Result<Option<i64>, StoreError> { Ok(row.try_get(i)?) };
    let usage = match (number(17)?, number(18)?) {
        (Some(instantiate_us), Some(cpu_us)) => Some(ExecutionUsage {
            instantiate_us: unsigned(instantiate_us),
            cpu_us: unsigned(cpu_us),
            peak_memory_bytes: number(19)?.map(unsigned).unwrap_or_default(),
            fuel_consumed: number(20)?.map(unsigned),
        }),
        _ => None,
    };
    let output: Option<Vec<u8>> = row.try_get(15)?;
    Ok(Execution {
        id: row.try_get(0)?,
        function: row.try_get(1)?,
        version: count(row, 2)?,
        trigger: trigger.parse().map_err(StoreError::Corrupt)?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        attempts: count(row, 5)?,
        max_attempts: count(row, 6)?,
        queued_at: rfc3339(row.try_get(7)?),
        started_at: time(8)?,
        finished_at: time(9)?,
        next_attempt_at: if status == "queued" { time(10)? } else { None },
        duration_ms: number(11)?.map(|us| us as f64 / 1000.0),
        http_status: number(12)?.and_then(|s| u16::try_from(s).ok()),
        exit_code: number(13)?.and_then(|c| i32::try_from(c).ok()),
        error: row.try_get(14)?,
        output: output.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        output_truncated: row.try_get(16)?,
        usage,
        callback_url: row.try_get(21)?,
        callback_state: row.try_get(22)?,
        destination_state: row.try_get(23)?,
        logs: Vec::new(),
    })
}

/// Reads a row of [`LOG_COLUMNS`].
pub(super) fn log_from_row(row: &Row) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        seq: row.try_get(0)?,
        execution_id: row.try_get(1)?,
        function: row.try_get(2)?,
        at: rfc3339(row.try_get(3)?),
        stream: row.try_get(4)?,
        line: row.try_get(5)?,
        level: LogLevel::from_rank(row.try_get(6)?),
    })
}

/// Reads `min, avg, max` (as `FLOAT8`) from column `first`, divided by `scale`.
pub(super) fn summary(row: &Row, first: usize, scale: f64) -> Result<Summary, StoreError> {
    let value = |i: usize| -> Result<f64, StoreError> {
        Ok(row
            .try_get::<_, Option<f64>>(first + i)?
            .unwrap_or_default()
            / scale)
    };
    Ok(Summary {
        min: value(0)?,
        avg: value(1)?,
        max: value(2)?,
    })
}
