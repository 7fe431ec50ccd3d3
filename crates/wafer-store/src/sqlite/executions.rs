//! [`ExecutionStore`] on SQLite: tables `executions`, `logs` and `schedules`, on their own connection.
//!
//! The queue is the `executions` table itself: a queued row is due at `next_at`; claiming flips it to
//! `running` and counts the attempt in the same statement, so no two workers ever claim one execution; an
//! attempt's result is recorded only while the row is still running that attempt.

use crate::executions::{
    Attempt, Claimed, DueCallback, ExecutionStore, NewExecution, Page, QueueStats, Retention,
    StoredRequest, Write,
};
use crate::sqlite::run_on;
use crate::{SqliteStore, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::collections::BTreeMap;
use wafer_api::{
    Execution, ExecutionStats, ExecutionStatus, ExecutionUsage, LogEntry, LogLevel, Summary,
};

const COLUMNS: &str = "id, function, version, trigger, status, attempts, max_attempts, queued_at, \
     started_at, finished_at, next_at, duration_us, http_status, exit_code, error, output, \
     output_truncated, instantiate_us, cpu_us, peak_memory, fuel, callback_url, callback_state";

const FINAL: &str = "('succeeded', 'failed', 'dead')";

/// Milliseconds since the epoch as RFC 3339 UTC, with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn corrupt(column: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, what.into())
}

fn u64_of(value: Option<i64>) -> Option<u64> {
    value.map(|v| u64::try_from(v).unwrap_or_default())
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a row of [`COLUMNS`].
fn execution_from_row(row: &Row<'_>) -> rusqlite::Result<Execution> {
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
        logs: Vec::new(),
    })
}

fn log_from_row(row: &Row<'_>) -> rusqlite::Result<LogEntry> {
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

const LOG_COLUMNS: &str = "seq, execution_id, function, at, stream, line, level";

fn insert(tx: &rusqlite::Transaction<'_>, new: &NewExecution) -> Result<(), StoreError> {
    let request = new
        .request
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("request does not serialise: {e}")))?;
    let (status, attempts, next_at) = match &new.attempt {
        Some(attempt) => (
            attempt.status.unwrap_or(ExecutionStatus::Failed),
            1,
            attempt.next_at,
        ),
        None => (ExecutionStatus::Queued, 0, Some(new.queued_at)),
    };
    tx.prepare_cached(
        "INSERT INTO executions (id, function, version, trigger, status, attempts, max_attempts,
             queued_at, next_at, request, body, callback_url)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        new.id,
        new.function,
        new.version,
        new.trigger.as_str(),
        status.as_str(),
        attempts,
        new.max_attempts,
        new.queued_at,
        next_at,
        request,
        new.body,
        new.callback_url,
    ])?;
    if let Some(attempt) = &new.attempt {
        record(tx, &new.id, attempt, None)?;
    }
    Ok(())
}

/// Writes an attempt's result and logs onto its row. With `running`, only while the row is still running
/// that attempt number; returns whether the row was written.
fn record(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    attempt: &Attempt,
    running: Option<u32>,
) -> Result<bool, StoreError> {
    let status = attempt.status.unwrap_or(ExecutionStatus::Failed);
    let usage = attempt.usage;
    let written = tx
        .prepare_cached(&format!(
            "UPDATE executions SET status = ?2, version = ?3, started_at = ?4, finished_at = ?5,
                 duration_us = ?6, http_status = ?7, exit_code = ?8, error = ?9, output = ?10,
                 output_truncated = ?11, instantiate_us = ?12, cpu_us = ?13, peak_memory = ?14,
                 fuel = ?15, next_at = ?16,
                 callback_state = CASE WHEN callback_url IS NOT NULL AND ?2 IN {FINAL}
                                  THEN 'pending' ELSE callback_state END,
                 callback_at = ?5,
                 -- The request is not needed once nothing will run it again.
                 request = CASE WHEN ?2 IN {FINAL} THEN NULL ELSE request END,
                 body = CASE WHEN ?2 IN {FINAL} THEN NULL ELSE body END
             WHERE id = ?1 AND (?17 IS NULL OR (status = 'running' AND attempts = ?17))"
        ))?
        .execute(params![
            id,
            status.as_str(),
            attempt.version,
            attempt.started_at,
            attempt.finished_at,
            i64_of(attempt.duration_us),
            attempt.http_status,
            attempt.exit_code,
            attempt.error,
            attempt.output,
            attempt.output_truncated,
            usage.map(|u| i64_of(u.instantiate_us)),
            usage.map(|u| i64_of(u.cpu_us)),
            usage.map(|u| i64_of(u.peak_memory_bytes)),
            usage.and_then(|u| u.fuel_consumed).map(i64_of),
            attempt.next_at,
            running,
        ])?;
    if written == 0 {
        return Ok(false);
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO logs (execution_id, function, at, stream, line, level)
         SELECT id, function, ?2, ?3, ?4, ?5 FROM executions WHERE id = ?1",
    )?;
    for log in &attempt.logs {
        stmt.execute(params![
            id,
            attempt.finished_at,
            log.stream,
            log.line,
            log.level.rank()
        ])?;
    }
    Ok(true)
}

