//! [`ExecutionStore`] on SQLite: tables `executions`, `logs` and `schedules`, on their own connection.
//!
//! The queue is the `executions` table itself: a queued row is due at `next_at`; claiming flips it to
//! `running`, counts the attempt and leases it to the claiming node (`claimed_by`, `lease_until`) in the
//! same statement, so no two workers ever claim one execution; an attempt's result is recorded only while
//! the row is still running that attempt under that node's claim. Every time compared is [`NOW_MS`], the
//! database's clock. Rows are written in `records.rs`.

use super::records::{insert, insert_claimed, record};
use super::rows::{
    corrupt, execution_from_row, log_from_row, summary, u64_of, COLUMNS, LOG_COLUMNS,
};
use super::{millis, queue, rollups, run_on, SqliteStore, NOW_MS};
use crate::executions::{
    Admit, Claim, Claimed, Delivered, Delivery, Due, Enqueued, ExecutionStore, NewExecution, Page,
    QueueStats, Retention, Retried, StoredRequest, Write, Written,
};
use crate::sql::{give_back, release};
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wafer_api::{Execution, ExecutionStats, LogEntry, LogLevel, MinuteRollup};

impl SqliteStore {
    pub(super) async fn with_executions<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(&self.executions, f).await
    }
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn write(
        &self,
        writes: Arc<[Write]>,
        claim: Option<Claim>,
    ) -> Result<Written, StoreError> {
        self.with_executions(move |conn| {
            let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The claim takes the work due before this batch first, then the batch's own queued
            // executions, which are inserted already claimed: each row written once, not twice.
            let mut claimed = match &claim {
                None => Ok(Vec::new()),
                // A savepoint, so a claim that fails leaves the writes standing.
                Some(claim) => {
                    let savepoint = tx.savepoint()?;
                    let claimed = claim_due(&savepoint, claim);
                    if claimed.is_ok() {
                        savepoint.commit()?;
                    }
                    claimed
                }
            };
            let mut take = match (&claim, &claimed) {
                (Some(claim), Ok(due)) => claim.left_after(due),
                _ => 0,
            };
            let mut applied = Vec::with_capacity(writes.len());
            for write in writes.iter() {
                match write {
                    Write::Insert(new) => {
                        match (&claim, &mut claimed) {
                            (Some(claim), Ok(claimed)) if take > 0 && new.attempt.is_none() => {
                                if insert_claimed(&tx, new, claim)? {
                                    claimed.push(Claimed::first(new));
                                    take -= 1;
                                }
                            }
                            _ => {
                                insert(&tx, new, None)?;
                            }
                        }
                        applied.push(true);
                    }
                    Write::Finish {
                        id,
                        node,
                        attempt,
                        outcome,
                    } => applied.push(record(&tx, id, outcome, Some((node, *attempt)))?),
                }
            }
            tx.commit()?;
            Ok(Written { applied, claimed })
        })
        .await
    }

    async fn renew(&self, node: &str, ids: &[String], lease: Duration) -> Result<u64, StoreError> {
        let (node, ids) = (node.to_owned(), ids.to_vec());
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut held = 0;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE executions SET lease_until = {NOW_MS} + ?3
                     WHERE id = ?1 AND status = 'running' AND claimed_by = ?2"
                ))?;
                for id in &ids {
                    held += stmt.execute(params![id, node, millis(lease)])? as u64;
                }
            }
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn sweep_expired(&self) -> Result<u64, StoreError> {
        self.with_executions(|conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE executions SET {}
                     WHERE status = 'running' AND lease_until < {NOW_MS}",
                    release(NOW_MS)
                ),
                [],
            )? as u64)
        })
        .await
    }

    async fn requeue_claims(&self, node: &str) -> Result<u64, StoreError> {
        let node = node.to_owned();
        self.with_executions(move |conn| {
            Ok(conn.execute(
                &format!(
                    "UPDATE executions SET {}
                     WHERE status = 'running' AND (claimed_by = ?1 OR claimed_by IS NULL)",
                    release(NOW_MS)
                ),
                [node],
            )? as u64)
        })
        .await
    }

    async fn release_claims(&self, node: &str, ids: &[String]) -> Result<u64, StoreError> {
        let (node, ids) = (node.to_owned(), ids.to_vec());
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut released = 0;
            {
                let mut stmt = tx.prepare_cached(&format!(
                    "UPDATE executions SET {}
                     WHERE id = ?1 AND status = 'running' AND claimed_by = ?2",
                    give_back(NOW_MS)
                ))?;
                for id in &ids {
                    released += stmt.execute(params![id, node])? as u64;
                }
            }
            tx.commit()?;
            Ok(released)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<Duration>, StoreError> {
        self.with_executions(|conn| {
            let wait: Option<i64> = conn.query_row(
                &format!(
                    "SELECT MAX(0, MIN(next_at) - {NOW_MS}) FROM executions WHERE status = 'queued'"
                ),
                [],
                |r| r.get(0),
            )?;
            Ok(wait.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
        })
        .await
    }

    async fn get_execution(
        &self,
        id: &str,
        with_logs: bool,
    ) -> Result<Option<Execution>, StoreError> {
        let id = id.to_owned();
        self.with_executions(move |conn| {
            let execution = conn
                .query_row(
                    &format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"),
                    [&id],
                    execution_from_row,
                )
                .optional()?;
            let Some(mut execution) = execution else {
                return Ok(None);
            };
            if with_logs {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {LOG_COLUMNS} FROM logs WHERE execution_id = ?1 ORDER BY seq"
                ))?;
                let rows = stmt.query_map([&id], log_from_row)?;
                execution.logs = rows.collect::<Result<_, _>>()?;
            }
            Ok(Some(execution))
        })
        .await
    }

    async fn list_executions(
        &self,
        function: Option<&str>,
        page: Page,
    ) -> Result<Vec<Execution>, StoreError> {
        let function = function.map(str::to_owned);
        self.with_executions(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM executions
                 WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![
                    function,
                    page.status.map(|s| s.as_str()),
                    page.before,
                    page.limit
                ],
                execution_from_row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn logs(
        &self,
        function: &str,
        after: Option<i64>,
        limit: u32,
        level: LogLevel,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let function = function.to_owned();
        let level = level.rank();
        self.with_executions(move |conn| {
            let logs = match after {
                Some(after) => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {LOG_COLUMNS} FROM logs WHERE function = ?1 AND seq > ?2
                         AND level >= ?4 ORDER BY seq LIMIT +?3"
                    ))?;
                    let rows =
                        stmt.query_map(params![function, after, limit, level], log_from_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {LOG_COLUMNS} FROM logs WHERE function = ?1 AND level >= ?3
                         ORDER BY seq DESC LIMIT +?2"
                    ))?;
                    let rows = stmt.query_map(params![function, limit, level], log_from_row)?;
                    let mut logs = rows.collect::<Result<Vec<_>, _>>()?;
                    logs.reverse();
                    logs
                }
            };
            Ok(logs)
        })
        .await
    }

    async fn stats(&self, function: &str) -> Result<ExecutionStats, StoreError> {
        let function = function.to_owned();
        self.with_executions(move |conn| {
            let mut by_status = BTreeMap::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT status, COUNT(*) FROM executions WHERE function = ?1 GROUP BY status",
                )?;
                let rows = stmt.query_map([&function], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (status, count) = row?;
                    by_status.insert(status, u64::try_from(count).unwrap_or_default());
                }
            }
            let (duration_ms, cpu_ms, peak_memory_bytes, instantiate_us) = conn.query_row(
                "SELECT MIN(duration_us), AVG(duration_us), MAX(duration_us),
                        MIN(cpu_us), AVG(cpu_us), MAX(cpu_us),
                        MIN(peak_memory), AVG(peak_memory), MAX(peak_memory),
                        MIN(instantiate_us), AVG(instantiate_us), MAX(instantiate_us)
                 FROM executions WHERE function = ?1 AND finished_at IS NOT NULL",
                [&function],
                |r| {
                    Ok((
                        summary(r, 0, 1000.0)?,
                        summary(r, 3, 1000.0)?,
                        summary(r, 6, 1.0)?,
                        summary(r, 9, 1.0)?,
                    ))
                },
            )?;
            Ok(ExecutionStats {
                count: by_status.values().sum(),
                function,
                by_status,
                duration_ms,
                cpu_ms,
                peak_memory_bytes,
                instantiate_us,
                window: None,
            })
        })
        .await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.with_executions(|conn| {
            Ok(conn.query_row(
                &format!(
                    "SELECT (SELECT COUNT(*) FROM executions INDEXED BY executions_due
                             WHERE status = 'queued'),
                            (SELECT COUNT(*) FROM executions INDEXED BY executions_running
                             WHERE status = 'running'),
                            (SELECT MAX(0, {NOW_MS} - MIN(queued_at))
                             FROM executions INDEXED BY executions_due WHERE status = 'queued')"
                ),
                [],
                |r| {
                    Ok(QueueStats {
                        queued: u64_of(r.get(0)?).unwrap_or_default(),
                        running: u64_of(r.get(1)?).unwrap_or_default(),
                        oldest_age: u64_of(r.get(2)?).map(Duration::from_millis),
                    })
                },
            )?)
        })
        .await
    }

    async fn add_rollups(&self, rollups: Vec<MinuteRollup>) -> Result<(), StoreError> {
        self.with_executions(move |conn| rollups::add(conn, &rollups))
            .await
    }

    async fn rollups(
        &self,
        function: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>, StoreError> {
        let function = function.map(str::to_owned);
        self.with_executions(move |conn| rollups::since(conn, function.as_deref(), since_ms))
            .await
    }

    /// See `retention.rs`.
    async fn prune(&self, retention: Retention) -> Result<u64, StoreError> {
        self.prune_records(retention).await
    }

    async fn due_deliveries(
        &self,
        kind: Delivery,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError> {
        let node = node.to_owned();
        self.with_executions(move |conn| queue::due(conn, kind, &node, lease, limit))
            .await
    }

    async fn delivery_done(
        &self,
        kind: Delivery,
        id: &str,
        node: &str,
        outcome: Delivered,
    ) -> Result<bool, StoreError> {
        let (id, node) = (id.to_owned(), node.to_owned());
        self.with_executions(move |conn| queue::done(conn, kind, &id, &node, outcome))
            .await
    }

    async fn enqueue(&self, new: NewExecution, admit: Admit) -> Result<Enqueued, StoreError> {
        self.with_executions(move |conn| queue::enqueue(conn, &new, &admit))
            .await
    }

    async fn retry(&self, id: &str, budget: u32) -> Result<Retried, StoreError> {
        let id = id.to_owned();
        self.with_executions(move |conn| queue::retry(conn, &id, budget))
            .await
    }

    async fn redrive(
        &self,
        function: &str,
        since: Option<Duration>,
        budget: u32,
    ) -> Result<u64, StoreError> {
        let function = function.to_owned();
        self.with_executions(move |conn| queue::redrive(conn, &function, since, budget))
            .await
    }

    async fn last_tick(&self, function: &str) -> Result<Option<i64>, StoreError> {
        let function = function.to_owned();
        self.with_executions(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT last_tick FROM schedules WHERE function = ?1",
                    [&function],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn fire_tick(
        &self,
        function: &str,
        tick: i64,
        execution: NewExecution,
    ) -> Result<bool, StoreError> {
        let function = function.to_owned();
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let last: Option<i64> = tx
                .query_row(
                    "SELECT last_tick FROM schedules WHERE function = ?1",
                    [&function],
                    |r| r.get(0),
                )
                .optional()?;
            if last.is_some_and(|last| last >= tick) {
                return Ok(false);
            }
            insert(&tx, &execution, None)?;
            tx.execute(
                "INSERT INTO schedules (function, last_tick) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET last_tick = excluded.last_tick",
                params![function, tick],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

/// Claims what `claim` asks for: due queued executions, oldest due first, marked running with their
/// attempt counted and leased to the claiming node.
fn claim_due(conn: &Connection, claim: &Claim) -> Result<Vec<Claimed>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "UPDATE executions SET status = 'running', attempts = attempts + 1,
             started_at = {NOW_MS}, next_at = NULL,
             claimed_by = ?1, lease_until = {NOW_MS} + ?2
         WHERE id IN (SELECT id FROM executions
                      WHERE status = 'queued' AND next_at <= {NOW_MS}
                      ORDER BY next_at, id LIMIT +?3)
         RETURNING id, function, trigger, attempts, max_attempts, queued_at, request, body,
                   qualifier, hops, callback_url IS NOT NULL"
    ))?;
    let rows = stmt.query_map(
        params![claim.node, millis(claim.lease), claim.limit],
        |row| {
            let trigger: String = row.get(2)?;
            let request: Option<String> = row.get(6)?;
            Ok(Claimed {
                id: row.get(0)?,
                function: row.get(1)?,
                trigger: trigger.parse().map_err(|e| corrupt(2, e))?,
                attempt: row.get(3)?,
                max_attempts: row.get(4)?,
                queued_at: row.get(5)?,
                request: request
                    .map(|r| serde_json::from_str::<StoredRequest>(&r))
                    .transpose()
                    .map_err(|e| corrupt(6, e.to_string()))?,
                body: row.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
                qualifier: row.get(8)?,
                hops: row.get(9)?,
                callback: row.get(10)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
