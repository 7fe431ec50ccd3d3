//! [`MetaStore`] on PostgreSQL: tables `functions`, `versions`, `routes` and `modules`. A version's
//! module bytes are written in the version's own transaction, so no node ever sees a version without
//! them; each node keeps the bytes it read in its data directory, checked against their digest on every
//! read.

use super::cluster::bump;
use super::{big, unsigned, PgStore, NOW};
use crate::blobs::ModuleBlobs;
use crate::meta::{MetaStore, NewVersion, StoredFunction, StoredVersion};
use crate::sql::{
    aliases_from, aliases_json, change_alias, function_query, ALIASES_COLUMN, VERSION_COLUMNS,
};
use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::GenericClient;
use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use wafer_api::oci::sha256_hex;
use wafer_api::{Alias, LIVE};

/// Reads [`VERSION_COLUMNS`] starting at column `base`.
fn version_at(row: &Row, base: usize) -> Result<StoredVersion, StoreError> {
    let kind: String = row.try_get(base + 2)?;
    let config: String = row.try_get(base + 3)?;
    Ok(StoredVersion {
        name: row.try_get(base)?,
        version: u32::try_from(row.try_get::<_, i64>(base + 1)?).unwrap_or_default(),
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        config: serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("stored config: {e}")))?,
        digest: row.try_get(base + 4)?,
        size: unsigned(row.try_get(base + 5)?),
        created_at: row.try_get(base + 6)?,
        files: row.try_get(base + 7)?,
    })
}

fn function_from_row(row: &Row) -> Result<StoredFunction, StoreError> {
    let live = version_at(row, 3)?;
    let aliases: String = row.try_get(ALIASES_COLUMN)?;
    Ok(StoredFunction {
        aliases: aliases_from(&aliases, live.version)?,
        live,
        latest_version: u32::try_from(row.try_get::<_, i64>(2)?).unwrap_or_default(),
        created_at: row.try_get(0)?,
        updated_at: row.try_get(1)?,
    })
}

async fn load_function(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<StoredFunction>, StoreError> {
    let statement = client
        .prepare_cached(&function_query("WHERE f.name = $1"))
        .await?;
    client
        .query_opt(&statement, &[&name])
        .await?
        .as_ref()
        .map(function_from_row)
        .transpose()
}

/// Replaces the routes of `name` with `routes`, refusing any held by another function. A route being
/// taken by a concurrent deploy waits for it, then counts as taken.
async fn mount_routes(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    routes: &[String],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM routes WHERE name = $1", &[&name])
        .await?;
    for route in routes {
        let mounted = tx
            .query_opt(
                "INSERT INTO routes (path, name) VALUES ($1, $2) ON CONFLICT (path) DO NOTHING
                 RETURNING path",
                &[route, &name],
            )
            .await?;
        if mounted.is_none() {
            let owner = tx
                .query_opt("SELECT name FROM routes WHERE path = $1", &[route])
                .await?
                .map(|row| row.get::<_, String>(0))
                .unwrap_or_default();
            return Err(StoreError::RouteTaken {
                route: route.clone(),
                owner,
            });
        }
    }
    Ok(())
}

/// Points `alias` of `name` at `target` (or removes it) within `tx`, which holds the function's row
/// lock; moving `live` also moves the live version and its routes.
async fn point(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
    alias: &str,
    target: Option<Alias>,
) -> Result<(), StoreError> {
    let row = tx
        .query_opt(
            "SELECT aliases, (SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = $1)
             FROM functions WHERE name = $1",
            &[&name],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("function `{name}`")))?;
    let latest = u32::try_from(row.try_get::<_, i64>(1)?).unwrap_or_default();
    let stored: String = row.try_get(0)?;
    let aliases: std::collections::BTreeMap<String, Alias> = serde_json::from_str(&stored)
        .map_err(|e| StoreError::Corrupt(format!("stored aliases: {e}")))?;
    let live = (alias == LIVE)
        .then(|| target.as_ref().map(|t| t.version))
        .flatten();
    let aliases = change_alias(aliases, name, alias, target, latest)?;
    tx.execute(
        "UPDATE functions SET aliases = $2 WHERE name = $1",
        &[&name, &aliases_json(&aliases)?],
    )
    .await?;
    if let Some(version) = live {
        let version = i64::from(version);
        tx.execute(
            &format!("UPDATE functions SET live_version = $2, updated_at = {NOW} WHERE name = $1"),
            &[&name, &version],
        )
        .await?;
        let config: String = tx
            .query_one(
                "SELECT config FROM versions WHERE name = $1 AND version = $2",
                &[&name, &version],
            )
            .await?
            .try_get(0)?;
        let config: wafer_api::FunctionConfig = serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("stored config: {e}")))?;
        mount_routes(tx, name, &config.routes).await?;
    }
    Ok(())
}

