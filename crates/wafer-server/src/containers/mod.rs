//! Container functions in the server (kind `container`): the containerd connection, images in at
//! deploy, and each version's runnable form ([`ContainerFunction`]): jobs (`function.rs`), servers
//! on a port (`http.rs`), and the proxy that is a container's only way out (`outbound.rs`).
//!
//! The daemon is optional. wafer connects when a container function first needs it (at deploy, or
//! when a stored container version is loaded) and again after a failure, so a containerd started
//! after wafer is found; without one, container deploys and calls answer 503 and the wasm kinds do not
//! notice. At start-up, what a crashed wafer on this node left in containerd is removed.
//!
//! A version's module is its image as an OCI-layout or docker-archive tarball, stored like a wasm
//! module: the version is self-contained, so rollback returns to exactly that image on any node, and
//! loading a version imports the tarball again (a no-op for blobs and layers containerd has). The
//! image's manifest digest is recorded in the version's config (`image`), and containerd keeps the
//! image under a lease named for it until the last version using it is deleted.

mod config;
mod function;
mod http;
mod outbound;

pub use config::{check, only_fields};
pub use function::{ContainerFunction, Reply};
pub use http::slots;

use crate::error::Error;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wafer_container::cgroup::Cgroups;
use wafer_container::containerd::{Containerd, Image};
use wafer_container::pull::{self, Registries};
use wafer_container::{job, tarball, ContainerError};
use wafer_store::StoredVersion;

/// The default containerd socket.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// How long connecting to containerd may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How container functions reach containerd and what they may upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// containerd's socket (`--containerd-socket`, `WAFER_CONTAINERD`).
    pub socket: PathBuf,
    /// The largest image a deploy may upload or pull (`--max-image`).
    pub max_image_bytes: usize,
    /// How registries are reached for `oci://` images.
    pub registries: Registries,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            max_image_bytes: 1 << 30,
            registries: Registries::default(),
        }
    }
}

/// What running containers needs: the daemon, the cgroups their usage is read from, the entry
/// program, and the directory their FIFOs live in.
#[derive(Clone)]
pub struct Daemon {
    pub containerd: Containerd,
    pub cgroups: Cgroups,
    pub entry: PathBuf,
    pub work: PathBuf,
}

/// The server's side of container functions.
pub struct Containers {
    settings: ContainerSettings,
    work: PathBuf,
    node: String,
    daemon: tokio::sync::Mutex<Option<Daemon>>,
}

impl Containers {
    /// Container functions for node `node`, keeping their files under `data_dir/containers`.
    pub fn new(settings: ContainerSettings, data_dir: &Path, node: &str) -> Self {
        // Absolute: containerd and runc resolve the FIFOs and the entry program from elsewhere.
        let work = data_dir.join("containers");
        Self {
            settings,
            work: std::path::absolute(&work).unwrap_or(work),
            node: node.to_string(),
            daemon: tokio::sync::Mutex::new(None),
        }
    }

    /// This node's id, which its containers carry.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The daemon, connecting first if need be.
    pub async fn daemon(&self) -> Result<Daemon, Error> {
        let mut slot = self.daemon.lock().await;
        if let Some(daemon) = slot.as_ref() {
            return Ok(daemon.clone());
        }
        let daemon = self.connect().await.map_err(|e| {
            Error::Container(ContainerError::Daemon(format!(
                "container functions need containerd, and it cannot be reached at {} \
                 (--containerd-socket, WAFER_CONTAINERD): {e}",
                self.settings.socket.display()
            )))
        })?;
        *slot = Some(daemon.clone());
        Ok(daemon)
    }

    async fn connect(&self) -> Result<Daemon, String> {
        let containerd =
            tokio::time::timeout(CONNECT_TIMEOUT, Containerd::connect(&self.settings.socket))
                .await
                .map_err(|_| "it did not answer in time".to_string())?
                .map_err(|e| e.to_string())?;
        let cgroups = Cgroups::detect().map_err(|e| format!("cannot read /sys/fs/cgroup: {e}"))?;
        let work = self.work.clone();
        let entry =
            tokio::task::spawn_blocking(move || wafer_container::entry::install(&work.join("bin")))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot write the entry program: {e}"))?;
        Ok(Daemon {
            containerd,
            cgroups,
            entry,
            work: self.work.join("run"),
        })
    }

    /// Forgets the connection after the daemon failed, so the next use connects again.
    pub async fn reset(&self) {
        *self.daemon.lock().await = None;
    }

    /// At start-up: removes what this node left in containerd when it last stopped (or crashed),
    /// if containerd is there.
    pub async fn clean_up(&self) {
        if !self.settings.socket.exists() {
            tracing::debug!(socket = %self.settings.socket.display(), "no containerd: container functions are unavailable until it is there");
            return;
        }
        let daemon = match self.daemon().await {
            Ok(daemon) => daemon,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        let _ = tokio::fs::remove_dir_all(&daemon.work).await;
        match job::remove_leftovers(&daemon.containerd, &self.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(containers = n, "removed the containers a previous run left"),
            Err(e) => tracing::warn!("cannot remove leftover containers: {e}"),
        }
    }

    /// At a graceful stop: removes this node's containers (warm pools, running servers) while the
    /// process can still wait for it, if containerd was ever used.
    pub async fn stop(&self) {
        let Some(daemon) = self.daemon.lock().await.clone() else {
            return;
        };
        match job::remove_leftovers(&daemon.containerd, &self.node).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(containers = n, "removed this node's containers"),
            Err(e) => tracing::warn!("cannot remove this node's containers: {e}"),
        }
    }

