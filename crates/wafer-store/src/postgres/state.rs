//! [`StateStore`] on PostgreSQL: tables `kv`, `kv_stores` (each store's size, kept in step with every
//! write) and `variables`. A write to a key-value store locks the store's size row for its
//! transaction, so concurrent writers from any node are serialised and the cap holds cluster-wide.

use super::cluster::bump;
use super::{big, unsigned, PgStore};
use crate::state::{entry_bytes, incremented, FunctionVariables, KeyPage, StateStore};
use crate::StoreError;
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

/// Inserts (or overwrites, moving between plain and secret) the named values.
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

pub(super) async fn insert_variables(
    tx: &Transaction<'_>,
    function: &str,
    values: &BTreeMap<String, String>,
    secret: bool,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO variables (function, name, value, secret) VALUES ($1, $2, $3, $4)
             ON CONFLICT (function, name) DO UPDATE SET value = excluded.value, secret = excluded.secret",
        )
        .await?;
    for (name, value) in values {
        tx.execute(&statement, &[&function, name, value, &secret])
            .await?;
    }
    Ok(())
}

/// Files a `(name, value, secret)` row into `into`.
fn file(into: &mut FunctionVariables, name: String, value: String, secret: bool) {
    if secret {
        into.secrets.insert(name, value);
    } else {
        into.variables.insert(name, value);
    }
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
            file(&mut out, row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
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
            let entry = out.entry(row.try_get(0)?).or_default();
            file(entry, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
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
        insert_variables(&tx, function, &variables, false).await?;
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
        insert_variables(&tx, function, &set, true).await?;
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
        insert_variables(&tx, function, &update.variables, false).await?;
        insert_variables(&tx, function, &update.secrets, true).await?;
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