/// Locks the row of `name` for the rest of the transaction, so changes to one function are serialised.
async fn lock_function(
    tx: &deadpool_postgres::Transaction<'_>,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM functions WHERE name = $1 FOR UPDATE",
            &[&name],
        )
        .await?
        .is_some())
}

impl PgStore {
    /// [`point`] in a transaction of its own, returning the function as it then is.
    async fn change_alias(
        &self,
        name: &str,
        alias: &str,
        target: Option<Alias>,
    ) -> Result<StoredFunction, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !lock_function(&tx, name).await? {
            return Err(StoreError::NotFound(format!("function `{name}`")));
        }
        point(&tx, name, alias, target).await?;
        bump(&tx, name).await?;
        let function = load_function(&tx, name).await?.ok_or_else(|| {
            StoreError::Corrupt("function vanished during an alias change".into())
        })?;
        tx.commit().await?;
        Ok(function)
    }
}

#[async_trait]
impl MetaStore for PgStore {
    async fn insert_versions(
        &self,
        mut versions: Vec<(NewVersion, Bytes)>,
        promote: bool,
    ) -> Result<Vec<StoredFunction>, StoreError> {
        // Functions are locked in name order, so two deploys of overlapping apps cannot deadlock.
        let mut order: Vec<usize> = (0..versions.len()).collect();
        order.sort_by(|&a, &b| versions[a].0.name.cmp(&versions[b].0.name));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut stored = vec![None; versions.len()];
        for &i in &order {
            let (new, module) = &versions[i];
            stored[i] = Some(insert_row(&tx, new, module, promote, &self.secrets).await?);
        }
        tx.commit().await?;
        // The deploying node has the bytes at hand: keep them, so it never reads them back.
        for (new, module) in versions.drain(..) {
            let files = new.files.map(|f| (f.digest, f.bytes));
            for (digest, bytes) in std::iter::once((new.digest, module)).chain(files) {
                if let Err(e) = self.cache.put(&digest, bytes).await {
                    tracing::warn!(%digest, "cannot cache deployed bytes: {e}");
                }
            }
        }
        stored
            .into_iter()
            .map(|f| f.ok_or_else(|| StoreError::Corrupt("a deployed function vanished".into())))
            .collect()
    }

