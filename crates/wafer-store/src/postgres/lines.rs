//! The log lines a batch of attempts writes, inserted at the batch's end under one advisory lock held
//! to the commit, so lines commit in `seq` order and a follower paging on by `seq` never skips one a
//! slower writer commits later.

use super::cluster::notify;
use crate::executions::Attempt;
use crate::StoreError;
use deadpool_postgres::Transaction;

/// The advisory lock log writers hold from taking their lines' `seq` to their commit.
const LOGS_LOCK: i64 = 0x7761_6665_7200_0002;

/// The log lines of the attempts a batch records, in order, inserted at its end.
#[derive(Default)]
pub(super) struct Lines {
    ids: Vec<String>,
    at: Vec<i64>,
    streams: Vec<String>,
    lines: Vec<String>,
    levels: Vec<i64>,
}

impl Lines {
    /// Adds the log lines of `attempt`, an attempt of execution `id`.
    pub(super) fn add(&mut self, id: &str, attempt: &Attempt) {
        for log in &attempt.logs {
            self.ids.push(id.to_string());
            self.at.push(attempt.finished_at);
            self.streams.push(log.stream.to_string());
            self.lines.push(log.line.clone());
            self.levels.push(i64::from(log.level.rank()));
        }
    }

    /// Inserts the lines under the log lock, which the transaction holds to its commit.
    pub(super) async fn insert(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        // Sent together in one round trip: the lock first, as one simple query (a statement that had
        // to be prepared first would go out after the insert), then the lines and the notification.
        let lock = format!("SELECT pg_advisory_xact_lock({LOGS_LOCK})");
        let locked = async { tx.batch_execute(&lock).await.map_err(StoreError::from) };
        let inserted = async {
            let statement = tx
                .prepare_cached(
                    "INSERT INTO logs (execution_id, function, at, stream, line, level)
                     SELECT e.id, e.function, l.at, l.stream, l.line, l.level
                     FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[])
                          WITH ORDINALITY AS l(id, at, stream, line, level, n)
                     JOIN executions e ON e.id = l.id
                     ORDER BY l.n",
                )
                .await?;
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
                &self.ids,
                &self.at,
                &self.streams,
                &self.lines,
                &self.levels,
            ];
            tx.execute(&statement, &params)
                .await
                .map_err(StoreError::from)
        };
        tokio::try_join!(locked, inserted, notify(tx, "logs"))?;
        Ok(())
    }
}
