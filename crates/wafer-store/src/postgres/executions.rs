//! [`ExecutionStore`] on PostgreSQL: tables `executions`, `logs` and `schedules`, shared by every node.
//!
//! - A claim takes due rows with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never take the same
//!   execution and never wait for each other; the claim names the node and leases the row in database
//!   time.
//! - An attempt's end is written only `WHERE claimed_by = node AND attempts = n` (fencing).
//! - Log lines take their `seq` under one advisory lock held to the commit, so lines commit in `seq`
//!   order and a follower paging on by `seq` never skips one a slower writer commits later.
//! - A batch that queues work or writes log lines notifies the other nodes when it commits.
//! - Inserts are idempotent by id, so a batch retried after a lost connection cannot fail on its own
//!   first, committed, try.

use super::batch::{Ends, NewRows};
use super::cluster::notify;
use super::lines::Lines;
use super::rows::{execution_from_row, log_from_row, summary, COLUMNS, LOG_COLUMNS};
use super::{big, millis, queue, unsigned, PgStore, NOW_MS};
use crate::executions::{
    Admit, Claim, Claimed, Delivered, Delivery, Due, Enqueued, ExecutionStore, NewExecution, Page,
    QueueStats, Retention, Retried, StoredRequest, Write, Written,
};
use crate::sql::{give_back, new_row, prunable, ranked_finished, release, FINAL};
use crate::StoreError;
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wafer_api::{Execution, ExecutionStats, ExecutionStatus, LogEntry, LogLevel, MinuteRollup};

/// Stores `new` under idempotency `key` (with its request's digest), if any; `false` when an
/// execution with its id (or its key) is stored already.
pub(super) async fn insert(
    tx: &Transaction<'_>,
    new: &NewExecution,
    key: Option<&(String, String)>,
) -> Result<bool, StoreError> {
    let (request, status, attempts, queued) = new_row(new)?;
    let statement = tx
        .prepare_cached(&format!(
            "INSERT INTO executions (id, function, version, trigger, status, attempts, max_attempts,
                 queued_at, next_at, request, body, callback_url, qualifier, hops, replayable,
                 idempotency_key, request_digest)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN {NOW_MS} END, $10, $11, $12,
                 $13, $14, $9, $15, $16)
             ON CONFLICT DO NOTHING"
        ))
        .await?;
    let inserted = tx
        .execute(
            &statement,
            &[
                &new.id,
                &new.function,
                &i64::from(new.version),
                &new.trigger.as_str(),
                &status.as_str(),
                &i64::from(attempts),
                &i64::from(new.max_attempts),
                &new.queued_at,
                &queued,
                &request,
                &new.body,
                &new.callback_url,
                &new.qualifier,
                &i64::from(new.hops),
                &key.map(|(key, _)| key),
                &key.map(|(_, digest)| digest),
            ],
        )
        .await?;
    Ok(inserted > 0)
}

/// Runs one `UPDATE executions SET …` that moves rows back to the queue and counts them, telling the
/// other nodes when some were.
async fn requeue(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let moved = client
        .query(&format!("{sql} RETURNING status"), params)
        .await?;
    if moved.iter().any(|row| row.get::<_, &str>(0) == "queued") {
        notify(client, "queue").await?;
    }
    Ok(moved.len() as u64)
}

