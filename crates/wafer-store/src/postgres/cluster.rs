//! [`ClusterStore`] on PostgreSQL: the change feed (`change_feed`, `function_changes`), the `nodes`
//! table, and the notifications that wake other nodes.
//!
//! Every change takes the feed's one row lock for the rest of its transaction, so changes commit in the
//! order of their sequence numbers and a reader never sees a later change before an earlier one. A
//! change is taken last in its transaction, so the lock is held only for the commit.

use super::{big, millis, unsigned, PgStore, NOW, NOW_MS};
use crate::cluster::{Changes, ClusterStore, Events, NodeBeat, NodeRecord};
use crate::StoreError;
use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use std::time::Duration;

/// The channel every notification goes to; its payload says what happened.
pub(super) const CHANNEL: &str = "wafer";

/// Records, in the transaction of a change to `function`, that it changed, and tells the other nodes
/// when it commits.
pub(super) async fn bump(tx: &impl GenericClient, function: &str) -> Result<(), StoreError> {
    let bump = tx
        .prepare_cached(
            "WITH feed AS (UPDATE change_feed SET seq = seq + 1 WHERE id = 1 RETURNING seq)
             INSERT INTO function_changes (function, seq) SELECT $1, seq FROM feed
             ON CONFLICT (function) DO UPDATE SET seq = excluded.seq",
        )
        .await?;
    tx.execute(&bump, &[&function]).await?;
    notify(tx, "changes").await
}

/// Tells the other nodes, when the transaction commits, that `what` happened.
pub(super) async fn notify(tx: &impl GenericClient, what: &str) -> Result<(), StoreError> {
    let statement = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&statement, &[&CHANNEL, &what]).await?;
    Ok(())
}

/// A day, in milliseconds: nodes silent this long are forgotten.
const FORGET_MS: i64 = 24 * 3600 * 1000;

#[async_trait]
impl ClusterStore for PgStore {
    async fn changes_since(&self, seq: u64) -> Result<Changes, StoreError> {
        let mut client = self.client().await?;
        // One snapshot for both reads, so the position and the list agree.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let now: i64 = tx
            .query_one("SELECT seq FROM change_feed WHERE id = 1", &[])
            .await?
            .try_get(0)?;
        let functions = tx
            .query(
                "SELECT function FROM function_changes WHERE seq > $1 ORDER BY seq",
                &[&big(seq)],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        tx.commit().await?;
        Ok(Changes {
            seq: unsigned(now),
            functions,
        })
    }

    async fn heartbeat(&self, beat: &NodeBeat) -> Result<(), StoreError> {
        let lagging = serde_json::to_string(&beat.lagging)
            .map_err(|e| StoreError::Corrupt(format!("lagging does not serialise: {e}")))?;
        let client = self.client().await?;
        client
            .execute(
                &format!(
                    "INSERT INTO nodes (id, address, version, applied, lagging, started_at, heartbeat_ms)
                     VALUES ($1, $2, $3, $4, $5, {NOW}, {NOW_MS})
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                         version = excluded.version, applied = excluded.applied,
                         lagging = excluded.lagging, heartbeat_ms = excluded.heartbeat_ms"
                ),
                &[
                    &beat.id,
                    &beat.address,
                    &beat.version,
                    &big(beat.applied),
                    &lagging,
                ],
            )
            .await?;
        client
            .execute(
                &format!("DELETE FROM nodes WHERE heartbeat_ms < {NOW_MS} - $1"),
                &[&FORGET_MS],
            )
            .await?;
        Ok(())
    }

    async fn nodes(&self, within: Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT id, address, version, applied, lagging, started_at, heartbeat_ms,
                            GREATEST(0, {NOW_MS} - heartbeat_ms)
                     FROM nodes WHERE heartbeat_ms >= {NOW_MS} - $1 ORDER BY id"
                ),
                &[&millis(within)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let lagging: String = row.try_get(4)?;
                Ok(NodeRecord {
                    beat: NodeBeat {
                        id: row.try_get(0)?,
                        address: row.try_get(1)?,
                        version: row.try_get(2)?,
                        applied: unsigned(row.try_get(3)?),
                        lagging: serde_json::from_str(&lagging).unwrap_or_default(),
                    },
                    started_at: row.try_get(5)?,
                    heartbeat_at: crate::rfc3339(row.try_get(6)?),
                    silent_for: Duration::from_millis(unsigned(row.try_get(7)?)),
                })
            })
            .collect()
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute("DELETE FROM nodes WHERE id = $1", &[&node])
            .await?;
        Ok(())
    }

    fn events(&self) -> Events {
        self.events.clone()
    }
}
