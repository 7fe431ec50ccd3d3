//! [`MetaStore`] on SQLite: tables `functions`, `versions` and `routes`, with each version's module bytes
//! in the store's [`crate::ModuleBlobs`] (files beside the database), written durably before the version
//! is committed.

use super::cluster::bump;
use super::{run_on, SqliteStore, NOW};
use crate::meta::{MetaStore, NewVersion, StoredFunction, StoredVersion};
use crate::sql::{
    aliases_from, aliases_json, change_alias, function_query, ALIASES_COLUMN, VERSION_COLUMNS,
};
use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use wafer_api::{Alias, LIVE};

impl SqliteStore {
    /// Runs `f` with the metadata connection on the blocking pool.
    async fn with_meta<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(&self.meta, f).await
    }

    /// Writes the bytes of `versions` (modules and files bundles) that are not stored yet, naming
    /// each in `added` as it is written; returns the rows to insert, each with its configuration.
    async fn put_blobs(
        &self,
        versions: Vec<(NewVersion, Bytes)>,
        added: &mut Vec<String>,
    ) -> Result<Vec<(NewVersion, String)>, StoreError> {
        let mut rows = Vec::with_capacity(versions.len());
        for (new, module) in versions {
            let config = serde_json::to_string(&new.config)
                .map_err(|e| StoreError::Corrupt(format!("config does not serialise: {e}")))?;
            let files = new
                .files
                .as_ref()
                .map(|f| (f.digest.clone(), f.bytes.clone()));
            for (digest, bytes) in std::iter::once((new.digest.clone(), module)).chain(files) {
                if self.blobs.contains(&digest).await? {
                    continue;
                }
                self.blobs.put(&digest, bytes).await?;
                added.push(digest);
            }
            rows.push((new, config));
        }
        Ok(rows)
    }
}

/// Whether any version references module (or files bundle) `digest`.
fn uses(conn: &Connection, digest: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE digest = ?1)
             OR EXISTS (SELECT 1 FROM versions WHERE files = ?1)",
        [digest],
        |r| r.get(0),
    )?)
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredVersion> {
    version_at(row, 0)
}

/// Reads [`VERSION_COLUMNS`] starting at column `base`.
fn version_at(row: &rusqlite::Row<'_>, base: usize) -> rusqlite::Result<StoredVersion> {
    let kind: String = row.get(base + 2)?;
    let config: String = row.get(base + 3)?;
    let size: i64 = row.get(base + 5)?;
    let corrupt = |what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            base + 2,
            rusqlite::types::Type::Text,
            what.into(),
        )
    };
    Ok(StoredVersion {
        name: row.get(base)?,
        version: row.get(base + 1)?,
        kind: kind.parse().map_err(corrupt)?,
        config: serde_json::from_str(&config).map_err(|e| corrupt(e.to_string()))?,
        digest: row.get(base + 4)?,
        size: u64::try_from(size).unwrap_or_default(),
        created_at: row.get(base + 6)?,
        files: row.get(base + 7)?,
    })
}

fn load_function(conn: &Connection, name: &str) -> Result<Option<StoredFunction>, StoreError> {
    Ok(conn
        .query_row(
            &function_query("WHERE f.name = ?1"),
            [name],
            function_from_row,
        )
        .optional()?)
}

/// Reads a row of `created_at, updated_at, latest, <version columns>, aliases`.
fn function_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredFunction> {
    let live = version_at(row, 3)?;
    let aliases: String = row.get(ALIASES_COLUMN)?;
    let aliases = aliases_from(&aliases, live.version).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            ALIASES_COLUMN,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    })?;
    Ok(StoredFunction {
        live,
        aliases,
        latest_version: row.get(2)?,
        created_at: row.get(0)?,
        updated_at: row.get(1)?,
    })
}

