//! [`StateStore`] on PostgreSQL: tables `kv`, `kv_stores` (each store's size, kept in step with every
//! write) and `variables`. A write to a key-value store locks the store's size row for its
//! transaction, so concurrent writers from any node are serialised and the cap holds cluster-wide.

use super::cluster::bump;
use super::{big, unsigned, PgStore};
use crate::secrets::KEY_ID_SETTING;
use crate::state::{
    entry_bytes, file_variable, incremented, stored_value, FunctionVariables, KeyPage, StateStore,
};
use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use std::collections::{BTreeMap, HashMap};

/// The size of `store`, with its row locked until the transaction ends.
async fn lock_store(tx: &Transaction<'_>, store: &str) -> Result<u64, StoreError> {
    tx.execute(
        "INSERT INTO kv_stores (store, bytes) VALUES ($1, 0) ON CONFLICT (store) DO NOTHING",
        &[&store],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT bytes FROM kv_stores WHERE store = $1 FOR UPDATE",
            &[&store],
        )
        .await?;
    Ok(unsigned(row.try_get(0)?))
}

async fn set_size(tx: &Transaction<'_>, store: &str, size: u64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE kv_stores SET bytes = $2 WHERE store = $1",
        &[&store, &big(size)],
    )
    .await?;
    Ok(())
}

