//! The wasm layer of the image a container was made from, read from containerd's content store.
//!
//! A wasm OCI artifact is an image whose layer *is* the wasm binary (media types such as
//! `application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`), with platform `wasm`. containerd
//! 1.7 and later run such images with an empty root filesystem, so a shim finds the binary through the
//! container's image: the container record names it, the image's target is the artifact's manifest
//! (or an index holding one for architecture `wasm`), and the layer is a blob in the content store.

use crate::containerd::Containerd;
use crate::error::ContainerError;
use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient,
    images_client::ImagesClient, GetContainerRequest, GetImageRequest, InfoRequest,
    ReadContentRequest,
};
use containerd_client::tonic::Code;
use oci_spec::image::{ImageIndex, ImageManifest};
use std::collections::HashMap;
use std::io::Write;

/// The most bytes an index or a manifest may take.
const MAX_MANIFEST: u64 = 4 << 20;

/// An index.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's name for an index.
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A container image's wasm layer.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmLayer {
    /// The layer blob's digest (`sha256:…`).
    pub digest: String,
    /// Its size in bytes, as the manifest gives it.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// The annotations of the manifest that holds it.
    pub annotations: HashMap<String, String>,
}

impl Containerd {
    /// The wasm layer of the image container `id` was made from: the first layer of one of
    /// `layer_types` in the image's manifest, or in its index's manifest for architecture `wasm`.
    /// `None` when the container names no image, the image is gone, or it has no such layer.
    pub async fn wasm_layer(
        &self,
        id: &str,
        layer_types: &[&str],
    ) -> Result<Option<WasmLayer>, ContainerError> {
        let container = ContainersClient::new(self.channel())
            .get(self.request(GetContainerRequest { id: id.into() }))
            .await?
            .into_inner()
            .container;
        let Some(name) = container.map(|c| c.image).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let image = match ImagesClient::new(self.channel())
            .get(self.request(GetImageRequest { name }))
            .await
        {
            Ok(image) => image.into_inner().image,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(status.into()),
        };
        let Some(target) = image.and_then(|i| i.target) else {
            return Ok(None);
        };
        let mut manifest_digest = target.digest;
        if target.media_type == OCI_INDEX || target.media_type == DOCKER_LIST {
            let index = self.read_blob(&manifest_digest, MAX_MANIFEST).await?;
            let index = ImageIndex::from_reader(&index[..])
                .map_err(|e| ContainerError::InvalidImage(format!("the image's index: {e}")))?;
            let wasm = index.manifests().iter().find(|m| {
                m.platform()
                    .as_ref()
                    .is_some_and(|p| p.architecture().to_string() == "wasm")
            });
            match wasm {
                Some(manifest) => manifest_digest = manifest.digest().to_string(),
                None => return Ok(None),
            }
            // An index's wasm manifest is stored only when it was pulled for that platform too.
            let stored = ContentClient::new(self.channel())
                .info(self.request(InfoRequest {
                    digest: manifest_digest.clone(),
                }))
                .await;
            match stored {
                Err(status) if status.code() == Code::NotFound => return Ok(None),
                Err(status) => return Err(status.into()),
                Ok(_) => {}
            }
        }
        let manifest = self.read_blob(&manifest_digest, MAX_MANIFEST).await?;
        let manifest = ImageManifest::from_reader(&manifest[..])
            .map_err(|e| ContainerError::InvalidImage(format!("the image's manifest: {e}")))?;
        let layer = manifest
            .layers()
            .iter()
            .find(|l| layer_types.contains(&l.media_type().to_string().as_str()));
        Ok(layer.map(|layer| WasmLayer {
            digest: layer.digest().to_string(),
            size: layer.size(),
            media_type: layer.media_type().to_string(),
            annotations: manifest.annotations().clone().unwrap_or_default(),
        }))
    }

    /// Copies the blob `digest` into `out`, refusing one over `max` bytes.
    pub async fn copy_blob(
        &self,
        digest: &str,
        max: u64,
        out: &mut impl Write,
    ) -> Result<u64, ContainerError> {
        let mut stream = ContentClient::new(self.channel())
            .read(self.request(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await?
            .into_inner();
        let mut copied = 0u64;
        while let Some(piece) = stream.message().await? {
            copied += piece.data.len() as u64;
            if copied > max {
                return Err(ContainerError::InvalidImage(format!(
                    "the blob {digest} is over {max} bytes"
                )));
            }
            out.write_all(&piece.data)?;
        }
        Ok(copied)
    }

    /// The blob `digest`, refusing one over `max` bytes.
    async fn read_blob(&self, digest: &str, max: u64) -> Result<Vec<u8>, ContainerError> {
        let mut bytes = Vec::new();
        self.copy_blob(digest, max, &mut bytes).await?;
        Ok(bytes)
    }
}
