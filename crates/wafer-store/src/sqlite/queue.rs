//! The parts of [`crate::ExecutionStore`] on SQLite that admit work to the queue and take it back:
//! bounded and idempotent submission, the retry and redrive of dead letters, and the deliveries a
//! finished execution owes (callbacks and destinations), claimed like queued work.

use super::records::insert;
use super::rows::{execution_from_row, COLUMNS};
use super::{millis, NOW_MS};
use crate::executions::{Admit, Delivered, Delivery, Due, Enqueued, NewExecution, Retried};
use crate::sql::{delivery_state, requeue, DEAD_LETTERS};
use crate::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::time::Duration;
use wafer_api::ExecutionStatus;

/// Stores `new` unless its key names an earlier execution or its function's queue is full.
pub(super) fn enqueue(
    conn: &mut Connection,
    new: &NewExecution,
    admit: &Admit,
) -> Result<Enqueued, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some((key, digest)) = &admit.key {
        // A key older than the window names nothing any more: free it.
        tx.execute(
            &format!(
                "UPDATE executions SET idempotency_key = NULL
                 WHERE function = ?1 AND idempotency_key = ?2 AND queued_at < {NOW_MS} - ?3"
            ),
            params![new.function, key, millis(admit.key_window)],
        )?;
        let first: Option<(String, Option<String>)> = tx
            .query_row(
                "SELECT id, request_digest FROM executions
                 WHERE function = ?1 AND idempotency_key = ?2",
                params![new.function, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((id, stored)) = first {
            return Ok(Enqueued::Existing {
                id,
                same_request: stored.as_ref() == Some(digest),
            });
        }
    }
    if let Some(max) = admit.max_queued {
        let queued: i64 = tx.query_row(
            "SELECT COUNT(*) FROM executions WHERE function = ?1 AND status = 'queued'",
            [&new.function],
            |r| r.get(0),
        )?;
        if u64::try_from(queued).unwrap_or_default() >= max {
            return Ok(Enqueued::Full);
        }
    }
    insert(&tx, new, admit.key.as_ref())?;
    tx.commit()?;
    Ok(Enqueued::Queued)
}

/// Puts dead letter `id` back in the queue with `budget` more attempts.
pub(super) fn retry(conn: &mut Connection, id: &str, budget: u32) -> Result<Retried, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<(String, bool)> = tx
        .query_row(
            "SELECT status, replayable FROM executions WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((status, replayable)) = found else {
        return Ok(Retried::Missing);
    };
    let status: ExecutionStatus = status.parse().map_err(StoreError::Corrupt)?;
    if !status.is_dead_letter() {
        return Ok(Retried::NotDead(status));
    }
    if !replayable {
        return Ok(Retried::NotKept);
    }
    tx.execute(
        &format!(
            "UPDATE executions SET {} WHERE id = ?1",
            requeue(NOW_MS, "?2")
        ),
        params![id, budget],
    )?;
    tx.commit()?;
    Ok(Retried::Queued)
}

/// Puts every kept dead letter of `function` (that ended within `since`) back in the queue.
pub(super) fn redrive(
    conn: &mut Connection,
    function: &str,
    since: Option<Duration>,
    budget: u32,
) -> Result<u64, StoreError> {
    let redriven = conn.execute(
        &format!(
            "UPDATE executions SET {}
             WHERE function = ?1 AND status IN {DEAD_LETTERS} AND replayable
               AND (?3 IS NULL OR finished_at >= {NOW_MS} - ?3)",
            requeue(NOW_MS, "?2")
        ),
        params![function, budget, since.map(millis)],
    )?;
    Ok(redriven as u64)
}

/// Claims up to `limit` due deliveries of `kind` for `node`, for `lease`.
pub(super) fn due(
    conn: &mut Connection,
    kind: Delivery,
    node: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Due>, StoreError> {
    let p = kind.column();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due = {
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE executions SET {p}_at = {NOW_MS} + ?2, {p}_by = ?1
             WHERE id IN (SELECT id FROM executions
                          WHERE {p}_state = 'pending' AND {p}_at <= {NOW_MS}
                          ORDER BY {p}_at LIMIT +?3)
             RETURNING {COLUMNS}, {p}_attempts, hops"
        ))?;
        let columns = COLUMNS.split(',').count();
        let rows = stmt.query_map(params![node, millis(lease), limit], |row| {
            Ok(Due {
                execution: execution_from_row(row)?,
                attempts: row.get(columns)?,
                hops: row.get(columns + 1)?,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    Ok(due)
}

/// Records how `node`'s delivery of `kind` for execution `id` went, if it still holds the claim.
pub(super) fn done(
    conn: &mut Connection,
    kind: Delivery,
    id: &str,
    node: &str,
    outcome: Delivered,
) -> Result<bool, StoreError> {
    let p = kind.column();
    let retry_in = match outcome {
        Delivered::RetryIn(wait) => Some(millis(wait)),
        _ => None,
    };
    let written = conn.execute(
        &format!(
            "UPDATE executions SET {p}_state = ?2,
                 {p}_at = CASE WHEN ?3 IS NOT NULL THEN {NOW_MS} + ?3 END,
                 {p}_attempts = {p}_attempts + 1, {p}_by = NULL
             WHERE id = ?1 AND {p}_by = ?4 AND {p}_state = 'pending'"
        ),
        params![id, delivery_state(&outcome), retry_in, node],
    )?;
    Ok(written > 0)
}
