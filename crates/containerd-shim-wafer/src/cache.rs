//! The shim's cache of compiled functions, so a container start loads machine code instead of compiling.
//!
//! Artifacts are kept on the host, in `WAFER_SHIM_CACHE` (from containerd's environment, which its shims
//! inherit; default [`DEFAULT_DIR`]), named by the module's SHA-256 and the engine's fingerprint
//! (`<digest>.<fingerprint>.cwasm`), so a module compiled once on a node starts from its artifact in
//! every later container, and an engine upgrade never loads an incompatible one.
//!
//! The function runs inside its container, after the root filesystem has been switched, where no host
//! path is visible. So the shim opens the cache directory in `main`, before runwasi forks the process
//! that becomes each container's, and the container reaches it through that inherited descriptor
//! (`openat` relative to it). The descriptor is close-on-exec: a Linux container the shim hands to runc's
//! executor never sees it, and a wasm guest cannot reach descriptors at all. Artifacts are written to a
//! temporary name and renamed, so a reader never sees half of one; one that fails to load (from another
//! build, or damaged) is compiled again and replaced. A cache that cannot be opened or written only
//! costs the compile it would have saved.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::sync::OnceLock;
use wafer_api::oci::sha256_hex;
use wafer_api::Kind;
use wafer_engine::{CompileError, Engine, Function};

/// Where the cache lives unless `WAFER_SHIM_CACHE` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/wafer/shim-cache";

/// The cache directory, opened once in `main` for every container the process starts.
static CACHE: OnceLock<Option<OwnedFd>> = OnceLock::new();

/// Opens (creating, mode 0700) the cache directory named by `WAFER_SHIM_CACHE`. Call it from `main`,
/// before the shim starts; without a cache the shim compiles every time.
pub fn open() {
    CACHE.get_or_init(|| {
        let dir = std::env::var_os("WAFER_SHIM_CACHE").unwrap_or_else(|| DEFAULT_DIR.into());
        let opened = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .and_then(|()| File::open(&dir));
        match opened {
            // std opens with O_CLOEXEC.
            Ok(dir) => Some(OwnedFd::from(dir)),
            Err(e) => {
                eprintln!(
                    "[wafer] no compile cache at {}: {e}",
                    std::path::Path::new(&dir).display()
                );
                None
            }
        }
    });
}

/// The function of `wasm` as `kind`: loaded from its cached artifact for this engine when there is a
/// usable one, otherwise compiled (and its artifact cached for the next container).
pub fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    kind: Option<Kind>,
) -> Result<Function, CompileError> {
    let dir = CACHE.get().and_then(Option::as_ref);
    let name = format!("{}.{}.cwasm", sha256_hex(wasm), engine.fingerprint());
    if let Some(artifact) = dir.and_then(|dir| read(dir, &name)) {
        match engine.load_bytes(&artifact, kind) {
            Ok(function) => return Ok(function),
            Err(CompileError::Unsupported(reason)) => {
                return Err(CompileError::Unsupported(reason))
            }
            Err(e) => eprintln!("[wafer] cached artifact {name} unusable, compiling: {e}"),
        }
    }
    let compiled = engine.compile(wasm, kind)?;
    if let Some(dir) = dir {
        if let Err(e) = write(dir, &name, &compiled.artifact) {
            eprintln!("[wafer] cannot cache the compiled function: {e}");
        }
    }
    Ok(compiled.function)
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
