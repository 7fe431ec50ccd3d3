//! The OCI contract of a packaged function, written by `wafer package`, read by `wafer pull`/`deploy
//! oci://` and by the containerd shim: media types, the config annotation, and where the plain image's
//! root filesystem keeps the binary and its config.
//!
//! One image name points to an image index of two manifests: a wasm OCI artifact (the binary as its one
//! layer, [`COMPONENT_LAYER`] or [`MODULE_LAYER`], with a [`WASM_CONFIG`] config) and a plain linux image
//! whose root filesystem holds [`WASM_PATH`] (its entrypoint) and [`CONFIG_PATH`]. Both manifests carry
//! the function's [`crate::FunctionConfig`] as JSON in the annotation [`CONFIG_ANNOTATION`], and so does
//! the artifact's layer, for a shim that sees only the layer's descriptor.

/// The manifest annotation holding the function's wafer config as JSON.
pub const CONFIG_ANNOTATION: &str = "dev.wafer.function.config";
/// Where the plain image's root filesystem keeps the wasm binary (its entrypoint), from `/`.
pub const WASM_PATH: &str = "app.wasm";
/// Where the plain image's root filesystem keeps the function's wafer config, from `/`.
pub const CONFIG_PATH: &str = "wafer.json";

/// An image index.
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An image manifest.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A plain image's config.
pub const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// An uncompressed root filesystem layer.
pub const TAR_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// A wasm artifact's config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// A wasm artifact's layer holding a component.
pub const COMPONENT_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// A wasm artifact's layer holding a core module.
pub const MODULE_LAYER: &str = "application/wasm";
/// The wasm layer type of the CNCF wasm artifact draft, which other tools write.
pub const CONTENT_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// Every layer media type that is the wasm binary itself.
pub const WASM_LAYERS: &[&str] = &[COMPONENT_LAYER, CONTENT_LAYER, MODULE_LAYER];

/// The SHA-256 of `bytes` as lowercase hex: a module's digest as [`crate::FunctionInfo::digest`] shows it
/// (and as wafer stores it), and an OCI blob's digest after `sha256:`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lowercase_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
