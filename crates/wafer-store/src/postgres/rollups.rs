//! Per-minute rollups in PostgreSQL: a row per function and minute, its duration histogram a `BIGINT[]`.
//! Nodes add to one minute at once, so adding is one upsert that sums in the database
//! (`wafer_add_counts`), never a read and a write.

use super::{big, millis, unsigned, NOW_MS};
use crate::executions::ROLLUP_RETENTION;
use crate::StoreError;
use deadpool_postgres::{GenericClient, Transaction};
use wafer_api::rollup::DURATION_BUCKETS;
use wafer_api::MinuteRollup;

/// Adds `rollups` to the stored ones.
pub(super) async fn add(
    client: &impl GenericClient,
    rollups: &[MinuteRollup],
) -> Result<(), StoreError> {
    let statement = client
        .prepare_cached(
            "INSERT INTO rollups (function, minute, succeeded, failed, durations)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (function, minute) DO UPDATE SET
                 succeeded = rollups.succeeded + excluded.succeeded,
                 failed = rollups.failed + excluded.failed,
                 durations = wafer_add_counts(rollups.durations, excluded.durations)",
        )
        .await?;
    for rollup in rollups {
        let durations: Vec<i64> = rollup.durations.iter().map(|&n| big(n)).collect();
        client
            .execute(
                &statement,
                &[
                    &rollup.function,
                    &rollup.minute,
                    &big(rollup.succeeded),
                    &big(rollup.failed),
                    &durations,
                ],
            )
            .await?;
    }
    Ok(())
}

/// The rollups of minutes from `since_ms` on, of `function` or of every function.
pub(super) async fn since(
    client: &impl GenericClient,
    function: Option<&str>,
    since_ms: i64,
) -> Result<Vec<MinuteRollup>, StoreError> {
    let rows = client
        .query(
            "SELECT function, minute, succeeded, failed, durations FROM rollups
             WHERE ($1::TEXT IS NULL OR function = $1) AND minute >= $2 ORDER BY function, minute",
            &[&function, &since_ms],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let mut durations: Vec<u64> = row
                .try_get::<_, Vec<i64>>(4)?
                .into_iter()
                .map(unsigned)
                .collect();
            durations.resize(DURATION_BUCKETS, 0);
            Ok(MinuteRollup {
                function: row.try_get(0)?,
                minute: row.try_get(1)?,
                succeeded: unsigned(row.try_get(2)?),
                failed: unsigned(row.try_get(3)?),
                durations,
            })
        })
        .collect()
}

/// Deletes the rollups older than [`ROLLUP_RETENTION`].
pub(super) async fn prune(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute(
        &format!("DELETE FROM rollups WHERE minute < {NOW_MS} - $1"),
        &[&millis(ROLLUP_RETENTION)],
    )
    .await?;
    Ok(())
}
