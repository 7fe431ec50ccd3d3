//! Per-minute rollups in SQLite: a row per function and minute, its duration histogram a JSON array.
//! One process owns an SQLite store, so adding is a read and a write in one immediate transaction.

use super::{millis, NOW_MS};
use crate::executions::ROLLUP_RETENTION;
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use wafer_api::rollup::DURATION_BUCKETS;
use wafer_api::MinuteRollup;

/// Adds `rollups` to the stored ones.
pub(super) fn add(conn: &mut Connection, rollups: &[MinuteRollup]) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for rollup in rollups {
        let mut sum = rollup.clone();
        let stored = tx
            .query_row(
                "SELECT function, minute, succeeded, failed, durations FROM rollups
                 WHERE function = ?1 AND minute = ?2",
                params![rollup.function, rollup.minute],
                from_row,
            )
            .optional()?;
        if let Some(stored) = stored {
            sum.add(&stored);
        }
        tx.execute(
            "INSERT OR REPLACE INTO rollups (function, minute, succeeded, failed, durations)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                sum.function,
                sum.minute,
                i64::try_from(sum.succeeded).unwrap_or(i64::MAX),
                i64::try_from(sum.failed).unwrap_or(i64::MAX),
                serde_json::to_string(&sum.durations).unwrap_or_default(),
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The rollups of minutes from `since_ms` on, of `function` or of every function.
pub(super) fn since(
    conn: &Connection,
    function: Option<&str>,
    since_ms: i64,
) -> Result<Vec<MinuteRollup>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT function, minute, succeeded, failed, durations FROM rollups
         WHERE (?1 IS NULL OR function = ?1) AND minute >= ?2 ORDER BY function, minute",
    )?;
    let rows = stmt.query_map(params![function, since_ms], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes the rollups older than [`ROLLUP_RETENTION`].
pub(super) fn prune(tx: &Transaction) -> Result<(), StoreError> {
    tx.execute(
        &format!("DELETE FROM rollups WHERE minute < {NOW_MS} - ?1"),
        [millis(ROLLUP_RETENTION)],
    )?;
    Ok(())
}

fn from_row(row: &rusqlite::Row) -> rusqlite::Result<MinuteRollup> {
    let durations: String = row.get(4)?;
    let mut durations: Vec<u64> = serde_json::from_str(&durations).unwrap_or_default();
    durations.resize(DURATION_BUCKETS, 0);
    Ok(MinuteRollup {
        function: row.get(0)?,
        minute: row.get(1)?,
        succeeded: u64::try_from(row.get::<_, i64>(2)?).unwrap_or_default(),
        failed: u64::try_from(row.get::<_, i64>(3)?).unwrap_or_default(),
        durations,
    })
}