    /// Reads an image tarball and stores it in containerd under its lease.
    pub async fn import(&self, tarball: bytes::Bytes) -> Result<(Daemon, Image), Error> {
        // Every blob's digest is checked: CPU work, off the async threads.
        let unpacked = tokio::task::spawn_blocking(move || tarball::read(&tarball))
            .await
            .map_err(|e| Error::Internal(format!("reading the image failed: {e}")))??;
        let daemon = self.daemon().await?;
        match daemon.containerd.import(&unpacked).await {
            Ok(image) => Ok((daemon, image)),
            Err(e) => {
                if matches!(e, ContainerError::Daemon(_)) {
                    self.reset().await;
                }
                Err(e.into())
            }
        }
    }

    /// Pulls the image of `reference` (`oci://…`) as a tarball, pinned to its digest: the reference
    /// the version records then comes from [`resolved`], which keeps the pin.
    pub async fn pull(&self, reference: &str) -> Result<bytes::Bytes, Error> {
        let bare = reference.strip_prefix("oci://").ok_or_else(|| {
            Error::InvalidConfig(format!(
                "image {reference:?} must be an oci:// reference (oci://REGISTRY/REPOSITORY[:TAG])"
            ))
        })?;
        let pulled = pull::pull(
            bare,
            &self.settings.registries,
            self.settings.max_image_bytes,
        )
        .await?;
        tracing::info!(image = %pulled.pinned, "image pulled");
        Ok(pulled.tarball.into())
    }

    /// Lets containerd collect the image whose manifest is `digest`.
    pub async fn release(&self, digest: &str) {
        match self.daemon().await {
            Ok(daemon) => {
                if let Err(e) = daemon.containerd.release(digest).await {
                    tracing::warn!(%digest, "cannot release the image: {e}");
                }
            }
            Err(e) => tracing::warn!(%digest, "the image's lease stays: {e}"),
        }
    }
}

/// Whether `module` is a tar archive (an image tarball), by the `ustar` magic of its first header.
pub fn is_tarball(module: &[u8]) -> bool {
    module.get(257..262) == Some(b"ustar")
}

/// What a container version records as its image: the reference it was pulled from, pinned to the
/// manifest digest (`oci://…@sha256:…`), or `sha256:…` for an uploaded tarball. A reference already
/// pinned, or a digest given with a tarball, must be the image's.
pub fn resolved(given: Option<&str>, digest: &str) -> Result<String, Error> {
    let Some(given) = given else {
        return Ok(digest.to_string());
    };
    let (name, pinned) = match given.rsplit_once('@') {
        Some((name, pinned)) => (Some(name), pinned),
        None if given.starts_with("sha256:") => (None, given),
        None => return Ok(format!("{given}@{digest}")),
    };
    if pinned != digest {
        return Err(Error::Container(ContainerError::InvalidImage(format!(
            "the image is {digest}, not the {pinned} the config names"
        ))));
    }
    Ok(match name {
        Some(name) => format!("{name}@{digest}"),
        None => digest.to_string(),
    })
}

/// The image digests container versions among `versions` record.
pub fn images(versions: &[StoredVersion]) -> Vec<String> {
    versions
        .iter()
        .filter(|v| v.kind == wafer_api::Kind::Container)
        .filter_map(|v| v.config.image.as_deref())
        .map(|image| image.rsplit('@').next().unwrap_or(image).to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123";

    #[test]
    fn a_version_records_its_image_pinned_to_the_digest() {
        assert_eq!(resolved(None, DIGEST).unwrap(), DIGEST);
        assert_eq!(
            resolved(Some("oci://r.example/app:1"), DIGEST).unwrap(),
            "oci://r.example/app:1@sha256:0123"
        );
        assert_eq!(
            resolved(Some("oci://r.example/app:1@sha256:0123"), DIGEST).unwrap(),
            "oci://r.example/app:1@sha256:0123"
        );
        assert_eq!(resolved(Some(DIGEST), DIGEST).unwrap(), DIGEST);
        assert!(resolved(Some("sha256:other"), DIGEST).is_err());
        assert!(resolved(Some("oci://r.example/app@sha256:other"), DIGEST).is_err());
    }

    #[test]
    fn a_relative_data_directory_still_gives_containerd_absolute_paths() {
        let containers = Containers::new(ContainerSettings::default(), Path::new("data"), "n");
        assert!(
            containers.work.is_absolute(),
            "{}",
            containers.work.display()
        );
    }

    #[test]
    fn tarballs_are_told_by_their_magic() {
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(is_tarball(&tar));
        assert!(!is_tarball(b"\0asm\x01\0\0\0"));
    }
}
