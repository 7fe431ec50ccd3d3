//! Compiled functions kept on a node's disk, so a container start or an agent restart loads machine
//! code instead of compiling.
//!
//! Artifacts are named by the module's SHA-256 and the engine's fingerprint
//! (`<digest>.<fingerprint>.cwasm`), so a module compiled once on a node starts from its artifact ever
//! after, and an engine upgrade never loads an incompatible one. The cache works through an open
//! directory descriptor (`openat` relative to it): a function running in its container's own process
//! has its root switched before it runs, where no host path is visible, so the shim opens the
//! directory before the container starts and the container reaches it through that inherited
//! descriptor. The descriptor is close-on-exec: a Linux container the shim hands to runc's executor
//! never sees it, and a wasm guest cannot reach descriptors at all. Artifacts are written to a
//! temporary name and renamed, so a reader never sees half of one; one that fails to load (from
//! another build, or damaged) is compiled again and replaced. A cache that cannot be opened or written
//! only costs the compile it would have saved.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use wafer_api::Kind;
use wafer_engine::{CompileError, Engine, Function};

/// A directory of compiled artifacts, held open.
pub struct ArtifactCache {
    dir: OwnedFd,
}

/// How a function came to be: compiled now, or loaded from its artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and its artifact cached when the cache could be written).
    Compiled,
    /// Loaded from the artifact an earlier compile left.
    Loaded,
}

impl ArtifactCache {
    /// Opens `dir`, creating it (mode 0700) when missing.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // std opens with O_CLOEXEC.
        Ok(Self {
            dir: OwnedFd::from(File::open(dir)?),
        })
    }

    /// The function of `wasm` (whose SHA-256 is `digest`) as `kind`: loaded from its cached artifact for this engine when there is
    /// a usable one, otherwise compiled (and its artifact cached for the next time). What went wrong
    /// with the cache on the way goes to `warn`.
    ///
    /// This is CPU-heavy: call it off the async executor.
    pub fn load_or_compile(
        cache: Option<&Self>,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
        kind: Option<Kind>,
        warn: &dyn Fn(String),
    ) -> Result<(Function, Origin), CompileError> {
        let name = format!("{digest}.{}.cwasm", engine.fingerprint());
        if let Some(artifact) = cache.and_then(|cache| read(&cache.dir, &name)) {
            match engine.load_bytes(&artifact, kind) {
                Ok(function) => return Ok((function, Origin::Loaded)),
                Err(CompileError::Unsupported(reason)) => {
                    return Err(CompileError::Unsupported(reason))
                }
                Err(e) => warn(format!("cached artifact {name} unusable, compiling: {e}")),
            }
        }
        let compiled = engine.compile(wasm, kind)?;
        if let Some(cache) = cache {
            if let Err(e) = write(&cache.dir, &name, &compiled.artifact) {
                warn(format!("cannot cache the compiled function: {e}"));
            }
        }
        Ok((compiled.function, Origin::Compiled))
    }
}

/// The file `name` in `dir`, when it can be read.
fn read(dir: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let mut file = open_at(dir, name, libc::O_RDONLY, 0).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Writes `bytes` as `name` in `dir` through a fsynced temporary file and a rename.
fn write(dir: &OwnedFd, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = format!(".tmp-{}-{name}", std::process::id());
    let mut file = open_at(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o600,
    )?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    let renamed = written.and_then(|()| {
        let (from, to) = (c_name(&tmp)?, c_name(name)?);
        // SAFETY: both names are NUL-terminated strings that live across the call, and `dir` is an
        // open directory descriptor.
        let done =
            unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
        if done == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    if renamed.is_err() {
        if let Ok(tmp) = c_name(&tmp) {
            // SAFETY: as above; a failure to remove the temporary file is of no consequence.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        }
    }
    renamed
}

/// Opens `name` relative to `dir`, close-on-exec, never following a symbolic link.
fn open_at(dir: &OwnedFd, name: &str, flags: i32, mode: libc::mode_t) -> std::io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is an open directory descriptor.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn c_name(name: &str) -> std::io::Result<CString> {
    CString::new(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_relative_to_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fd = OwnedFd::from(File::open(dir.path()).unwrap());
        assert_eq!(read(&fd, "a.cwasm"), None);
        write(&fd, "a.cwasm", b"artifact").unwrap();
        assert_eq!(read(&fd, "a.cwasm").as_deref(), Some(&b"artifact"[..]));
        write(&fd, "a.cwasm", b"replaced").unwrap();
        assert_eq!(read(&fd, "a.cwasm").as_deref(), Some(&b"replaced"[..]));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.cwasm"], "no temporary file is left");
    }
}
