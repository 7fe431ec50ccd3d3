//! Backups of a one-node data directory, taken while its server runs, and their restore into a fresh
//! directory.
//!
//! A backup is a directory:
//!
//! - `wafer.db`, a snapshot of the database taken by SQLite's online backup in one step, so it is one
//!   consistent point in time however busy the server is (in WAL mode a reader holds up no writer);
//! - `modules/sha256/<digest>`, each module and files bundle that snapshot's versions name, checked
//!   against its digest as it is copied;
//! - `sqlite/<label>.db`, the databases functions were granted, each copied by online backup too;
//! - the data directory's secrets key and node id, when it keeps them;
//! - `backup.json`, what the backup holds; it is written last, so a directory without it is not a
//!   backup.
//!
//! Module files are content-addressed and written before the row that names them, so every one the
//! snapshot names exists when it is taken. A delete of the function between the snapshot and the copy
//! can remove one; the backup then starts again from a new snapshot. Compiled artifacts, unpacked files
//! and the compile cache are caches, rebuilt on demand, and not copied.

use crate::blobs::blob_dir;
use crate::{StoreError, KEY_FILE};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The file naming this node in a data directory.
pub const NODE_ID_FILE: &str = "node-id";

/// The directory of the SQLite databases functions are granted, in a data directory.
pub const FUNCTION_DATABASES: &str = "sqlite";

/// What describes a backup, written in it last.
const MANIFEST: &str = "backup.json";

/// The layout of backups this wafer writes and reads.
const FORMAT: u32 = 1;

/// How many snapshots a backup takes before it gives up on modules deleted under it.
const ATTEMPTS: usize = 3;

/// What a backup holds, as `backup.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The layout of the backup.
    pub format: u32,
    /// When the snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// The database's schema version.
    pub schema: i64,
    /// Functions in the snapshot.
    pub functions: u64,
    /// Versions in the snapshot.
    pub versions: u64,
    /// Execution records in the snapshot.
    pub executions: u64,
    /// Module and files bundle files copied.
    pub modules: u64,
    /// Function databases copied.
    pub function_databases: u64,
    /// Bytes written, the database's included.
    pub bytes: u64,
    /// Whether the data directory's secrets key is in the backup.
    pub secrets_key: bool,
    /// The id of the key the secrets in the backup are sealed with: a server started on the restored
    /// directory needs that key.
    #[serde(default)]
    pub secrets_key_id: Option<String>,
}

