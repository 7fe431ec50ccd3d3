//! Agent mode's second source of a function: the wasm layer of the container's image, for a container
//! made from a wasm OCI artifact, whose root filesystem holds no wasm file (containerd 1.7 and later
//! run such images with an empty one).
//!
//! The shim asks containerd which image the container was made from, finds its wasm layer
//! (`wafer_container::artifact`) and copies the blob into an anonymous memory file, which goes to the
//! agent like an opened file. The function's config is the manifest's wafer annotation, which
//! `wafer package` writes; an artifact made by another tool has none and runs with the defaults.

use std::fs::File;
use std::io::{Seek as _, SeekFrom};
use std::os::fd::FromRawFd as _;
use std::path::Path;
use wafer_api::oci::{CONFIG_ANNOTATION, WASM_LAYERS};
use wafer_api::FunctionConfig;
use wafer_container::containerd::Containerd;

/// The wasm layer of container `id`'s image, as a file to read, with the function's config when the
/// image carries one; `None` when the image has no wasm layer.
pub async fn read(
    containerd: &Path,
    namespace: &str,
    id: &str,
    max: u64,
) -> Result<Option<(File, Option<FunctionConfig>)>, String> {
    let client = Containerd::connect_in(containerd, namespace)
        .await
        .map_err(|e| e.to_string())?;
    let Some(layer) = client
        .wasm_layer(id, WASM_LAYERS)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    if layer.size > max {
        return Err(format!(
            "its wasm layer is {} bytes, over the {max}-byte limit",
            layer.size
        ));
    }
    let config = match layer.annotations.get(CONFIG_ANNOTATION) {
        Some(json) => Some(
            wafer_node::function::parse_config(json.as_bytes())
                .map_err(|e| format!("the image's {CONFIG_ANNOTATION}: {e}"))?,
        ),
        None => None,
    };
    let mut wasm = memory_file().map_err(|e| format!("cannot make a memory file: {e}"))?;
    client
        .copy_blob(&layer.digest, layer.size, &mut wasm)
        .await
        .map_err(|e| format!("cannot read its wasm layer {}: {e}", layer.digest))?;
    wasm.seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot rewind the memory file: {e}"))?;
    Ok(Some((wasm, config)))
}

/// An anonymous file in memory, gone when its last descriptor closes.
fn memory_file() -> std::io::Result<File> {
    // SAFETY: a NUL-terminated name and valid flags; the result is checked before it is owned.
    let fd = unsafe { libc::memfd_create(c"wafer-wasm".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn a_memory_file_reads_back_what_was_written() {
        let mut file = memory_file().unwrap();
        file.write_all(b"\0asm").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"\0asm");
    }
}