/// Replaces the routes of `name` with `routes`, refusing any held by another function.
fn mount_routes(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    routes: &[String],
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM routes WHERE name = ?1", [name])?;
    for route in routes {
        let owner: Option<String> = tx
            .query_row("SELECT name FROM routes WHERE path = ?1", [route], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::RouteTaken {
                route: route.clone(),
                owner,
            });
        }
        tx.execute(
            "INSERT INTO routes (path, name) VALUES (?1, ?2)",
            params![route, name],
        )?;
    }
    Ok(())
}

/// Points `alias` of `name` at `target` (or removes it), within `tx`; moving `live` also moves the live
/// version and its routes.
fn point(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    alias: &str,
    target: Option<Alias>,
) -> Result<(), StoreError> {
    let current = load_function(tx, name)?;
    let (aliases, latest) = match &current {
        Some(function) => (function.aliases.clone(), function.latest_version),
        // The first version of a new function: its row holds version 0 until now.
        None => (
            Default::default(),
            tx.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )?,
        ),
    };
    if current.is_none() && latest == 0 {
        return Err(StoreError::NotFound(format!("function `{name}`")));
    }
    let live = (alias == LIVE)
        .then(|| target.as_ref().map(|t| t.version))
        .flatten();
    let aliases = change_alias(aliases, name, alias, target, latest)?;
    tx.execute(
        "UPDATE functions SET aliases = ?2 WHERE name = ?1",
        params![name, aliases_json(&aliases)?],
    )?;
    if let Some(version) = live {
        tx.execute(
            &format!("UPDATE functions SET live_version = ?2, updated_at = {NOW} WHERE name = ?1"),
            params![name, version],
        )?;
        let routes: String = tx.query_row(
            "SELECT config FROM versions WHERE name = ?1 AND version = ?2",
            params![name, version],
            |r| r.get(0),
        )?;
        let config: wafer_api::FunctionConfig = serde_json::from_str(&routes)
            .map_err(|e| StoreError::Corrupt(format!("stored config: {e}")))?;
        mount_routes(tx, name, &config.routes)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Stores a version's row under the next number and, when `promote` or first, makes it live, in
    /// one transaction.
    async fn insert_rows(
        &self,
        versions: Vec<(NewVersion, String)>,
        promote: bool,
    ) -> Result<Vec<StoredFunction>, StoreError> {
        let secrets = self.secrets.clone();
        self.with_meta(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut stored = Vec::with_capacity(versions.len());
            for (new, config) in versions {
                stored.push(insert_row(&tx, new, config, promote, &secrets)?);
            }
            tx.commit()?;
            Ok(stored)
        })
        .await
    }
}

/// Inserts `new` (its configuration serialised as `config`, its secrets sealed with `secrets`) in `tx`,
/// returning its function as it then is.
fn insert_row(
    tx: &Transaction<'_>,
    new: NewVersion,
    config: String,
    promote: bool,
    secrets: &SecretsKey,
) -> Result<StoredFunction, StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO functions (name, live_version, created_at, updated_at)
             VALUES (?1, 0, {NOW}, {NOW}) ON CONFLICT(name) DO NOTHING"
        ),
        [&new.name],
    )?;
    let version: u32 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name = ?1",
        [&new.name],
        |r| r.get(0),
    )?;
    tx.execute(
        &format!(
            "INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW}, ?7)"
        ),
        params![
            new.name,
            version,
            new.kind.as_str(),
            config,
            new.digest,
            i64::try_from(new.size).unwrap_or(i64::MAX),
            new.files.as_ref().map(|files| &files.digest),
        ],
    )?;
    if promote || version == 1 {
        point(tx, &new.name, LIVE, Some(Alias::to(version)))?;
    }
    super::state::insert_variables(tx, &new.name, &new.variables.variables, None)?;
    super::state::insert_variables(tx, &new.name, &new.variables.secrets, Some(secrets))?;
    bump(tx, &new.name)?;
    load_function(tx, &new.name)?
        .ok_or_else(|| StoreError::Corrupt("inserted function vanished".into()))
}

