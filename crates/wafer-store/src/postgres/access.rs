//! [`AccessStore`] on PostgreSQL: tables `api_keys` and `audit`, shared by every node, so a key created
//! or revoked on one is seen by the others at their next read of the keys.

use super::PgStore;
use crate::access::{
    audit_entry, key_columns, AccessStore, AuditEntry, KeyRow, NewAudit, NewKey, StoredKey,
    AUDIT_COLUMNS, KEY_COLUMNS,
};
use crate::StoreError;
use async_trait::async_trait;
use tokio_postgres::Row;

/// Reads a row of `api_keys` selected as [`KEY_COLUMNS`].
fn key_row(row: &Row) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        hash: row.try_get(2)?,
        sealed: row.try_get(3)?,
        scopes: row.try_get(4)?,
        rate_limit: row.try_get(5)?,
        created_ms: row.try_get(6)?,
        expires_ms: row.try_get(7)?,
        revoked_ms: row.try_get(8)?,
        created_by: row.try_get(9)?,
    })
}

#[async_trait]
impl AccessStore for PgStore {
    async fn create_key(&self, key: NewKey) -> Result<StoredKey, StoreError> {
        let (hash, sealed, scopes) = key_columns(&self.secrets, &key)?;
        let rate_limit = key.rate_limit.map(i64::from);
        let row = self
            .client()
            .await?
            .query_one(
                // The clock is read once, so a key's lifetime is exactly the one asked for:
                // `wafer_now_ms()` reads `clock_timestamp()`, which moves within a statement.
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS})
                     SELECT $1::TEXT, $2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT, $6::BIGINT,
                            now.ms, now.ms + $7::BIGINT, NULL, $8::TEXT
                     FROM (SELECT wafer_now_ms() AS ms) AS now
                     RETURNING {KEY_COLUMNS}"
                ),
                &[
                    &key.id,
                    &key.name,
                    &hash,
                    &sealed,
                    &scopes,
                    &rate_limit,
                    &key.expires_in_ms,
                    &key.created_by,
                ],
            )
            .await?;
        key_row(&row)?.open(&self.secrets)
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms, id"
            ))
            .await?;
        client
            .query(&statement, &[])
            .await?
            .iter()
            .map(|row| key_row(row)?.open(&self.secrets))
            .collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<Option<StoredKey>, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE api_keys SET revoked_ms = wafer_now_ms() WHERE id = $1 AND revoked_ms IS NULL",
                &[&id],
            )
            .await?;
        client
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await?
            .map(|row| key_row(&row)?.open(&self.secrets))
            .transpose()
    }

    async fn record_action(&self, action: NewAudit) -> Result<(), StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO audit (at_ms, actor, action, target, status, client)
                 VALUES (wafer_now_ms(), $1, $2, $3, $4, $5)",
            )
            .await?;
        let status = i32::from(action.status);
        client
            .execute(
                &statement,
                &[
                    &action.actor,
                    &action.action,
                    &action.target,
                    &status,
                    &action.client,
                ],
            )
            .await?;
        Ok(())
    }

    async fn prune_audit(&self, older_than: std::time::Duration) -> Result<u64, StoreError> {
        let older_than = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM audit WHERE at_ms < wafer_now_ms() - $1",
                &[&older_than],
            )
            .await?)
    }

    async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq < $1 ORDER BY seq DESC LIMIT $2"
            ))
            .await?;
        let (before, limit) = (before.unwrap_or(i64::MAX), i64::from(limit));
        client
            .query(&statement, &[&before, &limit])
            .await?
            .iter()
            .map(|row| {
                let status: i32 = row.try_get(5)?;
                Ok(audit_entry((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    row.try_get(3)?,
                    row.try_get(4)?,
                    i64::from(status),
                    row.try_get(6)?,
                )))
            })
            .collect()
    }
}
