//! [`ClusterStore`] on SQLite: the change feed (`change_feed`, `function_changes`) and the `nodes` table.
//! One node owns an SQLite store, so it lists itself alone and never raises [`Events`]; the feed is kept
//! all the same, so both stores behave alike.

use super::{rows::u64_of, run_on, SqliteStore, NOW, NOW_MS};
use crate::cluster::{Changes, ClusterStore, Events, NodeBeat, NodeRecord};
use crate::StoreError;
use async_trait::async_trait;
use rusqlite::{params, Connection};
use std::time::Duration;

/// Records, in the transaction of a change to `function`, that it changed: the feed moves on by one.
pub(super) fn bump(tx: &Connection, function: &str) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE change_feed SET seq = seq + 1 WHERE id = 1")?
        .execute([])?;
    tx.prepare_cached(
        "INSERT INTO function_changes (function, seq) SELECT ?1, seq FROM change_feed WHERE id = 1
         ON CONFLICT (function) DO UPDATE SET seq = excluded.seq",
    )?
    .execute([function])?;
    Ok(())
}

/// A day, in milliseconds: nodes silent this long are forgotten.
const FORGET_MS: i64 = 24 * 3600 * 1000;

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn changes_since(&self, seq: u64) -> Result<Changes, StoreError> {
        let since = i64::try_from(seq).unwrap_or(i64::MAX);
        run_on(&self.meta, move |conn| {
            let tx = conn.transaction()?;
            let now: i64 =
                tx.query_row("SELECT seq FROM change_feed WHERE id = 1", [], |r| r.get(0))?;
            let functions = {
                let mut stmt = tx.prepare_cached(
                    "SELECT function FROM function_changes WHERE seq > ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([since], |r| r.get(0))?;
                rows.collect::<Result<Vec<String>, _>>()?
            };
            Ok(Changes {
                seq: u64_of(Some(now)).unwrap_or_default(),
                functions,
            })
        })
        .await
    }

    async fn heartbeat(&self, beat: &NodeBeat) -> Result<(), StoreError> {
        let beat = beat.clone();
        let lagging = serde_json::to_string(&beat.lagging)
            .map_err(|e| StoreError::Corrupt(format!("lagging does not serialise: {e}")))?;
        run_on(&self.meta, move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO nodes (id, address, version, applied, lagging, started_at, heartbeat_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, {NOW}, {NOW_MS})
                     ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                         version = excluded.version, applied = excluded.applied,
                         lagging = excluded.lagging, heartbeat_ms = excluded.heartbeat_ms"
                ),
                params![
                    beat.id,
                    beat.address,
                    beat.version,
                    i64::try_from(beat.applied).unwrap_or(i64::MAX),
                    lagging
                ],
            )?;
            conn.execute(
                &format!("DELETE FROM nodes WHERE heartbeat_ms < {NOW_MS} - ?1"),
                [FORGET_MS],
            )?;
            Ok(())
        })
        .await
    }

    async fn nodes(&self, within: Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let within = super::millis(within);
        run_on(&self.meta, move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT id, address, version, applied, lagging, started_at, heartbeat_ms,
                        MAX(0, {NOW_MS} - heartbeat_ms)
                 FROM nodes WHERE heartbeat_ms >= {NOW_MS} - ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([within], |r| {
                let lagging: String = r.get(4)?;
                Ok(NodeRecord {
                    beat: NodeBeat {
                        id: r.get(0)?,
                        address: r.get(1)?,
                        version: r.get(2)?,
                        applied: u64_of(r.get(3)?).unwrap_or_default(),
                        lagging: serde_json::from_str(&lagging).unwrap_or_default(),
                    },
                    started_at: r.get(5)?,
                    heartbeat_at: super::rfc3339(r.get(6)?),
                    silent_for: Duration::from_millis(u64_of(r.get(7)?).unwrap_or_default()),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn leave(&self, node: &str) -> Result<(), StoreError> {
        let node = node.to_owned();
        run_on(&self.meta, move |conn| {
            conn.execute("DELETE FROM nodes WHERE id = ?1", [node])?;
            Ok(())
        })
        .await
    }

    fn events(&self) -> Events {
        self.events.clone()
    }
}
