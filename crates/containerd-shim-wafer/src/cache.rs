//! The compile cache of per-process mode: the node's [`ArtifactCache`], opened once in `main` before
//! runwasi forks the process that becomes each container's, so the container reaches it through the
//! inherited descriptor after its root has been switched.
//!
//! It lives in `WAFER_SHIM_CACHE` (from containerd's environment, which its shims inherit; default
//! [`DEFAULT_DIR`]).

use std::sync::OnceLock;
use wafer_api::oci::sha256_hex;
use wafer_api::Kind;
use wafer_engine::{CompileError, Engine, Function};
use wafer_node::artifacts::ArtifactCache;

/// Where the cache lives unless `WAFER_SHIM_CACHE` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/wafer/shim-cache";

/// The cache directory, opened once in `main` for every container the process starts.
static CACHE: OnceLock<Option<ArtifactCache>> = OnceLock::new();

/// Opens (creating, mode 0700) the cache directory named by `WAFER_SHIM_CACHE`. Call it from `main`,
/// before the shim starts; without a cache the shim compiles every time.
pub fn open() {
    CACHE.get_or_init(|| {
        let dir = std::env::var_os("WAFER_SHIM_CACHE").unwrap_or_else(|| DEFAULT_DIR.into());
        let dir = std::path::Path::new(&dir);
        ArtifactCache::open(dir)
            .inspect_err(|e| eprintln!("[wafer] no compile cache at {}: {e}", dir.display()))
            .ok()
    });
}

/// The function of `wasm` as `kind`, from its cached artifact when there is a usable one; what went
/// wrong with the cache goes to the container's stderr.
pub fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    kind: Option<Kind>,
) -> Result<Function, CompileError> {
    let cache = CACHE.get().and_then(Option::as_ref);
    let warn = |text: String| eprintln!("[wafer] {text}");
    ArtifactCache::load_or_compile(cache, engine, wasm, &sha256_hex(wasm), kind, &warn)
        .map(|(function, _)| function)
}