    async fn module(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        if let Ok(bytes) = self.cache.get(digest).await {
            if sha256_hex(&bytes) == digest {
                return Ok(bytes);
            }
            tracing::warn!(%digest, "cached module does not match its digest; reading it again");
            self.cache.remove(digest).await?;
        }
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT bytes FROM modules WHERE digest = $1", &[&digest])
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("module {digest}")))?;
        let bytes: Vec<u8> = row.try_get(0)?;
        if sha256_hex(&bytes) != digest {
            return Err(StoreError::Corrupt(format!(
                "the stored module {digest} does not match its digest"
            )));
        }
        if let Err(e) = self.cache.put(digest, Bytes::from(bytes.clone())).await {
            tracing::warn!(%digest, "cannot cache a module: {e}");
        }
        Ok(bytes)
    }

    async fn module_in_use(&self, digest: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = $1)
                     OR EXISTS (SELECT 1 FROM versions WHERE files = $1)",
                &[&digest],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn list_functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&function_query("ORDER BY f.name"))
            .await?;
        client
            .query(&statement, &[])
            .await?
            .iter()
            .map(function_from_row)
            .collect()
    }

    async fn get_function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError> {
        load_function(&self.client().await?, name).await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE name = $1 ORDER BY version"
            ))
            .await?;
        client
            .query(&statement, &[&name])
            .await?
            .iter()
            .map(|row| version_at(row, 0))
            .collect()
    }

    async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        target: Alias,
    ) -> Result<StoredFunction, StoreError> {
        self.change_alias(name, alias, Some(target)).await
    }

    async fn delete_alias(&self, name: &str, alias: &str) -> Result<StoredFunction, StoreError> {
        self.change_alias(name, alias, None).await
    }

    async fn delete_function(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if !lock_function(&tx, name).await? {
            return Err(StoreError::NotFound(format!("function `{name}`")));
        }
        let digests: Vec<String> = tx
            .query(
                "SELECT digest FROM versions WHERE name = $1
                 UNION SELECT files FROM versions WHERE name = $1 AND files IS NOT NULL",
                &[&name],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.execute("DELETE FROM functions WHERE name = $1", &[&name])
            .await?;
        tx.execute("DELETE FROM schedules WHERE function = $1", &[&name])
            .await?;
        // Lock the modules first: a deploy storing one of them right now holds its row until it
        // commits, and the statement below, which runs after, then sees its version.
        tx.execute(
            "SELECT 1 FROM modules WHERE digest = ANY($1) ORDER BY digest FOR UPDATE",
            &[&digests],
        )
        .await?;
        let orphaned: Vec<String> = tx
            .query(
                "DELETE FROM modules m WHERE m.digest = ANY($1)
                   AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.digest = m.digest)
                   AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.files = m.digest)
                 RETURNING m.digest",
                &[&digests],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        bump(&tx, name).await?;
        tx.commit().await?;
        for digest in &orphaned {
            if let Err(e) = self.cache.remove(digest).await {
                tracing::warn!(%digest, "cannot remove the cached module of a deleted function: {e}");
            }
        }
        Ok(orphaned)
    }
}

/// Inserts `new` with its module bytes (and its secrets sealed with `secrets`) in `tx`, returning its
/// function as it then is.
async fn insert_row(
    tx: &Transaction<'_>,
    new: &NewVersion,
    module: &Bytes,
    promote: bool,
    secrets: &SecretsKey,
) -> Result<StoredFunction, StoreError> {
    let config = serde_json::to_string(&new.config)
        .map_err(|e| StoreError::Corrupt(format!("config does not serialise: {e}")))?;
    tx.execute(
        &format!(
            "INSERT INTO functions (name, live_version, created_at, updated_at)
             VALUES ($1, 0, {NOW}, {NOW}) ON CONFLICT (name) DO NOTHING"
        ),
        &[&new.name],
    )
    .await?;
    lock_function(tx, &new.name).await?;
    let version: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = $1",
            &[&new.name],
        )
        .await?
        .try_get(0)?;
    // The module and the files bundle, in digest order (as a delete locks them).
    let mut blobs = vec![(&new.digest, module)];
    blobs.extend(new.files.as_ref().map(|f| (&f.digest, &f.bytes)));
    blobs.sort_by_key(|(digest, _)| *digest);
    for (digest, bytes) in blobs {
        tx.execute(
            // Updating the row when it exists locks it, so a delete of its last user waits for this.
            "INSERT INTO modules (digest, bytes) VALUES ($1, $2)
             ON CONFLICT (digest) DO UPDATE SET digest = excluded.digest",
            &[digest, &bytes.as_ref()],
        )
        .await?;
    }
    tx.execute(
        &format!(
            "INSERT INTO versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, {NOW}, $7)"
        ),
        &[
            &new.name,
            &version,
            &new.kind.as_str(),
            &config,
            &new.digest,
            &big(new.size),
            &new.files.as_ref().map(|f| &f.digest),
        ],
    )
    .await?;
    if promote || version == 1 {
        let version = u32::try_from(version).unwrap_or_default();
        point(tx, &new.name, LIVE, Some(Alias::to(version))).await?;
    }
    super::state::insert_variables(tx, &new.name, &new.variables.variables, None).await?;
    super::state::insert_variables(tx, &new.name, &new.variables.secrets, Some(secrets)).await?;
    bump(tx, &new.name).await?;
    load_function(tx, &new.name)
        .await?
        .ok_or_else(|| StoreError::Corrupt("inserted function vanished".into()))
}
