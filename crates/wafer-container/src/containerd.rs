//! The containerd daemon, through its gRPC API, in a namespace of wafer's own.
//!
//! Images go in through the content store (containerd 1.6 has no transfer service): every blob is
//! written under a **lease** named for the image's manifest digest, and its layers are applied by the
//! diff service onto committed snapshots named by their chain ids. The lease is what keeps the image's
//! blobs and snapshots from containerd's garbage collector, for as long as a function version uses it;
//! [`Containerd::release`] lets them go.

use crate::error::ContainerError;
use crate::tarball::{digest_of, Unpacked};
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    content_client::ContentClient, diff_client::DiffClient, leases_client::LeasesClient,
    version_client::VersionClient, ApplyRequest, CreateRequest, DeleteRequest, InfoRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::tonic::{transport::Channel, Code, Request};
use containerd_client::types::{Descriptor, Mount};
use oci_spec::image::ImageConfiguration;
use std::collections::HashMap;
use std::path::Path;

/// The containerd namespace wafer keeps its images and containers in.
pub const NAMESPACE: &str = "wafer";

/// The snapshotter images are unpacked with.
pub const SNAPSHOTTER: &str = "overlayfs";

/// Blobs are written in pieces of this size.
const CHUNK: usize = 1 << 20;

/// A connection to containerd.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

/// An image unpacked and ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The manifest's digest: what a function version records.
    pub digest: String,
    /// The chain id of its top layer: the parent of every container's root file system.
    pub chain_id: String,
    /// What the image says to run, and how.
    pub config: RunConfig,
}

/// The part of an image's configuration that decides how its process starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`: the arguments after the entrypoint, unless a function gives its own.
    pub cmd: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// `WorkingDir`, or `/`.
    pub cwd: String,
    /// `User`, as the image wrote it (`uid`, `uid:gid`), if any.
    pub user: Option<String>,
}

impl Containerd {
    /// Connects to the daemon at `socket` and checks that it answers.
    pub async fn connect(socket: &Path) -> Result<Self, ContainerError> {
        Self::connect_in(socket, NAMESPACE).await
    }

    /// Connects to the daemon at `socket`, working in `namespace` (a shim's containers are in the
    /// namespace their client chose), and checks that it answers.
    pub async fn connect_in(socket: &Path, namespace: &str) -> Result<Self, ContainerError> {
        let channel = containerd_client::connect(socket).await.map_err(|e| {
            ContainerError::Daemon(format!("cannot connect to {}: {e}", socket.display()))
        })?;
        let containerd = Self {
            channel,
            namespace: namespace.to_string(),
        };
        VersionClient::new(containerd.channel.clone())
            .version(containerd.request(()))
            .await?;
        Ok(containerd)
    }

