//! The parts of [`crate::ExecutionStore`] on PostgreSQL that admit work to the queue and take it back:
//! bounded and idempotent submission, the retry and redrive of dead letters, and the deliveries a
//! finished execution owes (callbacks and destinations), claimed with `FOR UPDATE SKIP LOCKED` like
//! queued work.
//!
//! Two submissions with one idempotency key race on the key's unique index: the second waits for the
//! first to commit, inserts nothing, and answers with the first's execution.

use super::cluster::notify;
use super::executions::insert;
use super::rows::{execution_from_row, COLUMNS};
use super::{millis, NOW_MS};
use crate::executions::{Admit, Delivered, Delivery, Due, Enqueued, NewExecution, Retried};
use crate::sql::{delivery_state, requeue, DEAD_LETTERS};
use crate::StoreError;
use deadpool_postgres::{GenericClient, Object};
use std::time::Duration;
use wafer_api::ExecutionStatus;

/// The execution holding idempotency `key` of `function`, with its request's digest.
async fn keyed(
    client: &impl GenericClient,
    function: &str,
    key: &str,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    Ok(client
        .query_opt(
            "SELECT id, request_digest FROM executions
             WHERE function = $1 AND idempotency_key = $2",
            &[&function, &key],
        )
        .await?
        .map(|row| (row.get(0), row.get(1))))
}

/// Stores `new` unless its key names an earlier execution or its function's queue is full.
pub(super) async fn enqueue(
    client: &mut Object,
    new: &NewExecution,
    admit: &Admit,
) -> Result<Enqueued, StoreError> {
    let existing = |(id, stored): (String, Option<String>), digest: &str| Enqueued::Existing {
        id,
        same_request: stored.as_deref() == Some(digest),
    };
    let tx = client.transaction().await?;
    if let Some((key, digest)) = &admit.key {
        // A key older than the window names nothing any more: free it.
        tx.execute(
            &format!(
                "UPDATE executions SET idempotency_key = NULL
                 WHERE function = $1 AND idempotency_key = $2 AND queued_at < {NOW_MS} - $3"
            ),
            &[&new.function, key, &millis(admit.key_window)],
        )
        .await?;
        if let Some(first) = keyed(&tx, &new.function, key).await? {
            return Ok(existing(first, digest));
        }
    }
    if let Some(max) = admit.max_queued {
        let queued: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM executions WHERE function = $1 AND status = 'queued'",
                &[&new.function],
            )
            .await?
            .try_get(0)?;
        if u64::try_from(queued).unwrap_or_default() >= max {
            return Ok(Enqueued::Full);
        }
    }
    if !insert(&tx, new, admit.key.as_ref()).await? {
        if let Some((key, digest)) = &admit.key {
            // A concurrent submission with the key committed first.
            if let Some(first) = keyed(&tx, &new.function, key).await? {
                return Ok(existing(first, digest));
            }
        }
    }
    notify(&tx, "queue").await?;
    tx.commit().await?;
    Ok(Enqueued::Queued)
}

/// Puts dead letter `id` back in the queue with `budget` more attempts.
pub(super) async fn retry(
    client: &mut Object,
    id: &str,
    budget: u32,
) -> Result<Retried, StoreError> {
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT status, replayable FROM executions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok(Retried::Missing);
    };
    let status: ExecutionStatus = row
        .try_get::<_, String>(0)?
        .parse()
        .map_err(StoreError::Corrupt)?;
    if !status.is_dead_letter() {
        return Ok(Retried::NotDead(status));
    }
    if !row.try_get::<_, bool>(1)? {
        return Ok(Retried::NotKept);
    }
    tx.execute(
        &format!(
            "UPDATE executions SET {} WHERE id = $1",
            requeue(NOW_MS, "$2")
        ),
        &[&id, &i64::from(budget)],
    )
    .await?;
    notify(&tx, "queue").await?;
    tx.commit().await?;
    Ok(Retried::Queued)
}

/// Puts every kept dead letter of `function` (that ended within `since`) back in the queue.
pub(super) async fn redrive(
    client: &impl GenericClient,
    function: &str,
    since: Option<Duration>,
    budget: u32,
) -> Result<u64, StoreError> {
    let redriven = client
        .execute(
            &format!(
                "UPDATE executions SET {}
                 WHERE function = $1 AND status IN {DEAD_LETTERS} AND replayable
                   AND ($3::BIGINT IS NULL OR finished_at >= {NOW_MS} - $3)",
                requeue(NOW_MS, "$2")
            ),
            &[&function, &i64::from(budget), &since.map(millis)],
        )
        .await?;
    if redriven > 0 {
        notify(client, "queue").await?;
    }
    Ok(redriven)
}

/// Claims up to `limit` due deliveries of `kind` for `node`, for `lease`.
pub(super) async fn due(
    client: &impl GenericClient,
    kind: Delivery,
    node: &str,
    lease: Duration,
    limit: u32,
) -> Result<Vec<Due>, StoreError> {
    let p = kind.column();
    let columns = COLUMNS
        .split(',')
        .map(|c| format!("e.{}", c.trim()))
        .collect::<Vec<_>>();
    let statement = client
        .prepare_cached(&format!(
            "UPDATE executions e SET {p}_at = {NOW_MS} + $2, {p}_by = $1
             FROM (SELECT id FROM executions
                   WHERE {p}_state = 'pending' AND {p}_at <= {NOW_MS}
                   ORDER BY {p}_at LIMIT $3
                   FOR UPDATE SKIP LOCKED) due
             WHERE e.id = due.id
             RETURNING {}, e.{p}_attempts, e.hops",
            columns.join(", ")
        ))
        .await?;
    let rows = client
        .query(&statement, &[&node, &millis(lease), &i64::from(limit)])
        .await?;
    let count = |row: &tokio_postgres::Row, i: usize| -> Result<u32, StoreError> {
        Ok(u32::try_from(row.try_get::<_, i64>(i)?).unwrap_or(u32::MAX))
    };
    rows.iter()
        .map(|row| {
            Ok(Due {
                execution: execution_from_row(row)?,
                attempts: count(row, columns.len())?,
                hops: count(row, columns.len() + 1)?,
            })
        })
        .collect()
}

/// Records how `node`'s delivery of `kind` for execution `id` went, if it still holds the claim.
pub(super) async fn done(
    client: &impl GenericClient,
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
    let written = client
        .execute(
            &format!(
                "UPDATE executions SET {p}_state = $2,
                     {p}_at = CASE WHEN $3::BIGINT IS NOT NULL THEN {NOW_MS} + $3 END,
                     {p}_attempts = {p}_attempts + 1, {p}_by = NULL
                 WHERE id = $1 AND {p}_by = $4 AND {p}_state = 'pending'"
            ),
            &[&id, &delivery_state(&outcome), &retry_in, &node],
        )
        .await?;
    Ok(written > 0)
}
