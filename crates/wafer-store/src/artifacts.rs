//! Compiled artifacts, kept on each node's own disk beside the module files: `<digest>.<fingerprint>.cwasm`
//! under `modules/sha256/`. An artifact belongs to one engine build and configuration (its fingerprint),
//! so an engine upgrade never loads an incompatible one; it is a cache, rebuilt from the module's bytes
//! whenever it is missing.
//!
//! A loaded artifact is memory-mapped, so a file is never rewritten in place (truncating it under the
//! mapping would crash the process): it is written to a temporary name and renamed.

use crate::blobs::{blob_dir, write_atomically};
use crate::StoreError;
use std::fs;
use std::path::{Path, PathBuf};

/// The compiled artifacts of one node.
#[derive(Debug, Clone)]
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    /// Opens (creating if needed) the artifact directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = blob_dir(data_dir);
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Where the artifact of module `digest` for the engine with `fingerprint` lives.
    pub fn path(&self, digest: &str, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{digest}.{fingerprint}.cwasm"))
    }

    /// Stores an artifact.
    pub fn put(&self, digest: &str, fingerprint: &str, bytes: &[u8]) -> Result<(), StoreError> {
        write_atomically(&self.path(digest, fingerprint), bytes)
    }

    /// Removes every artifact of module `digest`, for any engine.
    pub fn remove(&self, digest: &str) -> Result<(), StoreError> {
        let prefix = format!("{digest}.");
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".cwasm") {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_deletes_every_artifact_of_one_module_only() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = Artifacts::open(dir.path()).unwrap();
        artifacts.put("aa", "fp1", b"one").unwrap();
        artifacts.put("aa", "fp2", b"two").unwrap();
        artifacts.put("bb", "fp1", b"other").unwrap();
        std::fs::write(blob_dir(dir.path()).join("aa"), b"module").unwrap();
        artifacts.remove("aa").unwrap();
        assert!(!artifacts.path("aa", "fp1").exists());
        assert!(!artifacts.path("aa", "fp2").exists());
        assert!(artifacts.path("bb", "fp1").exists());
        assert!(blob_dir(dir.path()).join("aa").exists(), "the module stays");
    }
}