fn summary(row: &Row<'_>, first: usize, scale: f64) -> rusqlite::Result<Summary> {
    let value = |i: usize| -> rusqlite::Result<f64> {
        Ok(row.get::<_, Option<f64>>(first + i)?.unwrap_or_default() / scale)
    };
    Ok(Summary {
        min: value(0)?,
        avg: value(1)?,
        max: value(2)?,
    })
}

impl SqliteStore {
    async fn with_executions<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(self.executions.clone(), f).await
    }
}

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn write(&self, writes: Vec<Write>) -> Result<Vec<bool>, StoreError> {
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut applied = Vec::with_capacity(writes.len());
            for write in &writes {
                match write {
                    Write::Insert(new) => {
                        insert(&tx, new)?;
                        applied.push(true);
                    }
                    Write::Finish {
                        id,
                        attempt,
                        outcome,
                    } => applied.push(record(&tx, id, outcome, Some(*attempt))?),
                }
            }
            tx.commit()?;
            Ok(applied)
        })
        .await
    }

    async fn claim(&self, now: i64, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = {
                let mut stmt = tx.prepare_cached(
                    "UPDATE executions SET status = 'running', attempts = attempts + 1,
                         started_at = ?1, next_at = NULL
                     WHERE id IN (SELECT id FROM executions
                                  WHERE status = 'queued' AND next_at <= ?1
                                  ORDER BY next_at, id LIMIT ?2)
                     RETURNING id, function, trigger, attempts, max_attempts, queued_at, request, body",
                )?;
                let rows = stmt.query_map(params![now, limit], |row| {
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
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }

    async fn requeue_running(&self, now: i64) -> Result<u64, StoreError> {
        self.with_executions(move |conn| {
            Ok(conn.execute(
                "UPDATE executions SET status = 'queued', next_at = ?1 WHERE status = 'running'",
                [now],
            )? as u64)
        })
        .await
    }

    async fn next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with_executions(|conn| {
            Ok(conn.query_row(
                "SELECT MIN(next_at) FROM executions WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )?)
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
        function: &str,
        page: Page,
    ) -> Result<Vec<Execution>, StoreError> {
        let function = function.to_owned();
        self.with_executions(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM executions
                 WHERE function = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3)
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
                         AND level >= ?4 ORDER BY seq LIMIT ?3"
                    ))?;
                    let rows =
                        stmt.query_map(params![function, after, limit, level], log_from_row)?;
                    rows.collect::<Result<Vec<_>, _>>()?
                }
                None => {
                    let mut stmt = conn.prepare_cached(&format!(
                        "SELECT {LOG_COLUMNS} FROM logs WHERE function = ?1 AND level >= ?3
                         ORDER BY seq DESC LIMIT ?2"
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
            })
        })
        .await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.with_executions(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FILTER (WHERE status = 'queued'),
                        COUNT(*) FILTER (WHERE status = 'running'),
                        MIN(queued_at) FILTER (WHERE status = 'queued')
                 FROM executions WHERE status IN ('queued', 'running')",
                [],
                |r| {
                    Ok(QueueStats {
                        queued: u64_of(r.get(0)?).unwrap_or_default(),
                        running: u64_of(r.get(1)?).unwrap_or_default(),
                        oldest_queued_at: r.get(2)?,
                    })
                },
            )?)
        })
        .await
    }

    async fn prune(&self, retention: Retention) -> Result<u64, StoreError> {
        self.with_executions(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT id FROM (
                         SELECT id, finished_at, callback_state,
                                ROW_NUMBER() OVER (PARTITION BY function ORDER BY id DESC) AS n
                         FROM executions WHERE status IN {FINAL})
                     WHERE (n > ?1 OR finished_at < ?2) AND callback_state IS NOT 'pending'"
                ))?;
                let rows = stmt.query_map(
                    params![i64_of(retention.per_function), retention.finished_before],
                    |r| r.get(0),
                )?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &ids {
                tx.execute("DELETE FROM logs WHERE execution_id = ?1", [id])?;
                tx.execute("DELETE FROM executions WHERE id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(ids.len() as u64)
        })
        .await
    }

    async fn due_callbacks(&self, now: i64, limit: u32) -> Result<Vec<DueCallback>, StoreError> {
        self.with_executions(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS}, callback_attempts FROM executions
                 WHERE callback_state = 'pending' AND callback_at <= ?1
                 ORDER BY callback_at LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![now, limit], |row| {
                let execution = execution_from_row(row)?;
                Ok(DueCallback {
                    url: execution.callback_url.clone().unwrap_or_default(),
                    attempts: row.get(23)?,
                    execution,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn callback_done(
        &self,
        id: &str,
        delivered: bool,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_executions(move |conn| {
            let state = match (delivered, retry_at) {
                (true, _) => "delivered",
                (false, Some(_)) => "pending",
                (false, None) => "failed",
            };
            conn.execute(
                "UPDATE executions SET callback_state = ?2, callback_at = ?3,
                     callback_attempts = callback_attempts + 1
                 WHERE id = ?1",
                params![id, state, retry_at],
            )?;
            Ok(())
        })
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
            insert(&tx, &execution)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewLog;
    use wafer_api::Trigger;

    fn queued(id: &str, function: &str, at: i64) -> NewExecution {
        NewExecution {
            id: id.into(),
            function: function.into(),
            version: 1,
            trigger: Trigger::Async,
            max_attempts: 3,
            queued_at: at,
            request: Some(StoredRequest {
                method: "POST".into(),
                path: "/".into(),
                headers: vec![("a".into(), "b".into())],
            }),
            body: b"input".to_vec(),
            callback_url: None,
            attempt: None,
        }
    }

    fn ended(status: ExecutionStatus, at: i64) -> Attempt {
        Attempt {
            status: Some(status),
            version: 1,
            started_at: at,
            finished_at: at + 5,
            duration_us: 5000,
            exit_code: Some(0),
            usage: Some(ExecutionUsage {
                instantiate_us: 10,
                cpu_us: 2000,
                peak_memory_bytes: 65536,
                fuel_consumed: None,
            }),
            logs: vec![NewLog {
                stream: "stderr",
                level: if status == ExecutionStatus::Failed {
                    LogLevel::Error
                } else {
                    LogLevel::Info
                },
                line: format!("{status} at {at}"),
            }],
            ..Default::default()
        }
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_claimed_execution_is_not_claimed_again_and_finishes_once() {
        let (_dir, store) = open();
        store
            .write(vec![Write::Insert(queued("e1", "f", 100))])
            .await
            .unwrap();
        assert!(store.claim(99, 10).await.unwrap().is_empty(), "not yet due");
        let claimed = store.claim(100, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (claimed[0].attempt, claimed[0].body.as_slice()),
            (1, &b"input"[..])
        );
        assert!(store.claim(1000, 10).await.unwrap().is_empty());
        let finish = |attempt| Write::Finish {
            id: "e1".into(),
            attempt,
            outcome: ended(ExecutionStatus::Succeeded, 200),
        };
        assert_eq!(
            store
                .write(vec![finish(1), finish(1), finish(2)])
                .await
                .unwrap(),
            [true, false, false]
        );
        let e = store.get_execution("e1", true).await.unwrap().unwrap();
        assert_eq!(
            (e.status, e.attempts, e.logs.len()),
            (ExecutionStatus::Succeeded, 1, 1)
        );
        assert_eq!(e.usage.unwrap().cpu_us, 2000);
        assert_eq!(e.duration_ms, Some(5.0));
    }

    #[tokio::test]
    async fn a_retry_waits_for_its_time_and_a_restart_requeues_running_work() {
        let (_dir, store) = open();
        store
            .write(vec![Write::Insert(queued("e1", "f", 0))])
            .await
            .unwrap();
        store.claim(0, 1).await.unwrap();
        let retry = Attempt {
            status: Some(ExecutionStatus::Queued),
            next_at: Some(500),
            ..ended(ExecutionStatus::Queued, 10)
        };
        store
            .write(vec![Write::Finish {
                id: "e1".into(),
                attempt: 1,
                outcome: retry,
            }])
            .await
            .unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(500));
        assert!(store.claim(499, 1).await.unwrap().is_empty());
        assert_eq!(store.claim(500, 1).await.unwrap()[0].attempt, 2);
        assert_eq!(store.requeue_running(600).await.unwrap(), 1);
        let again = store.claim(600, 1).await.unwrap();
        assert_eq!((again[0].attempt, again[0].request.is_some()), (3, true));
    }

    #[tokio::test]
    async fn listing_pages_newest_first_and_filters_by_status() {
        let (_dir, store) = open();
        let writes = (0..5)
            .map(|i| {
                Write::Insert(NewExecution {
                    attempt: Some(ended(
                        if i % 2 == 0 {
                            ExecutionStatus::Succeeded
                        } else {
                            ExecutionStatus::Failed
                        },
                        i,
                    )),
                    ..queued(&format!("e{i}"), "f", i)
                })
            })
            .collect();
        store.write(writes).await.unwrap();
        let page = |status, before: Option<&str>| {
            let store = store.clone();
            let before = before.map(str::to_string);
            async move {
                store
                    .list_executions(
                        "f",
                        Page {
                            status,
                            before,
                            limit: 2,
                        },
                    )
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(page(None, None).await, ["e4", "e3"]);
        assert_eq!(page(None, Some("e3")).await, ["e2", "e1"]);
        assert_eq!(
            page(Some(ExecutionStatus::Failed), None).await,
            ["e3", "e1"]
        );
        let stats = store.stats("f").await.unwrap();
        assert_eq!((stats.count, stats.by_status["succeeded"]), (5, 3));
        assert_eq!(stats.cpu_ms.max, 2.0);
        let logs = store.logs("f", None, 3, LogLevel::Trace).await.unwrap();
        assert_eq!(logs.len(), 3);
        assert!(logs[0].seq < logs[2].seq);
        assert_eq!(
            store
                .logs("f", Some(logs[1].seq), 10, LogLevel::Trace)
                .await
                .unwrap()
                .len(),
            1
        );
        let errors = store.logs("f", None, 10, LogLevel::Warn).await.unwrap();
        let errors: Vec<_> = errors.iter().map(|l| (l.level, l.line.as_str())).collect();
        assert_eq!(
            errors,
            [
                (LogLevel::Error, "failed at 1"),
                (LogLevel::Error, "failed at 3")
            ]
        );
        // Keep two per function.
        let pruned = store
            .prune(Retention {
                per_function: 2,
                finished_before: 0,
            })
            .await
            .unwrap();
        assert_eq!(pruned, 3);
        assert_eq!(page(None, None).await, ["e4", "e3"]);
        let kept = store.logs("f", None, 10, LogLevel::Trace).await.unwrap();
        assert_eq!(kept.len(), 2);
    }

    #[tokio::test]
    async fn a_schedule_tick_fires_once() {
        let (_dir, store) = open();
        let fire = |id: &str, tick| {
            let (store, new) = (store.clone(), queued(id, "f", tick));
            async move { store.fire_tick("f", tick, new).await.unwrap() }
        };
        assert!(fire("c1", 60_000).await);
        assert!(!fire("c2", 60_000).await);
        assert!(!fire("c3", 0).await);
        assert!(fire("c4", 120_000).await);
        assert_eq!(store.last_tick("f").await.unwrap(), Some(120_000));
        assert!(store.get_execution("c2", false).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_finished_execution_owes_its_callback_until_delivered() {
        let (_dir, store) = open();
        let new = NewExecution {
            callback_url: Some("http://127.0.0.1:1/cb".into()),
            ..queued("e1", "f", 0)
        };
        store.write(vec![Write::Insert(new)]).await.unwrap();
        store.claim(0, 1).await.unwrap();
        assert!(store.due_callbacks(1000, 10).await.unwrap().is_empty());
        store
            .write(vec![Write::Finish {
                id: "e1".into(),
                attempt: 1,
                outcome: ended(ExecutionStatus::Succeeded, 10),
            }])
            .await
            .unwrap();
        let due = store.due_callbacks(1000, 10).await.unwrap();
        assert_eq!(
            (due.len(), due[0].url.as_str()),
            (1, "http://127.0.0.1:1/cb")
        );
        store.callback_done("e1", false, Some(2000)).await.unwrap();
        assert!(store.due_callbacks(1999, 10).await.unwrap().is_empty());
        store.callback_done("e1", true, None).await.unwrap();
        assert!(store.due_callbacks(5000, 10).await.unwrap().is_empty());
        let e = store.get_execution("e1", false).await.unwrap().unwrap();
        assert_eq!(e.callback_state.as_deref(), Some("delivered"));
    }
}
