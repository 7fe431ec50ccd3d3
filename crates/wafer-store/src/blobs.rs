//! Content-addressed module bytes and compiled artifacts on disk.
//!
//! Layout under the data directory: `modules/sha256/<hex>` holds a module as deployed;
//! `modules/sha256/<hex>.<engine-fingerprint>.cwasm` holds its compiled form for one engine build, so an engine
//! upgrade never loads an incompatible artifact. Files are written to a temporary name, fsynced and renamed,
//! so a crash never leaves a partial blob under a real name, and a file is never rewritten in place: a loaded
//! artifact is memory-mapped, and truncating it under the mapping would crash the process.

use crate::StoreError;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The module blob directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("modules").join("sha256");
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The SHA-256 digest of `bytes`, hex.
    pub fn digest(bytes: &[u8]) -> String {
        let hash = Sha256::digest(bytes);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where a module's bytes live.
    pub fn module_path(&self, digest: &str) -> PathBuf {
        self.dir.join(digest)
    }

    /// Where a module's compiled artifact for the engine with `fingerprint` lives.
    pub fn artifact_path(&self, digest: &str, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{digest}.{fingerprint}.cwasm"))
    }

    /// Stores a module's bytes under its digest (a no-op when already present).
    pub fn put_module(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.module_path(digest);
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// Stores a compiled artifact.
    pub fn put_artifact(
        &self,
        digest: &str,
        fingerprint: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        write_atomically(&self.artifact_path(digest, fingerprint), bytes)
    }

    /// Reads a module's bytes back.
    pub fn read_module(&self, digest: &str) -> Result<Vec<u8>, StoreError> {
        Ok(fs::read(self.module_path(digest))?)
    }

    /// Removes a module and every compiled artifact of it.
    pub fn remove(&self, digest: &str) -> Result<(), StoreError> {
        let artifact_prefix = format!("{digest}.");
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == digest || name.starts_with(&artifact_prefix) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a fsynced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path
        .parent()
        .ok_or_else(|| StoreError::Corrupt(format!("{} has no parent", path.display())))?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    fs::rename(&tmp.0, path)?;
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

    #[test]
    fn remove_deletes_module_and_its_artifacts_only() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let a = BlobStore::digest(b"a");
        let b = BlobStore::digest(b"b");
        blobs.put_module(&a, b"a").unwrap();
        blobs.put_artifact(&a, "fp1", b"compiled").unwrap();
        blobs.put_module(&b, b"b").unwrap();
        blobs.remove(&a).unwrap();
        assert!(!blobs.module_path(&a).exists());
        assert!(!blobs.artifact_path(&a, "fp1").exists());
        assert_eq!(blobs.read_module(&b).unwrap(), b"b");
    }
}