    /// The gRPC channel, for the services [`crate::job`] drives.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `message` as a request in wafer's namespace.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        self.with(message, None)
    }

    /// `message` as a request in wafer's namespace, under `lease` when one is given.
    fn with<T>(&self, message: T, lease: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(namespace) = self.namespace.parse() {
            metadata.insert("containerd-namespace", namespace);
        }
        if let Some(Ok(lease)) = lease.map(str::parse) {
            metadata.insert("containerd-lease", lease);
        }
        request
    }

    /// Stores `image` in containerd, unpacked, under its lease; importing one already there only
    /// checks its snapshots.
    pub async fn import(&self, image: &Unpacked) -> Result<Image, ContainerError> {
        let digest = image.digest();
        let lease = lease_id(&digest);
        let created = LeasesClient::new(self.channel())
            .create(self.request(CreateRequest {
                id: lease.clone(),
                labels: HashMap::from([("io.wafer.image".to_string(), digest.clone())]),
            }))
            .await;
        match created {
            Err(status) if status.code() != Code::AlreadyExists => return Err(status.into()),
            _ => {}
        }
        for (blob_digest, bytes) in &image.blobs {
            self.write_blob(&lease, blob_digest, bytes).await?;
        }
        self.write_blob(&lease, &digest, &image.manifest).await?;
        let config_digest = image.parsed.config().digest().to_string();
        let config = image.blobs.get(&config_digest).ok_or_else(|| {
            ContainerError::InvalidImage(format!("the image has no configuration {config_digest}"))
        })?;
        let config = ImageConfiguration::from_reader(&config[..])
            .map_err(|e| ContainerError::InvalidImage(format!("the image configuration: {e}")))?;
        let diff_ids = config.rootfs().diff_ids();
        let layers = image.parsed.layers();
        if diff_ids.len() != layers.len() {
            return Err(ContainerError::InvalidImage(format!(
                "the configuration names {} layers and the manifest {}",
                diff_ids.len(),
                layers.len()
            )));
        }
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain_id = if parent.is_empty() {
                diff_id.clone()
            } else {
                digest_of(format!("{parent} {diff_id}").as_bytes())
            };
            let descriptor = Descriptor {
                media_type: layer.media_type().to_string(),
                digest: layer.digest().to_string(),
                size: layer.size() as i64,
                annotations: HashMap::new(),
            };
            self.unpack_layer(&lease, descriptor, diff_id, &parent, &chain_id)
                .await?;
            parent = chain_id;
        }
        if parent.is_empty() {
            return Err(ContainerError::InvalidImage(
                "the image has no layers".into(),
            ));
        }
        Ok(Image {
            digest,
            chain_id: parent,
            config: run_config(&config),
        })
    }

    /// Lets containerd collect the image whose manifest is `digest` once no container uses it.
    pub async fn release(&self, digest: &str) -> Result<(), ContainerError> {
        let deleted = LeasesClient::new(self.channel())
            .delete(self.request(DeleteRequest {
                id: lease_id(digest),
                sync: false,
            }))
            .await;
        match deleted {
            Err(status) if status.code() != Code::NotFound => Err(status.into()),
            _ => Ok(()),
        }
    }

    /// Writes one blob to the content store, unless it is there already.
    async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(), ContainerError> {
        let mut content = ContentClient::new(self.channel());
        let info = content
            .info(self.with(
                InfoRequest {
                    digest: digest.to_string(),
                },
                Some(lease),
            ))
            .await;
        if info.is_ok() {
            return Ok(());
        }
        let reference = format!("wafer-{digest}");
        let total = bytes.len() as i64;
        let mut messages: Vec<WriteContentRequest> = bytes
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                ..Default::default()
            })
            .collect();
        messages.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: digest.to_string(),
            offset: total,
            ..Default::default()
        });
        let mut responses = content
            .write(self.with(futures_util::stream::iter(messages), Some(lease)))
            .await?
            .into_inner();
        loop {
            match responses.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                // Another import of the same blob committed it first.
                Err(status) if status.code() == Code::AlreadyExists => return Ok(()),
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Applies one layer onto `parent`, committing the result as `chain_id`, unless it is there.
    async fn unpack_layer(
        &self,
        lease: &str,
        layer: Descriptor,
        diff_id: &str,
        parent: &str,
        chain_id: &str,
    ) -> Result<(), ContainerError> {
        let mut snapshots = SnapshotsClient::new(self.channel());
        let stat = snapshots
            .stat(self.with(
                StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: chain_id.into(),
                },
                Some(lease),
            ))
            .await;
        if stat.is_ok() {
            return Ok(());
        }
        let key = format!("wafer-unpack-{chain_id}-{}", std::process::id());
        let mounts: Vec<Mount> = snapshots
            .prepare(self.with(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.clone(),
                    parent: parent.into(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await?
            .into_inner()
            .mounts;
        let applied = DiffClient::new(self.channel())
            .apply(self.with(
                ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    ..Default::default()
                },
                Some(lease),
            ))
            .await;
        let applied = match applied {
            Ok(applied) => applied.into_inner().applied.map(|d| d.digest),
            Err(status) => {
                self.remove_snapshot(&key).await;
                return Err(ContainerError::InvalidImage(format!(
                    "a layer could not be applied: {}",
                    status.message()
                )));
            }
        };
        if applied.as_deref() != Some(diff_id) {
            self.remove_snapshot(&key).await;
            return Err(ContainerError::InvalidImage(format!(
                "a layer's content is {applied:?}, not the {diff_id} the configuration names"
            )));
        }
        let committed = snapshots
            .commit(self.with(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: chain_id.into(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Another import committed the same layers first.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.remove_snapshot(&key).await;
                Ok(())
            }
            Err(status) => {
                self.remove_snapshot(&key).await;
                Err(status.into())
            }
        }
    }

    /// Removes the snapshot `key`, if it is there.
    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let _ = SnapshotsClient::new(self.channel())
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await;
    }
}

impl RunConfig {
    /// The program and its arguments: the entrypoint, then `args` when given (as `docker run IMAGE
    /// ARGS…` replaces `Cmd`), or `Cmd`.
    pub fn args(&self, args: &[String]) -> Vec<String> {
        let tail = if args.is_empty() { &self.cmd } else { args };
        self.entrypoint.iter().chain(tail).cloned().collect()
    }
}

/// Parses `UID` or `UID:GID` (the group is the uid when left out).
pub fn parse_user(user: &str) -> Option<(u32, u32)> {
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, gid.parse().ok()?)),
        None => {
            let uid = user.parse().ok()?;
            Some((uid, uid))
        }
    }
}

/// The lease that holds the image whose manifest is `digest`.
fn lease_id(digest: &str) -> String {
    format!("wafer-image-{}", digest.replace(':', "-"))
}

/// What an image's configuration says about starting its process.
fn run_config(config: &ImageConfiguration) -> RunConfig {
    let Some(run) = config.config() else {
        return RunConfig {
            cwd: "/".into(),
            ..RunConfig::default()
        };
    };
    RunConfig {
        entrypoint: run.entrypoint().clone().unwrap_or_default(),
        cmd: run.cmd().clone().unwrap_or_default(),
        env: run.env().clone().unwrap_or_default(),
        cwd: run
            .working_dir()
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: run.user().clone().filter(|user| !user.is_empty()),
    }
}