impl SqliteStore {
    /// [`point`] in a transaction of its own, returning the function as it then is.
    async fn change_alias(
        &self,
        name: &str,
        alias: &str,
        target: Option<Alias>,
    ) -> Result<StoredFunction, StoreError> {
        let (name, alias) = (name.to_owned(), alias.to_owned());
        self.with_meta(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            point(&tx, &name, &alias, target)?;
            bump(&tx, &name)?;
            let function = load_function(&tx, &name)?.ok_or_else(|| {
                StoreError::Corrupt("function vanished during an alias change".into())
            })?;
            tx.commit()?;
            Ok(function)
        })
        .await
    }
}

#[async_trait]
impl MetaStore for SqliteStore {
    async fn insert_versions(
        &self,
        versions: Vec<(NewVersion, Bytes)>,
        promote: bool,
    ) -> Result<Vec<StoredFunction>, StoreError> {
        let _deploy = self.deploys.lock().await;
        let mut added = Vec::new();
        let stored = match self.put_blobs(versions, &mut added).await {
            Ok(rows) => self.insert_rows(rows, promote).await,
            Err(e) => Err(e),
        };
        if stored.is_err() {
            for digest in added {
                if self.module_in_use(&digest).await.unwrap_or(true) {
                    continue;
                }
                if let Err(cleanup) = self.blobs.remove(&digest).await {
                    tracing::warn!(%digest, "cannot remove the module of a failed deploy: {cleanup}");
                }
            }
        }
        stored
    }

    async fn module(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        self.blobs.get(digest).await
    }

    async fn module_in_use(&self, digest: &str) -> Result<bool, StoreError> {
        let digest = digest.to_owned();
        self.with_meta(move |conn| uses(conn, &digest)).await
    }

    async fn list_functions(&self) -> Result<Vec<StoredFunction>, StoreError> {
        self.with_meta(|conn| {
            // Read in table order and sorted here: ordered by name, SQLite walks the functions' name
            // index and looks each row up in the table, which doubles the time at 100,000 functions.
            let mut stmt = conn.prepare(&function_query(""))?;
            let rows = stmt.query_map([], function_from_row)?;
            let mut functions = rows.collect::<Result<Vec<_>, _>>()?;
            functions.sort_unstable_by(|a, b| a.live.name.cmp(&b.live.name));
            Ok(functions)
        })
        .await
    }

    async fn get_function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError> {
        let name = name.to_owned();
        self.with_meta(move |conn| load_function(conn, &name)).await
    }

    async fn list_versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError> {
        let name = name.to_owned();
        self.with_meta(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE name = ?1 ORDER BY version"
            ))?;
            let rows = stmt.query_map([&name], version_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
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
        let name = name.to_owned();
        let _deploy = self.deploys.lock().await;
        let orphaned = self
            .with_meta(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let digests: Vec<String> = {
                    let mut stmt = tx.prepare(
                        "SELECT digest FROM versions WHERE name = ?1
                         UNION SELECT files FROM versions WHERE name = ?1 AND files IS NOT NULL",
                    )?;
                    let rows = stmt.query_map([&name], |r| r.get(0))?;
                    rows.collect::<Result<_, _>>()?
                };
                let deleted = tx.execute("DELETE FROM functions WHERE name = ?1", [&name])?;
                tx.execute("DELETE FROM schedules WHERE function = ?1", [&name])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound(format!("function `{name}`")));
                }
                bump(&tx, &name)?;
                let mut orphaned = Vec::new();
                for digest in digests {
                    if !uses(&tx, &digest)? {
                        orphaned.push(digest);
                    }
                }
                tx.commit()?;
                Ok(orphaned)
            })
            .await?;
        for digest in &orphaned {
            if let Err(e) = self.blobs.remove(digest).await {
                tracing::warn!(%digest, "cannot remove the module of a deleted function: {e}");
            }
        }
        Ok(orphaned)
    }
}