/// Writes `entries` into `store` within `tx`, keeping the store's size and refusing past `max_bytes`.
async fn put(
    tx: &Transaction<'_>,
    store: &str,
    entries: &[(String, Vec<u8>)],
    max_bytes: u64,
) -> Result<(), StoreError> {
    let mut size = lock_store(tx, store).await?;
    let old = tx
        .prepare_cached(
            "SELECT octet_length(key) + octet_length(value) FROM kv WHERE store = $1 AND key = $2",
        )
        .await?;
    let upsert = tx
        .prepare_cached(
            "INSERT INTO kv (store, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        )
        .await?;
    for (key, value) in entries {
        let before = match tx.query_opt(&old, &[&store, key]).await? {
            Some(row) => unsigned(i64::from(row.try_get::<_, i32>(0)?)),
            None => 0,
        };
        size = size - before.min(size) + entry_bytes(key, value);
        tx.execute(&upsert, &[&store, key, value]).await?;
    }
    if size > max_bytes {
        return Err(StoreError::Full {
            store: store.to_string(),
            would: size,
            limit: max_bytes,
        });
    }
    set_size(tx, store, size).await
}

/// The value of `key` in `store`, with the store locked for the rest of `tx`: this serialises
/// read-modify-writes of one key (increments, swaps) across every node.
async fn locked_value(
    tx: &deadpool_postgres::Transaction<'_>,
    store: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    lock_store(tx, store).await?;
    let row = tx
        .query_opt(
            "SELECT value FROM kv WHERE store = $1 AND key = $2",
            &[&store, &key],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Inserts (or overwrites, moving between plain and secret) the named values: secrets, sealed with
/// `seal`, when it is given.
pub(super) async fn insert_variables(
    tx: &Transaction<'_>,
    function: &str,
    values: &BTreeMap<String, String>,
    seal: Option<&SecretsKey>,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO variables (function, name, value, secret) VALUES ($1, $2, $3, $4)
             ON CONFLICT (function, name) DO UPDATE SET value = excluded.value, secret = excluded.secret",
        )
        .await?;
    let secret = seal.is_some();
    for (name, value) in values {
        let value = stored_value(seal, function, name, value)?;
        tx.execute(&statement, &[&function, name, &value, &secret])
            .await?;
    }
    Ok(())
}

#[async_trait]
impl StateStore for PgStore {
    async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT value FROM kv WHERE store = $1 AND key = $2")
            .await?;
        Ok(client
            .query_opt(&statement, &[&store, &key])
            .await?
            .map(|row| row.try_get(0))
            .transpose()?)
    }

    async fn kv_set(
        &self,
        store: &str,
        key: &str,
        value: Vec<u8>,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        self.kv_set_many(store, vec![(key.to_string(), value)], max_bytes)
            .await
    }

    async fn kv_set_many(
        &self,
        store: &str,
        entries: Vec<(String, Vec<u8>)>,
        max_bytes: u64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        put(&tx, store, &entries, max_bytes).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kv_delete(&self, store: &str, keys: Vec<String>) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let size = lock_store(&tx, store).await?;
        let freed = tx
            .query(
                "DELETE FROM kv WHERE store = $1 AND key = ANY($2)
                 RETURNING octet_length(key) + octet_length(value)",
                &[&store, &keys],
            )
            .await?;
        let bytes: u64 = freed
            .iter()
            .map(|row| row.try_get::<_, i32>(0).map(|n| unsigned(i64::from(n))))
            .sum::<Result<u64, _>>()?;
        if !freed.is_empty() {
            set_size(&tx, store, size.saturating_sub(bytes)).await?;
        }
        tx.commit().await?;
        Ok(freed.len() as u64)
    }

    async fn kv_exists(&self, store: &str, key: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT 1 FROM kv WHERE store = $1 AND key = $2")
            .await?;
        Ok(client
            .query_opt(&statement, &[&store, &key])
            .await?
            .is_some())
    }

    async fn kv_keys(
        &self,
        store: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT key FROM kv WHERE store = $1 AND key > $2 ORDER BY key LIMIT $3",
            )
            .await?;
        let mut keys = client
            .query(
                &statement,
                &[&store, &cursor.unwrap_or_default(), &(i64::from(limit) + 1)],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        let cursor = if keys.len() > limit as usize {
            keys.truncate(limit as usize);
            keys.last().cloned()
        } else {
            None
        };
        Ok(KeyPage { keys, cursor })
    }

    async fn kv_increment(
        &self,
        store: &str,
        key: &str,
        delta: i64,
        max_bytes: u64,
    ) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let current = locked_value(&tx, store, key).await?;
        let sum = incremented(key, current.as_deref(), delta)?;
        put(
            &tx,
            store,
            &[(key.to_string(), sum.to_string().into_bytes())],
            max_bytes,
        )
        .await?;
        tx.commit().await?;
        Ok(sum)
    }

    async fn kv_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        max_bytes: u64,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let current = locked_value(&tx, store, key).await?;
        if current != expected {
            return Ok(false);
        }
        put(&tx, store, &[(key.to_string(), value)], max_bytes).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn kv_size(&self, store: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT bytes FROM kv_stores WHERE store = $1", &[&store])
            .await?;
        Ok(match row {
            Some(row) => unsigned(row.try_get(0)?),
            None => 0,
        })
    }

    async fn variables(&self, function: &str) -> Result<FunctionVariables, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("SELECT name, value, secret FROM variables WHERE function = $1")
            .await?;
        let mut out = FunctionVariables::default();
        for row in client.query(&statement, &[&function]).await? {
            let row = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            file_variable(&mut out, &self.secrets, function, row)?;
        }
        Ok(out)
    }

    async fn all_variables(&self) -> Result<HashMap<String, FunctionVariables>, StoreError> {
        let client = self.client().await?;
        let mut out = HashMap::<String, FunctionVariables>::new();
        for row in client
            .query("SELECT function, name, value, secret FROM variables", &[])
            .await?
        {
            let function: String = row.try_get(0)?;
            let variable = (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
            let entry = out.entry(function.clone()).or_default();
            file_variable(entry, &self.secrets, &function, variable)?;
        }
        Ok(out)
    }

    async fn set_variables(
        &self,
        function: &str,
        variables: BTreeMap<String, String>,
        secrets: BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "DELETE FROM variables WHERE function = $1 AND NOT secret",
            &[&function],
        )
        .await?;
        insert_variables(&tx, function, &variables, None).await?;
        let (set, removed): (BTreeMap<_, _>, BTreeMap<_, _>) =
            secrets.into_iter().partition(|(_, value)| value.is_some());
        let removed: Vec<String> = removed.into_keys().collect();
        tx.execute(
            "DELETE FROM variables WHERE function = $1 AND name = ANY($2) AND secret",
            &[&function, &removed],
        )
        .await?;
        let set = set
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        insert_variables(&tx, function, &set, Some(&self.secrets)).await?;
        bump(&tx, function).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn merge_variables(
        &self,
        function: &str,
        update: FunctionVariables,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        insert_variables(&tx, function, &update.variables, None).await?;
        insert_variables(&tx, function, &update.secrets, Some(&self.secrets)).await?;
        bump(&tx, function).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_variables(&self, function: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("DELETE FROM variables WHERE function = $1", &[&function])
            .await?;
        bump(&tx, function).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The id of the key the cluster's secrets are sealed with, once one is recorded.
pub(super) async fn recorded_key(
    client: &deadpool_postgres::Object,
) -> Result<Option<String>, StoreError> {
    let row = client
        .query_opt(
            "SELECT value FROM settings WHERE name = $1",
            &[&KEY_ID_SETTING],
        )
        .await?;
    Ok(row.map(|row| row.try_get(0)).transpose()?)
}

/// Makes `key` the one the cluster's secrets are sealed with: records its id in a database that has
/// none, refuses it when the database records another, and seals any secret written before secrets
/// were sealed. Nodes starting together agree: the first id recorded stands, and a value is sealed only
/// while it is still the plain one read.
pub(super) async fn adopt_key(
    client: &mut deadpool_postgres::Object,
    key: &SecretsKey,
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute(
        "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&KEY_ID_SETTING, &key.id()],
    )
    .await?;
    let recorded: String = tx
        .query_one(
            "SELECT value FROM settings WHERE name = $1",
            &[&KEY_ID_SETTING],
        )
        .await?
        .try_get(0)?;
    key.check_recorded(&recorded)?;
    let mut sealed = 0;
    for row in tx
        .query(
            "SELECT function, name, value FROM variables WHERE secret",
            &[],
        )
        .await?
    {
        let (function, name, value): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if SecretsKey::is_sealed(&value) {
            continue;
        }
        sealed += tx
            .execute(
                "UPDATE variables SET value = $4 WHERE function = $1 AND name = $2 AND value = $3",
                &[
                    &function,
                    &name,
                    &value,
                    &key.seal(&function, &name, &value)?,
                ],
            )
            .await?;
    }
    tx.commit().await?;
    if sealed > 0 {
        // The table is written anew, so the old rows' plain values leave its files.
        client.batch_execute("VACUUM FULL variables").await?;
        tracing::info!(secrets = sealed, "sealed the secrets stored in plain text");
    }
    Ok(())
}
