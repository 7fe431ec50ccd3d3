//! Pruning finished execution records on SQLite, in memory and lock time that stay small however many
//! records there are to delete.
//!
//! Ids are UUIDv7 and sort as they were made, so "all but a function's newest N" is every id up to a
//! cutoff: the (N+1)-th newest, read from the `(function, id)` index. Each class — dead letters, and
//! the other finished ones — is pruned per function in batches of [`PRUNE_BATCH`], oldest first, each
//! batch a short transaction on the records' connection: the journal's commits, deploys and heartbeats
//! go on between batches, and nothing holds the whole minute's worth of ids. (Ranking every finished
//! record at once took 35–45 MiB for half a minute under 5,000 calls/s; one transaction for all of them
//! held the write lock past other writers' busy timeout.) An execution retried since its batch was
//! chosen is not finished any more, and is kept.

use super::{millis, run_on, SqliteStore, NOW_MS, PRUNE_BATCH};
use crate::executions::Retention;
use crate::sql::DEAD_LETTERS;
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::time::Duration;

/// The finished statuses that are not dead letters.
const SETTLED: &str = "('succeeded', 'failed')";

impl SqliteStore {
    /// Deletes the finished executions `retention` no longer keeps, with their logs; says how many.
    pub(super) async fn prune_records(&self, retention: Retention) -> Result<u64, StoreError> {
        let functions: Vec<String> = run_on(&self.maintenance, |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            super::rollups::prune(&tx)?;
            tx.commit()?;
            let mut stmt = conn.prepare("SELECT DISTINCT function FROM executions")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await?;
        let classes = [
            (SETTLED, retention.per_function, retention.older_than),
            (
                DEAD_LETTERS,
                retention.dead_per_function,
                retention.dead_older_than,
            ),
        ];
        let mut deleted = 0;
        for function in functions {
            for (statuses, keep, age) in classes {
                deleted += self.prune_class(&function, statuses, keep, age).await?;
            }
        }
        Ok(deleted)
    }

    /// Prunes one function's executions in `statuses`: all but the newest `keep`, and any that
    /// finished longer than `age` ago — never one whose callback or destination is still pending.
    async fn prune_class(
        &self,
        function: &str,
        statuses: &'static str,
        keep: u64,
        age: Duration,
    ) -> Result<u64, StoreError> {
        let owned = function.to_owned();
        let cutoff: Option<String> = run_on(&self.maintenance, move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT id FROM executions WHERE function = ?1 AND status IN {statuses}
                         ORDER BY id DESC LIMIT 1 OFFSET ?2"
                    ),
                    params![owned, i64::try_from(keep).unwrap_or(i64::MAX)],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await?;
        let mut deleted = 0;
        loop {
            let (function, cutoff) = (function.to_owned(), cutoff.clone());
            let batch = self
                .with_executions(move |conn| delete_batch(conn, &function, statuses, cutoff, age))
                .await?;
            deleted += batch;
            if batch < PRUNE_BATCH as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// Deletes up to [`PRUNE_BATCH`] of the oldest prunable executions of one function and class, and
/// their logs, in one transaction.
fn delete_batch(
    conn: &mut Connection,
    function: &str,
    statuses: &str,
    cutoff: Option<String>,
    age: Duration,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<String> = {
        let mut stmt = tx.prepare_cached(&format!(
            "DELETE FROM executions WHERE id IN (
                 SELECT id FROM executions
                 WHERE function = ?1 AND status IN {statuses}
                   AND (id <= ?2 OR finished_at < {NOW_MS} - ?3)
                   AND callback_state IS DISTINCT FROM 'pending'
                   AND destination_state IS DISTINCT FROM 'pending'
                 ORDER BY id LIMIT ?4)
             RETURNING id"
        ))?;
        let rows = stmt.query_map(
            params![function, cutoff, millis(age), PRUNE_BATCH as i64],
            |r| r.get(0),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    {
        let mut logs = tx.prepare_cached("DELETE FROM logs WHERE execution_id = ?1")?;
        for id in &ids {
            logs.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(ids.len() as u64)
}