#[async_trait]
impl ExecutionStore for PgStore {
    async fn write(
        &self,
        writes: Arc<[Write]>,
        claim: Option<Claim>,
    ) -> Result<Written, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut applied = vec![false; writes.len()];
        let mut lines = Lines::default();
        let mut queued = false;
        // Every new row, then every attempt's end; the batch's order holds within each.
        let mut rows = NewRows::default();
        let mut ends = Ends::default();
        // Each write's round of `ends`, for those that end an attempt.
        let mut rounds = vec![None; writes.len()];
        for (i, write) in writes.iter().enumerate() {
            match write {
                Write::Insert(new) => rows.add(new)?,
                Write::Finish {
                    id,
                    node,
                    attempt,
                    outcome,
                } => rounds[i] = Some(ends.add(id, outcome, (node, *attempt))),
            }
        }
        // The claim takes the work due before this batch first, then the batch's own queued rows,
        // which are inserted already claimed: one row version each instead of two.
        let mut claimed = match &claim {
            None => Ok(Vec::new()),
            // Alone in its transaction, or in a savepoint, so a claim that fails leaves the writes
            // standing.
            Some(claim) if writes.is_empty() => claim_due(&tx, claim).await,
            // The savepoint and the claim go in one round trip; the commit releases the savepoint.
            Some(claim) => {
                let (savepoint, claimed) =
                    tokio::join!(tx.batch_execute("SAVEPOINT claim"), claim_due(&tx, claim));
                savepoint?;
                if claimed.is_err() {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT claim").await?;
                }
                claimed
            }
        };
        let take = match (&claim, &claimed) {
            (Some(claim), Ok(due)) => claim.left_after(due),
            _ => 0,
        };
        // Statements that do not depend on each other's answers are sent together, each batch of them
        // one round trip: the inserts with the ends, then the notification with the log lines.
        let (mut inserted, ended) =
            tokio::try_join!(rows.insert(&tx, claim.as_ref(), take), ends.record(&tx))?;
        for (i, write) in writes.iter().enumerate() {
            match write {
                Write::Insert(new) => {
                    applied[i] = true;
                    // Taken out, so that of two inserts of one id only the one that took counts.
                    let took = inserted.ids.remove(&new.id);
                    match &new.attempt {
                        None if took && inserted.claimed.remove(&new.id) => {
                            if let Ok(claimed) = &mut claimed {
                                claimed.push(Claimed::first(new));
                            }
                        }
                        None => queued |= took,
                        Some(attempt) if took => lines.add(&new.id, attempt),
                        Some(_) => {}
                    }
                }
                Write::Finish { id, outcome, .. } => {
                    applied[i] = rounds[i].is_some_and(|round| ended[round].contains(id));
                    if applied[i] {
                        lines.add(id, outcome);
                        queued |= outcome.status == Some(ExecutionStatus::Queued);
                    }
                }
            }
        }
        let notified = async {
            match queued {
                true => notify(&tx, "queue").await,
                false => Ok(()),
            }
        };
        tokio::try_join!(notified, lines.insert(&tx))?;
        tx.commit().await?;
        Ok(Written { applied, claimed })
    }

    async fn renew(&self, node: &str, ids: &[String], lease: Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                &format!(
                    "UPDATE executions SET lease_until = {NOW_MS} + $3
                     WHERE id = ANY($1) AND status = 'running' AND claimed_by = $2"
                ),
                &[&ids, &node, &millis(lease)],
            )
            .await?)
    }

    async fn sweep_expired(&self) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "UPDATE executions SET {} WHERE status = 'running' AND lease_until < {NOW_MS}",
            release(NOW_MS)
        );
        let moved = requeue(&tx, &sql, &[]).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn requeue_claims(&self, node: &str) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "UPDATE executions SET {}
             WHERE status = 'running' AND (claimed_by = $1 OR claimed_by IS NULL)",
            release(NOW_MS)
        );
        let moved = requeue(&tx, &sql, &[&node]).await?;
        tx.commit().await?;
        Ok(moved)
    }

    async fn release_claims(&self, node: &str, ids: &[String]) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "UPDATE executions SET {}
             WHERE id = ANY($1) AND status = 'running' AND claimed_by = $2",
            give_back(NOW_MS)
        );
        let released = requeue(&tx, &sql, &[&ids, &node]).await?;
        tx.commit().await?;
        Ok(released)
    }

    async fn next_due(&self) -> Result<Option<Duration>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                // PostgreSQL's GREATEST skips NULLs, so the clamp at zero is done below.
                "SELECT MIN(next_at) - {NOW_MS} FROM executions WHERE status = 'queued'"
            ))
            .await?;
        let wait: Option<i64> = client.query_one(&statement, &[]).await?.try_get(0)?;
        Ok(wait.map(|ms| Duration::from_millis(unsigned(ms.max(0)))))
    }

    async fn get_execution(
        &self,
        id: &str,
        with_logs: bool,
    ) -> Result<Option<Execution>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM executions WHERE id = $1"),
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut execution = execution_from_row(&row)?;
        if with_logs {
            execution.logs = client
                .query(
                    &format!("SELECT {LOG_COLUMNS} FROM logs WHERE execution_id = $1 ORDER BY seq"),
                    &[&id],
                )
                .await?
                .iter()
                .map(log_from_row)
                .collect::<Result<_, _>>()?;
        }
        Ok(Some(execution))
    }

    async fn list_executions(
        &self,
        function: Option<&str>,
        page: Page,
    ) -> Result<Vec<Execution>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM executions
                     WHERE ($1::TEXT IS NULL OR function = $1) AND ($2::TEXT IS NULL OR status = $2)
                       AND ($3::TEXT IS NULL OR id < $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[
                    &function,
                    &page.status.map(|s| s.as_str()),
                    &page.before,
                    &i64::from(page.limit),
                ],
            )
            .await?;
        rows.iter().map(execution_from_row).collect()
    }

    async fn logs(
        &self,
        function: &str,
        after: Option<i64>,
        limit: u32,
        level: LogLevel,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let client = self.client().await?;
        let level = i64::from(level.rank());
        let limit = i64::from(limit);
        let logs = match after {
            Some(after) => {
                let statement = client
                    .prepare_cached(&format!(
                        "SELECT {LOG_COLUMNS} FROM logs WHERE function = $1 AND seq > $2
                         AND level >= $4 ORDER BY seq LIMIT $3"
                    ))
                    .await?;
                client
                    .query(&statement, &[&function, &after, &limit, &level])
                    .await?
                    .iter()
                    .map(log_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let statement = client
                    .prepare_cached(&format!(
                        "SELECT {LOG_COLUMNS} FROM logs WHERE function = $1 AND level >= $3
                         ORDER BY seq DESC LIMIT $2"
                    ))
                    .await?;
                let mut logs = client
                    .query(&statement, &[&function, &limit, &level])
                    .await?
                    .iter()
                    .map(log_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                logs.reverse();
                logs
            }
        };
        Ok(logs)
    }

    async fn stats(&self, function: &str) -> Result<ExecutionStats, StoreError> {
        let client = self.client().await?;
        let mut by_status = BTreeMap::new();
        for row in client
            .query(
                "SELECT status, COUNT(*) FROM executions WHERE function = $1 GROUP BY status",
                &[&function],
            )
            .await?
        {
            by_status.insert(row.try_get::<_, String>(0)?, unsigned(row.try_get(1)?));
        }
        let row = client
            .query_one(
                "SELECT MIN(duration_us)::FLOAT8, AVG(duration_us)::FLOAT8, MAX(duration_us)::FLOAT8,
                        MIN(cpu_us)::FLOAT8, AVG(cpu_us)::FLOAT8, MAX(cpu_us)::FLOAT8,
                        MIN(peak_memory)::FLOAT8, AVG(peak_memory)::FLOAT8, MAX(peak_memory)::FLOAT8,
                        MIN(instantiate_us)::FLOAT8, AVG(instantiate_us)::FLOAT8,
                        MAX(instantiate_us)::FLOAT8
                 FROM executions WHERE function = $1 AND finished_at IS NOT NULL",
                &[&function],
            )
            .await?;
        Ok(ExecutionStats {
            count: by_status.values().sum(),
            function: function.to_string(),
            by_status,
            duration_ms: summary(&row, 0, 1000.0)?,
            cpu_ms: summary(&row, 3, 1000.0)?,
            peak_memory_bytes: summary(&row, 6, 1.0)?,
            instantiate_us: summary(&row, 9, 1.0)?,
            window: None,
        })
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT COUNT(*) FILTER (WHERE status = 'queued'),
                            COUNT(*) FILTER (WHERE status = 'running'),
                            {NOW_MS} - MIN(queued_at) FILTER (WHERE status = 'queued')
                     FROM executions WHERE status IN ('queued', 'running')"
                ),
                &[],
            )
            .await?;
        Ok(QueueStats {
            queued: unsigned(row.try_get(0)?),
            running: unsigned(row.try_get(1)?),
            oldest_age: row
                .try_get::<_, Option<i64>>(2)?
                .map(|ms| Duration::from_millis(unsigned(ms.max(0)))),
        })
    }

    async fn add_rollups(&self, rollups: Vec<MinuteRollup>) -> Result<(), StoreError> {
        let client = self.client().await?;
        super::rollups::add(&client, &rollups).await
    }

    async fn rollups(
        &self,
        function: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>, StoreError> {
        let client = self.client().await?;
        super::rollups::since(&client, function, since_ms).await
    }

    async fn prune(&self, retention: Retention) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        super::rollups::prune(&tx).await?;
        let ids: Vec<String> = tx
            .query(
                &format!(
                    "SELECT id FROM ({}) ranked WHERE {}",
                    ranked_finished(),
                    prunable(NOW_MS, "$1", "$2", "$3", "$4")
                ),
                &[
                    &big(retention.per_function),
                    &millis(retention.older_than),
                    &big(retention.dead_per_function),
                    &millis(retention.dead_older_than),
                ],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        // An execution retried since it was read is not finished any more, and is kept.
        let deleted: Vec<String> = tx
            .query(
                &format!(
                    "DELETE FROM executions WHERE id = ANY($1) AND status IN {FINAL} RETURNING id"
                ),
                &[&ids],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM logs WHERE execution_id = ANY($1)", &[&deleted])
            .await?;
        tx.commit().await?;
        Ok(deleted.len() as u64)
    }

    async fn due_deliveries(
        &self,
        kind: Delivery,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        queue::due(&self.client().await?, kind, node, lease, limit).await
    }

    async fn delivery_done(
        &self,
        kind: Delivery,
        id: &str,
        node: &str,
        outcome: Delivered,
    ) -> Result<bool, StoreError> {
        queue::done(&self.client().await?, kind, id, node, outcome).await
    }

    async fn enqueue(&self, new: NewExecution, admit: Admit) -> Result<Enqueued, StoreError> {
        queue::enqueue(&mut self.client().await?, &new, &admit).await
    }

    async fn retry(&self, id: &str, budget: u32) -> Result<Retried, StoreError> {
        queue::retry(&mut self.client().await?, id, budget).await
    }

    async fn redrive(
        &self,
        function: &str,
        since: Option<Duration>,
        budget: u32,
    ) -> Result<u64, StoreError> {
        queue::redrive(&self.client().await?, function, since, budget).await
    }

    async fn last_tick(&self, function: &str) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT last_tick FROM schedules WHERE function = $1",
                &[&function],
            )
            .await?
            .map(|row| row.try_get(0))
            .transpose()?)
    }

    async fn fire_tick(
        &self,
        function: &str,
        tick: i64,
        execution: NewExecution,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Only the first node to record a tick gets a row back: the others wait for its commit, then
        // find the tick recorded.
        let fired = tx
            .query_opt(
                "INSERT INTO schedules (function, last_tick) VALUES ($1, $2)
                 ON CONFLICT (function) DO UPDATE SET last_tick = excluded.last_tick
                 WHERE schedules.last_tick < excluded.last_tick
                 RETURNING last_tick",
                &[&function, &tick],
            )
            .await?
            .is_some();
        if !fired {
            return Ok(false);
        }
        insert(&tx, &execution, None).await?;
        notify(&tx, "queue").await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Claims what `claim` asks for: due queued executions, oldest due first, marked running with their
/// attempt counted and leased to the claiming node.
async fn claim_due(client: &impl GenericClient, claim: &Claim) -> Result<Vec<Claimed>, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "UPDATE executions e SET status = 'running', attempts = e.attempts + 1,
                 started_at = {NOW_MS}, next_at = NULL,
                 claimed_by = $1, lease_until = {NOW_MS} + $2
             FROM (SELECT id FROM executions
                   WHERE status = 'queued' AND next_at <= {NOW_MS}
                   ORDER BY next_at, id LIMIT $3
                   FOR UPDATE SKIP LOCKED) due
             WHERE e.id = due.id
             RETURNING e.id, e.function, e.trigger, e.attempts, e.max_attempts, e.queued_at,
                       e.request, e.body, e.qualifier, e.hops, e.callback_url IS NOT NULL"
        ))
        .await?;
    let rows = client
        .query(
            &statement,
            &[&claim.node, &millis(claim.lease), &i64::from(claim.limit)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let trigger: String = row.try_get(2)?;
            let request: Option<String> = row.try_get(6)?;
            Ok(Claimed {
                id: row.try_get(0)?,
                function: row.try_get(1)?,
                trigger: trigger.parse().map_err(StoreError::Corrupt)?,
                attempt: u32::try_from(row.try_get::<_, i64>(3)?).unwrap_or(u32::MAX),
                max_attempts: u32::try_from(row.try_get::<_, i64>(4)?).unwrap_or_default(),
                queued_at: row.try_get(5)?,
                request: request
                    .map(|r| serde_json::from_str::<StoredRequest>(&r))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("stored request: {e}")))?,
                body: row.try_get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
                qualifier: row.try_get(8)?,
                hops: u32::try_from(row.try_get::<_, i64>(9)?).unwrap_or_default(),
                callback: row.try_get(10)?,
            })
        })
        .collect()
}
