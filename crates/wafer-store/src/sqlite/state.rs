//! [`StateStore`] on SQLite: tables `kv`, `kv_stores` (each store's size, kept in step with every write)
//! and `variables`, on their own connection so function state never waits behind deploys or records.

use super::cluster::bump;
use super::{run_on, SqliteStore};
use crate::secrets::KEY_ID_SETTING;
use crate::state::{
    entry_bytes, file_variable, incremented, stored_value, FunctionVariables, KeyPage, StateStore,
};
use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::collections::BTreeMap;

impl SqliteStore {
    async fn with_state<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(&self.state, f).await
    }
}

/// Writes `entries` into `store` within `tx`, keeping the store's size and refusing past `max_bytes`.
fn put(
    tx: &Transaction<'_>,
    store: &str,
    entries: &[(String, Vec<u8>)],
    max_bytes: u64,
) -> Result<(), StoreError> {
    let mut size = store_size(tx, store)?;
    for (key, value) in entries {
        let old: Option<u64> = tx
            .query_row(
                "SELECT length(key) + length(value) FROM kv WHERE store = ?1 AND key = ?2",
                params![store, key],
                |r| r.get(0),
            )
            .optional()?;
        size = size - old.unwrap_or(0) + entry_bytes(key, value);
        tx.execute(
            "INSERT INTO kv (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            params![store, key, value],
        )?;
    }
    if size > max_bytes {
        return Err(StoreError::Full {
            store: store.to_string(),
            would: size,
            limit: max_bytes,
        });
    }
    set_size(tx, store, size)
}

