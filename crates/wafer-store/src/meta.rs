//! The metadata trait: functions, their immutable versions (with their module bytes) and which version is
//! live.

use crate::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use wafer_api::{Alias, FunctionConfig, FunctionInfo, Kind, VersionInfo, LIVE};

/// A version about to be stored; its number is assigned by the store.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The function's name (already validated).
    pub name: String,
    /// The detected or forced kind.
    pub kind: Kind,
    /// The configuration it is deployed with.
    pub config: FunctionConfig,
    /// The module's SHA-256, hex.
    pub digest: String,
    /// The module's size in bytes.
    pub size: u64,
    /// Configuration variables and secrets merged into the function's, in the same transaction.
    pub variables: crate::FunctionVariables,
    /// Its read-only files, as a checked bundle ([`crate::files`]); none for most functions.
    pub files: Option<FilesBundle>,
}

/// A bundle of read-only files a version is deployed with: a tar, stored by its digest like a module.
#[derive(Debug, Clone)]
pub struct FilesBundle {
    /// The bundle's SHA-256, hex.
    pub digest: String,
    /// The tar's bytes.
    pub bytes: Bytes,
}

/// A stored, immutable version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// The function's name.
    pub name: String,
    /// The version number, from 1.
    pub version: u32,
    /// Its kind.
    pub kind: Kind,
    /// Its configuration.
    pub config: FunctionConfig,
    /// The module's SHA-256, hex.
    pub digest: String,
    /// The module's size in bytes.
    pub size: u64,
    /// When it was stored (RFC 3339, UTC).
    pub created_at: String,
    /// The digest of its read-only files' bundle, when it has files.
    pub files: Option<String>,
}

/// A stored function with its live version and its aliases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFunction {
    /// The live version's details (the version of alias `live`).
    pub live: StoredVersion,
    /// Every alias by name, `live` among them.
    pub aliases: BTreeMap<String, Alias>,
    /// The newest version number.
    pub latest_version: u32,
    /// When the function was first deployed.
    pub created_at: String,
    /// When the live version last changed.
    pub updated_at: String,
}

impl StoredVersion {
    /// The API view of this version; `live` says whether it answers calls.
    pub fn to_info(&self, live: bool) -> VersionInfo {
        VersionInfo {
            function: self.name.clone(),
            version: self.version,
            kind: self.kind,
            config: self.config.clone(),
            digest: self.digest.clone(),
            size: self.size,
            created_at: self.created_at.clone(),
            files: self.files.clone(),
            live,
        }
    }
}

impl StoredFunction {
    /// The `live` alias: the live version, with its weights.
    pub fn live_alias(&self) -> Alias {
        match self.aliases.get(LIVE) {
            Some(live) if live.version == self.live.version => live.clone(),
            _ => Alias::to(self.live.version),
        }
    }

    /// The API view of this function.
    pub fn to_info(&self) -> FunctionInfo {
        FunctionInfo {
            name: self.live.name.clone(),
            live_version: self.live.version,
            live_weights: self
                .aliases
                .get(LIVE)
                .map(|live| live.weights.clone())
                .unwrap_or_default(),
            latest_version: self.latest_version,
            kind: self.live.kind,
            config: self.live.config.clone(),
            digest: self.live.digest.clone(),
            limits: Default::default(),
            created_at: self.created_at.clone(),
            updated_at: self.updated_at.clone(),
        }
    }
}

/// Function metadata storage. Every method is atomic: it either happens whole or not at all.
#[async_trait]
pub trait MetaStore: Send + Sync {
    /// Stores a new version under the next number, with its module bytes (`new.digest` is their
    /// digest), and — when `promote`, or when it is the function's first — makes it live (alias
    /// `live`, without weights), mounting its routes. A version never exists without its bytes: they
    /// are durable before the version is, or written in its transaction.
    ///
    /// Fails with [`StoreError::RouteTaken`] (and stores nothing, bytes included unless another version
    /// has them) when another function holds a route.
    async fn insert_version(
        &self,
        new: NewVersion,
        module: Bytes,
        promote: bool,
    ) -> Result<StoredFunction, StoreError> {
        let mut stored = self.insert_versions(vec![(new, module)], promote).await?;
        stored
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a deploy stored nothing".into()))
    }

    /// [`Self::insert_version`] for several functions (at most one version each) in one transaction:
    /// all of them are stored, or none. Returns the functions in the order given.
    async fn insert_versions(
        &self,
        versions: Vec<(NewVersion, Bytes)>,
        promote: bool,
    ) -> Result<Vec<StoredFunction>, StoreError>;

    /// The module bytes of digest `digest` (or the files bundle of that digest);
    /// [`StoreError::NotFound`] when no version has them.
    async fn module(&self, digest: &str) -> Result<Vec<u8>, StoreError>;

    /// Whether any version references module (or files bundle) `digest`: [`Self::module`]'s answer
    /// without reading the bytes, and from the database itself, not a node's local copy.
    async fn module_in_use(&self, digest: &str) -> Result<bool, StoreError>;

    /// All functions, by name.
    async fn list_functions(&self) -> Result<Vec<StoredFunction>, StoreError>;

    /// One function, or `None`.
    async fn get_function(&self, name: &str) -> Result<Option<StoredFunction>, StoreError>;

    /// Every version of a function, oldest first; empty when the function does not exist.
    async fn list_versions(&self, name: &str) -> Result<Vec<StoredVersion>, StoreError>;

    /// Points alias `alias` of `name` at `target` (its versions must exist). Setting `live` makes
    /// `target.version` the live version and remounts its routes.
    async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        target: Alias,
    ) -> Result<StoredFunction, StoreError>;

    /// Removes alias `alias` of `name` (never `live`); [`StoreError::NotFound`] when there is none.
    async fn delete_alias(&self, name: &str, alias: &str) -> Result<StoredFunction, StoreError>;

    /// Deletes a function with all its versions and routes, and the module bytes (and files bundles) no
    /// other version uses.
    /// Returns the digests of those modules, so what was derived from them (compiled artifacts) can go
    /// too.
    async fn delete_function(&self, name: &str) -> Result<Vec<String>, StoreError>;
}
