//! [`AccessStore`] on SQLite: tables `api_keys` and `audit`, on the state connection.

use super::{millis, run_on, SqliteStore, NOW_MS};
use crate::access::{
    audit_entry, key_columns, AccessStore, AuditEntry, KeyRow, NewAudit, NewKey, StoredKey,
    AUDIT_COLUMNS, KEY_COLUMNS,
};
use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

/// Reads a row of `api_keys` selected as [`KEY_COLUMNS`].
fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        id: r.get(0)?,
        name: r.get(1)?,
        hash: r.get(2)?,
        sealed: r.get(3)?,
        scopes: r.get(4)?,
        rate_limit: r.get(5)?,
        created_ms: r.get(6)?,
        expires_ms: r.get(7)?,
        revoked_ms: r.get(8)?,
        created_by: r.get(9)?,
    })
}

/// Key `id`, if it exists.
fn read_key(
    conn: &Connection,
    seal: &SecretsKey,
    id: &str,
) -> Result<Option<StoredKey>, StoreError> {
    conn.query_row(
        &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
        params![id],
        key_row,
    )
    .optional()?
    .map(|row| row.open(seal))
    .transpose()
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        let seal = self.secrets.clone();
        run_on(&self.state, move |conn| {
            let (hash, sealed, scopes) = key_columns(&seal, &key)?;
            conn.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW_MS}, {NOW_MS} + ?7, NULL, ?8)"
                ),
                params![
                    key.id,
                    key.name,
                    hash,
                    sealed,
                    scopes,
                    key.rate_limit,
                    key.expires_in_ms,
                    key.created_by
                ],
            )?;
            read_key(conn, &seal, &key.id)?
                .ok_or_else(|| StoreError::Database("a created key cannot be read".into()))
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let seal = self.secrets.clone();
        run_on(&self.state, move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms, id"
            ))?;
            let rows = statement
                .query_map([], key_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(|row| row.open(&seal)).collect()
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let (seal, id) = (self.secrets.clone(), id.to_string());
        run_on(&self.state, move |conn| {
            conn.execute(
                &format!(
                    "UPDATE api_keys SET revoked_ms = {NOW_MS} WHERE id = ?1 AND revoked_ms IS NULL"
                ),
                params![id],
            )?;
            read_key(conn, &seal, &id)
        })
        .await
    }

    async fn record_action(&self, action: NewAudit) -> Result<(), StoreError> {
        run_on(&self.state, move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO audit (at_ms, actor, action, target, status, client)
                 VALUES ({NOW_MS}, ?1, ?2, ?3, ?4, ?5)"
            ))?
            .execute(params![
                action.actor,
                action.action,
                action.target,
                action.status,
                action.client
            ])?;
            Ok(())
        })
        .await
    }

    async fn prune_audit(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        let older_than = millis(older_than);
        run_on(&self.state, move |conn| {
            let deleted = conn.execute(
                &format!("DELETE FROM audit WHERE at_ms < {NOW_MS} - ?1"),
                params![older_than],
            )?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        run_on(&self.state, move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq < ?1 ORDER BY seq DESC LIMIT +?2"
            ))?;
            let rows = statement
                .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows.into_iter().map(audit_entry).collect())
        })
        .await
    }
}