fn store_size(tx: &Transaction<'_>, store: &str) -> Result<u64, StoreError> {
    Ok(tx
        .query_row(
            "SELECT bytes FROM kv_stores WHERE store = ?1",
            [store],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

fn set_size(tx: &Transaction<'_>, store: &str, size: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kv_stores (store, bytes) VALUES (?1, ?2)
         ON CONFLICT (store) DO UPDATE SET bytes = excluded.bytes",
        params![store, size],
    )?;
    Ok(())
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (store, key) = (store.to_string(), key.to_string());
        self.with_state(move |conn| value_of(conn, &store, &key))
            .await
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
        let store = store.to_string();
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            put(&tx, &store, &entries, max_bytes)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, store: &str, keys: Vec<String>) -> Result<u64, StoreError> {
        let store = store.to_string();
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut size = store_size(&tx, &store)?;
            let mut deleted = 0;
            for key in &keys {
                let old: Option<u64> = tx
                    .query_row(
                        "DELETE FROM kv WHERE store = ?1 AND key = ?2
                         RETURNING length(key) + length(value)",
                        params![store, key],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(old) = old {
                    size = size.saturating_sub(old);
                    deleted += 1;
                }
            }
            if deleted > 0 {
                set_size(&tx, &store, size)?;
            }
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn kv_exists(&self, store: &str, key: &str) -> Result<bool, StoreError> {
        let (store, key) = (store.to_string(), key.to_string());
        self.with_state(move |conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM kv WHERE store = ?1 AND key = ?2")?
                .exists(params![store, key])?)
        })
        .await
    }

    async fn kv_keys(
        &self,
        store: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, StoreError> {
        let store = store.to_string();
        self.with_state(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT key FROM kv WHERE store = ?1 AND key > ?2 ORDER BY key LIMIT +?3",
            )?;
            let mut keys = statement
                .query_map(
                    params![store, cursor.unwrap_or_default(), i64::from(limit) + 1],
                    |r| r.get::<_, String>(0),
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let cursor = if keys.len() > limit as usize {
                keys.truncate(limit as usize);
                keys.last().cloned()
            } else {
                None
            };
            Ok(KeyPage { keys, cursor })
        })
        .await
    }

    async fn kv_increment(
        &self,
        store: &str,
        key: &str,
        delta: i64,
        max_bytes: u64,
    ) -> Result<i64, StoreError> {
        let (store, key) = (store.to_string(), key.to_string());
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = value_of(&tx, &store, &key)?;
            let sum = incremented(&key, current.as_deref(), delta)?;
            put(
                &tx,
                &store,
                &[(key.clone(), sum.to_string().into_bytes())],
                max_bytes,
            )?;
            tx.commit()?;
            Ok(sum)
        })
        .await
    }

    async fn kv_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        max_bytes: u64,
    ) -> Result<bool, StoreError> {
        let (store, key) = (store.to_string(), key.to_string());
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = value_of(&tx, &store, &key)?;
            if current != expected {
                return Ok(false);
            }
            put(&tx, &store, &[(key, value)], max_bytes)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn kv_size(&self, store: &str) -> Result<u64, StoreError> {
        let store = store.to_string();
        self.with_state(move |conn| {
            let tx = conn.transaction()?;
            store_size(&tx, &store)
        })
        .await
    }

    async fn variables(&self, function: &str) -> Result<FunctionVariables, StoreError> {
        let (function, secrets) = (function.to_string(), self.secrets.clone());
        self.with_state(move |conn| {
            let mut statement = conn
                .prepare_cached("SELECT name, value, secret FROM variables WHERE function = ?1")?;
            let rows = statement.query_map([&function], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            let mut out = FunctionVariables::default();
            for row in rows {
                file_variable(&mut out, &secrets, &function, row?)?;
            }
            Ok(out)
        })
        .await
    }

    async fn all_variables(
        &self,
    ) -> Result<std::collections::HashMap<String, FunctionVariables>, StoreError> {
        let secrets = self.secrets.clone();
        self.with_state(move |conn| {
            let mut statement =
                conn.prepare("SELECT function, name, value, secret FROM variables")?;
            let rows = statement.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })?;
            let mut out = std::collections::HashMap::<String, FunctionVariables>::new();
            for row in rows {
                let (function, name, value, secret) = row?;
                let entry = out.entry(function.clone()).or_default();
                file_variable(entry, &secrets, &function, (name, value, secret))?;
            }
            Ok(out)
        })
        .await
    }

    async fn set_variables(
        &self,
        function: &str,
        variables: BTreeMap<String, String>,
        secrets: BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError> {
        let (function, key) = (function.to_string(), self.secrets.clone());
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM variables WHERE function = ?1 AND secret = 0",
                [&function],
            )?;
            insert_variables(&tx, &function, &variables, None)?;
            let (set, removed): (Vec<_>, Vec<_>) =
                secrets.into_iter().partition(|(_, value)| value.is_some());
            for (name, _) in removed {
                tx.execute(
                    "DELETE FROM variables WHERE function = ?1 AND name = ?2 AND secret = 1",
                    params![function, name],
                )?;
            }
            let set = set
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?)))
                .collect();
            insert_variables(&tx, &function, &set, Some(&key))?;
            bump(&tx, &function)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn merge_variables(
        &self,
        function: &str,
        update: FunctionVariables,
    ) -> Result<(), StoreError> {
        let (function, key) = (function.to_string(), self.secrets.clone());
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            insert_variables(&tx, &function, &update.variables, None)?;
            insert_variables(&tx, &function, &update.secrets, Some(&key))?;
            bump(&tx, &function)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn forget_variables(&self, function: &str) -> Result<(), StoreError> {
        let function = function.to_string();
        self.with_state(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM variables WHERE function = ?1", [&function])?;
            bump(&tx, &function)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

/// The value of `key` in `store`.
fn value_of(conn: &Connection, store: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?
        .query_row(params![store, key], |r| r.get(0))
        .optional()?)
}

/// Inserts (or overwrites, moving between plain and secret) the named values: secrets, sealed with
/// `seal`, when it is given.
pub(super) fn insert_variables(
    tx: &Transaction<'_>,
    function: &str,
    values: &BTreeMap<String, String>,
    seal: Option<&SecretsKey>,
) -> Result<(), StoreError> {
    let secret = seal.is_some();
    for (name, value) in values {
        let value = stored_value(seal, function, name, value)?;
        tx.execute(
            "INSERT INTO variables (function, name, value, secret) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (function, name) DO UPDATE SET value = excluded.value, secret = excluded.secret",
            params![function, name, value, secret],
        )?;
    }
    Ok(())
}

/// The id of the key the store's secrets are sealed with, once one is recorded.
pub(super) fn recorded_key(conn: &Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT value FROM settings WHERE name = ?1",
            [KEY_ID_SETTING],
            |r| r.get(0),
        )
        .optional()?)
}

/// Makes `key` the one the store's secrets are sealed with: records its id in a store that has none,
/// refuses it when the store records another, and seals any secret written before secrets were sealed.
pub(super) fn adopt_key(conn: &mut Connection, key: &SecretsKey) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
        params![KEY_ID_SETTING, key.id()],
    )?;
    let recorded: String = tx.query_row(
        "SELECT value FROM settings WHERE name = ?1",
        [KEY_ID_SETTING],
        |r| r.get(0),
    )?;
    key.check_recorded(&recorded)?;
    let plain = {
        let mut statement =
            tx.prepare("SELECT function, name, value FROM variables WHERE secret = 1")?;
        let rows = statement.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        rows.filter(|row| !matches!(row, Ok((_, _, value)) if SecretsKey::is_sealed(value)))
            .collect::<Result<Vec<_>, _>>()?
    };
    if plain.is_empty() {
        return Ok(tx.commit()?);
    }
    // The plain values' bytes are zeroed where they lay, not merely marked free, and the pages that
    // held them are written back into the database file at once.
    tx.pragma_update(None, "secure_delete", "ON")?;
    for (function, name, value) in &plain {
        tx.execute(
            "UPDATE variables SET value = ?3 WHERE function = ?1 AND name = ?2",
            params![function, name, key.seal(function, name, value)?],
        )?;
    }
    tx.commit()?;
    conn.pragma_update(None, "secure_delete", "OFF")?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    tracing::info!(
        secrets = plain.len(),
        "sealed the secrets stored in plain text"
    );
    Ok(())
}
