//! A version's read-only files: the bundle a deploy brings (a tar of regular files and directories,
//! stored by its digest like a module) and its unpacked copy on each node's disk, which a function's
//! instances see as a read-only `/`.
//!
//! [`check`] is the one reader of a bundle's entries: a deploy runs it to refuse a bad bundle with a clear
//! error, and [`Unpacked::unpack`] runs it again, so what reaches the disk is only ever what it allows —
//! relative paths without `..`, regular files and directories, no links or devices, each path once.
//!
//! Layout under the data directory: `files/<digest>/` holds a bundle's files. A bundle is unpacked into
//! a temporary directory and renamed, so a crash never leaves a partial tree under a real name.

use crate::StoreError;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// The most entries (files and directories) a bundle holds.
pub const MAX_ENTRIES: usize = 10_000;

/// What a checked bundle holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Its regular files.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// One entry of a bundle, as [`check`] accepts it.
enum Entry<R> {
    Dir(PathBuf),
    File(PathBuf, R),
}

/// Checks a bundle: a tar of regular files and directories under relative paths. The error says which
/// entry is refused and why.
pub fn check(bundle: &[u8]) -> Result<Summary, String> {
    let mut summary = Summary { files: 0, bytes: 0 };
    entries(bundle, |entry| {
        if let Entry::File(_, file) = entry {
            summary.files += 1;
            summary.bytes += file.size();
        }
        Ok(())
    })?;
    Ok(summary)
}

/// Calls `each` with every entry of `bundle`, in order, after checking it.
fn entries(
    bundle: &[u8],
    mut each: impl FnMut(Entry<tar::Entry<'_, &[u8]>>) -> Result<(), String>,
) -> Result<(), String> {
    let invalid = |e: std::io::Error| format!("the files bundle is not a valid tar archive: {e}");
    let mut archive = tar::Archive::new(bundle);
    let mut seen = BTreeSet::new();
    for (n, entry) in archive.entries().map_err(invalid)?.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(format!(
                "the files bundle holds more than {MAX_ENTRIES} entries"
            ));
        }
        let entry = entry.map_err(invalid)?;
        let raw = entry.path().map_err(invalid)?.into_owned();
        let path = relative(&raw)?;
        if path.as_os_str().is_empty() {
            continue; // the archive's own root, "./"
        }
        if !seen.insert(path.clone()) {
            return Err(format!("`{}` is in the files bundle twice", path.display()));
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            each(Entry::Dir(path))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            each(Entry::File(path, entry))?;
        } else {
            return Err(format!(
                "`{}` in the files bundle is a {}: a bundle holds only regular files and directories",
                path.display(),
                describe(kind)
            ));
        }
    }
    Ok(())
}

/// `path` as a relative path of plain names (`./` dropped), or why it is refused.
fn relative(path: &Path) -> Result<PathBuf, String> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{}` in the files bundle is not a relative path inside it",
                    path.display()
                ))
            }
        }
    }
    Ok(clean)
}

fn describe(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "named pipe",
        _ => "special entry",
    }
}

/// The unpacked bundles of one node.
#[derive(Debug, Clone)]
pub struct Unpacked {
    dir: PathBuf,
}

impl Unpacked {
    /// Opens (creating if needed) the directory of unpacked bundles under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let dir = data_dir.join("files");
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Where bundle `digest` is (or would be) unpacked.
    pub fn path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        if digest.is_empty() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Corrupt(format!("{digest:?} is not a digest")));
        }
        Ok(self.dir.join(digest))
    }

    /// Whether bundle `digest` is unpacked here.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|path| path.is_dir())
    }

    /// Unpacks `bundle` as `digest` unless it is there already: files read-only, through a temporary
    /// directory and a rename. Blocking.
    pub fn unpack(&self, digest: &str, bundle: &[u8]) -> Result<PathBuf, StoreError> {
        let target = self.path(digest)?;
        if target.is_dir() {
            return Ok(target);
        }
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&self.dir)?;
        let root = tmp.path().to_path_buf();
        let mut failed: Option<std::io::Error> = None;
        let write = |entry: Entry<tar::Entry<'_, &[u8]>>| -> std::io::Result<()> {
            match entry {
                Entry::Dir(path) => fs::create_dir_all(root.join(path)),
                Entry::File(path, mut file) => {
                    let path = root.join(path);
                    if let Some(parent) = path.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let mut out = fs::File::create(&path)?;
                    std::io::copy(&mut file, &mut out)?;
                    out.set_permissions(fs::Permissions::from_mode(0o444))
                }
            }
        };
        entries(bundle, |entry| {
            write(entry).map_err(|e| {
                let message = e.to_string();
                failed = Some(e);
                message
            })
        })
        .map_err(|message| match failed.take() {
            Some(io) => StoreError::from(io),
            None => StoreError::Corrupt(message),
        })?;
        let tmp = tmp.keep();
        match fs::rename(&tmp, &target) {
            Ok(()) => {}
            // Another task unpacked the same bundle first.
            Err(_) if target.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e.into());
            }
        }
        Ok(target)
    }

    /// Removes the unpacked copy of bundle `digest` (a no-op when there is none).
    pub fn remove(&self, digest: &str) -> Result<(), StoreError> {
        match fs::remove_dir_all(self.path(digest)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