/// Backs up the data directory `data_dir` (its server may be running) into `into`, a directory that
/// must not exist yet or be empty.
pub fn backup(data_dir: &Path, into: &Path) -> Result<BackupSummary, StoreError> {
    let database = data_dir.join("wafer.db");
    if !database.is_file() {
        return Err(StoreError::NotFound(format!(
            "a wafer database in {}",
            data_dir.display()
        )));
    }
    refuse_unless_empty(into, "back up into")?;
    let staging = staging_beside(into)?;
    let result = (|| {
        let mut summary = None;
        for _ in 0..ATTEMPTS {
            match snapshot(data_dir, &staging)? {
                Some(taken) => {
                    summary = Some(taken);
                    break;
                }
                // A module went away under the snapshot: start again from a new one.
                None => clear(&staging)?,
            }
        }
        let mut summary = summary.ok_or_else(|| {
            StoreError::Unavailable(format!(
                "modules kept being deleted while {ATTEMPTS} snapshots were copied; try again"
            ))
        })?;
        summary.function_databases = copy_function_databases(data_dir, &staging, &mut summary)?;
        for file in [KEY_FILE, NODE_ID_FILE] {
            if data_dir.join(file).is_file() {
                summary.bytes += copy_file(&data_dir.join(file), &staging.join(file))?;
                summary.secrets_key |= file == KEY_FILE;
            }
        }
        write_manifest(&staging, &summary)?;
        // An empty directory is replaced, a missing one made: either way in one rename.
        if into.is_dir() {
            fs::remove_dir(into)?;
        }
        fs::rename(&staging, into)?;
        sync_dir(into.parent().unwrap_or(Path::new(".")))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

/// Restores the backup in `from` into `data_dir`, which must hold no data yet (and no server may run
/// on it while this does).
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupSummary, StoreError> {
    let manifest = fs::read(from.join(MANIFEST)).map_err(|e| {
        StoreError::NotFound(format!("a backup in {} ({MANIFEST}: {e})", from.display()))
    })?;
    let summary: BackupSummary = serde_json::from_slice(&manifest)
        .map_err(|e| StoreError::Corrupt(format!("{MANIFEST}: {e}")))?;
    if summary.format != FORMAT {
        return Err(StoreError::Corrupt(format!(
            "the backup's format is {}, and this wafer reads format {FORMAT}",
            summary.format
        )));
    }
    let _lock = crate::lock_data_dir(data_dir)?;
    if data_dir.join("wafer.db").exists() {
        return Err(occupied(format!(
            "{} already holds a wafer database: restore into an empty data directory",
            data_dir.display()
        )));
    }
    // The database goes last: a directory holding one holds the whole restore.
    let written = (|| {
        let modules = blob_dir(from);
        if modules.is_dir() {
            fs::create_dir_all(blob_dir(data_dir))?;
            for entry in fs::read_dir(&modules)? {
                let entry = entry?;
                let digest = entry.file_name().to_string_lossy().into_owned();
                copy_checked(&entry.path(), &blob_dir(data_dir).join(&digest), &digest)?;
            }
        }
        let databases = from.join(FUNCTION_DATABASES);
        if databases.is_dir() {
            fs::create_dir_all(data_dir.join(FUNCTION_DATABASES))?;
            for entry in fs::read_dir(&databases)? {
                let entry = entry?;
                let to = data_dir.join(FUNCTION_DATABASES).join(entry.file_name());
                online_copy(&entry.path(), &to)?;
            }
        }
        for file in [KEY_FILE, NODE_ID_FILE] {
            if from.join(file).is_file() {
                copy_file(&from.join(file), &data_dir.join(file))?;
            }
        }
        online_copy(&from.join("wafer.db"), &data_dir.join("wafer.db"))?;
        sync_dir(data_dir)
    })();
    if written.is_err() {
        // Nothing half restored is left to be taken for data.
        let _ = fs::remove_file(data_dir.join("wafer.db"));
    }
    written.map(|()| summary)
}

/// Takes one snapshot of the database into `staging` and copies the modules it names; `None` when one
/// of them was deleted meanwhile.
fn snapshot(data_dir: &Path, staging: &Path) -> Result<Option<BackupSummary>, StoreError> {
    fs::create_dir_all(staging)?;
    let taken_at = crate::rfc3339(chrono::Utc::now().timestamp_millis());
    let bytes = online_copy(&data_dir.join("wafer.db"), &staging.join("wafer.db"))?;
    let copy =
        Connection::open_with_flags(staging.join("wafer.db"), OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let count = |table: &str| -> Result<u64, StoreError> {
        let n: i64 = copy.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or_default())
    };
    let mut summary = BackupSummary {
        format: FORMAT,
        taken_at,
        schema: copy.pragma_query_value(None, "user_version", |r| r.get(0))?,
        functions: count("functions")?,
        versions: count("versions")?,
        executions: count("executions")?,
        modules: 0,
        function_databases: 0,
        bytes,
        secrets_key: false,
        secrets_key_id: None,
    };
    // A database from before secrets were sealed has no settings.
    let settings: i64 = copy.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'settings'",
        [],
        |r| r.get(0),
    )?;
    if settings > 0 {
        summary.secrets_key_id = super::state::recorded_key(&copy)?;
    }
    let digests: Vec<String> = copy
        .prepare(
            "SELECT digest FROM versions UNION SELECT files FROM versions WHERE files IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    drop(copy);
    fs::create_dir_all(blob_dir(staging))?;
    for digest in digests {
        let from = blob_dir(data_dir).join(&digest);
        match copy_checked(&from, &blob_dir(staging).join(&digest), &digest) {
            Ok(bytes) => summary.bytes += bytes,
            Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        summary.modules += 1;
    }
    Ok(Some(summary))
}

/// Copies the function databases of `data_dir` into `staging`; how many.
fn copy_function_databases(
    data_dir: &Path,
    staging: &Path,
    summary: &mut BackupSummary,
) -> Result<u64, StoreError> {
    let dir = data_dir.join(FUNCTION_DATABASES);
    if !dir.is_dir() {
        return Ok(0);
    }
    fs::create_dir_all(staging.join(FUNCTION_DATABASES))?;
    let mut copied = 0;
    for entry in fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "db") {
            let name = path.file_name().unwrap_or_default();
            summary.bytes += online_copy(&path, &staging.join(FUNCTION_DATABASES).join(name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Copies the SQLite database `from` into a new file `to` by online backup, all pages in one step (one
/// read transaction: a consistent snapshot), and checks the copy; its size.
fn online_copy(from: &Path, to: &Path) -> Result<u64, StoreError> {
    // Opened writable (without creating) so it can read a WAL database whose shared-memory file
    // is missing; nothing is written through it.
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    let mut copy = Connection::open(to)?;
    loop {
        match Backup::new(&source, &mut copy)?.step(-1)? {
            StepResult::Done => break,
            // The source was locked for the instant of the step: take it again.
            StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            StepResult::More => {}
            _ => {}
        }
    }
    let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!("{}: {check}", from.display())));
    }
    // The copy is a database of its own, in rollback-journal mode, and complete once closed.
    copy.close().map_err(|(_, e)| StoreError::from(e))?;
    fs::File::open(to)?.sync_all()?;
    Ok(fs::metadata(to)?.len())
}

/// Copies the module file `from` to `to`, checking that its bytes hash to `digest`; their size.
fn copy_checked(from: &Path, to: &Path, digest: &str) -> Result<u64, StoreError> {
    let mut source = fs::File::open(from)?;
    let mut target = fs::File::create(to)?;
    let (mut hasher, mut buffer, mut total) = (Sha256::new(), vec![0u8; 1 << 16], 0u64);
    loop {
        let n = source.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        target.write_all(&buffer[..n])?;
        total += n as u64;
    }
    let found: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if found != digest {
        return Err(StoreError::Corrupt(format!(
            "{} does not hash to its name (its bytes hash to {found})",
            from.display()
        )));
    }
    target.sync_all()?;
    Ok(total)
}

/// Copies a small file durably; its size.
fn copy_file(from: &Path, to: &Path) -> Result<u64, StoreError> {
    let bytes = fs::copy(from, to)?;
    fs::File::open(to)?.sync_all()?;
    Ok(bytes)
}

fn write_manifest(dir: &Path, summary: &BackupSummary) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(summary)
        .map_err(|e| StoreError::Corrupt(format!("the manifest does not serialise: {e}")))?;
    let mut file = fs::File::create(dir.join(MANIFEST))?;
    file.write_all(&text)?;
    file.sync_all()?;
    sync_dir(dir)
}

/// The error of a destination that holds something already.
fn occupied(message: String) -> StoreError {
    std::io::Error::new(std::io::ErrorKind::AlreadyExists, message).into()
}

/// Refuses `dir` unless it is missing or an empty directory.
fn refuse_unless_empty(dir: &Path, doing: &str) -> Result<(), StoreError> {
    match fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(occupied(format!(
            "cannot {doing} {}: it is not empty",
            dir.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A fresh directory beside `target` to build it in, so `target` appears whole or not at all.
fn staging_beside(target: &Path) -> Result<PathBuf, StoreError> {
    let parent = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    clear(&staging)?;
    Ok(staging)
}

/// Removes `dir` and everything in it, if it exists.
fn clear(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests;
