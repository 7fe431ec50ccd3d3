//! Module bytes, content-addressed by their SHA-256: the [`ModuleBlobs`] trait, and [`DirBlobs`], the
//! files of a data directory.
//!
//! A [`crate::MetaStore`] keeps a version's bytes through its `insert_version`, so that no version is ever
//! stored without them: a store whose bytes live outside its database (these files, an object store)
//! writes them durably before it commits the version, and one that keeps them in its database writes them
//! in the version's own transaction.
//!
//! Layout under the data directory: `modules/sha256/<hex>` holds a module as deployed. Files are written
//! to a temporary name, fsynced and renamed, so a crash never leaves a partial blob under a real name, and
//! a file is never rewritten in place.

use crate::{blocking, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where module bytes live, by digest (the lowercase hex SHA-256 of the bytes).
#[async_trait]
pub trait ModuleBlobs: Send + Sync {
    /// Stores `bytes` under `digest`, durable when it returns; a no-op when they are there already.
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// The bytes stored under `digest`; [`StoreError::NotFound`] when there are none.
    async fn get(&self, digest: &str) -> Result<Vec<u8>, StoreError>;

    /// Whether bytes are stored under `digest`.
    async fn contains(&self, digest: &str) -> Result<bool, StoreError>;

    /// Removes the bytes stored under `digest` (a no-op when there are none).
    async fn remove(&self, digest: &str) -> Result<(), StoreError>;
}

/// Module bytes as files of a data directory, under `modules/sha256/`.
#[derive(Debug, Clone)]
pub struct DirBlobs {
    dir: PathBuf,
}

impl DirBlobs {
    /// Opens (creating if needed) the blob directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = blob_dir(data_dir);
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Corrupt(format!("{digest:?} is not a digest")));
        }
        Ok(self.dir.join(digest))
    }
}

#[async_trait]
impl ModuleBlobs for DirBlobs {
    async fn put(&self, digest: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path(digest)?;
        blocking(move || {
            if path.exists() {
                return Ok(());
            }
            write_atomically(&path, &bytes)
        })
        .await
    }

    async fn get(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(digest)?;
        let digest = digest.to_string();
        blocking(move || match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(format!("module {digest}")))
            }
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn contains(&self, digest: &str) -> Result<bool, StoreError> {
        Ok(self.path(digest)?.exists())
    }

    async fn remove(&self, digest: &str) -> Result<(), StoreError> {
        let path = self.path(digest)?;
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }
}

/// The directory of a data directory's blobs: module bytes and, beside them, compiled artifacts.
pub(crate) fn blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("modules").join("sha256")
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no parent", path.display())))?;
    let (tmp, mut file) = tempfile_in(dir)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // A full disk, most likely: nothing is left behind under any name.
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Creates a uniquely named temporary file in `dir`.
fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), StoreError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_round_trip_and_refuse_what_is_not_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = DirBlobs::open(dir.path()).unwrap();
        let digest = wafer_api::oci::sha256_hex(b"a");
        blobs.put(&digest, Bytes::from_static(b"a")).await.unwrap();
        assert!(blobs.contains(&digest).await.unwrap());
        assert_eq!(blobs.get(&digest).await.unwrap(), b"a");
        blobs.remove(&digest).await.unwrap();
        assert!(matches!(
            blobs.get(&digest).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(blobs.get("../wafer.db").await.is_err());
    }
}
