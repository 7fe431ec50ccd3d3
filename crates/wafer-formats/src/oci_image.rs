//! Image tarballs as users upload them, read into one shape: the manifest wafer will run, and every
//! blob it names, each checked against its digest.
//!
//! Two formats are read:
//! - an **OCI image layout** (`oci-layout`, `index.json`, `blobs/sha256/…`: what `buildah push
//!   oci-archive:`, `skopeo copy oci-archive:` and `docker buildx --output type=oci` write). The index
//!   names the manifest; when it names an index of several platforms, this machine's is taken.
//! - a **docker-archive** (`manifest.json` with `Config`, `Layers` and `RepoTags`: what `docker save`
//!   writes). It has no manifest blob of its own, so one is written for it, in Docker's schema 2.

use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;

/// A manifest and the blobs it needs.
#[derive(Debug)]
pub struct Unpacked {
    /// The manifest's bytes, as stored under its digest.
    pub manifest: Vec<u8>,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest, parsed.
    pub parsed: ImageManifest,
    /// The config and layer blobs by digest (`sha256:…`).
    pub blobs: HashMap<String, Vec<u8>>,
    /// The name the tarball gives its image, if any (`RepoTags`, or the index's ref name annotation).
    pub name: Option<String>,
}

impl Unpacked {
    /// The manifest's digest.
    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Why an image tarball cannot be read.
fn invalid(message: impl Into<String>) -> String {
    message.into()
}

/// Reads an image tarball (OCI layout or docker-archive); the error says why it is not a valid one.
pub fn read(tarball: &[u8]) -> Result<Unpacked, String> {
    let files = entries(tarball)?;
    if files.contains_key("index.json") {
        oci_layout(files)
    } else if files.contains_key("manifest.json") {
        docker_archive(files)
    } else {
        Err(invalid(
            "the tarball is neither an OCI image layout (no index.json) nor a docker-archive (no \
             manifest.json)",
        ))
    }
}

/// Every regular file of the tarball by its path (without a leading `./`).
fn entries(tarball: &[u8]) -> Result<HashMap<String, Vec<u8>>, String> {
    let mut archive = tar::Archive::new(tarball);
    let mut files = HashMap::new();
    let unreadable = |e: std::io::Error| invalid(format!("not a readable tarball: {e}"));
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(unreadable)?;
        let path = path.to_string_lossy().trim_start_matches("./").to_string();
        // The size is the header's claim: an entry never holds more than the tarball itself.
        let claimed = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        let mut bytes = Vec::with_capacity(claimed.min(tarball.len()));
        entry.read_to_end(&mut bytes).map_err(unreadable)?;
        files.insert(path, bytes);
    }
    Ok(files)
}

/// The architecture name images use for this machine's.
pub fn this_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn oci_layout(files: HashMap<String, Vec<u8>>) -> Result<Unpacked, String> {
    let blob = |digest: &str| -> Result<&Vec<u8>, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid(format!("unsupported digest {digest}: only sha256 is")))?;
        let bytes = files
            .get(&format!("blobs/sha256/{hex}"))
            .ok_or_else(|| invalid(format!("the layout has no blob {digest}")))?;
        if digest_of(bytes) != digest {
            return Err(invalid(format!("blob {digest} does not match its digest")));
        }
        Ok(bytes)
    };
    let mut index = ImageIndex::from_reader(&files["index.json"][..])
        .map_err(|e| invalid(format!("index.json: {e}")))?;
    let mut name = None;
    // Follow nested indexes down to one manifest: this platform's, or the only one.
    let manifest = loop {
        let manifests = index.manifests();
        let chosen = match manifests.as_slice() {
            [] => return Err(invalid("the image index names no manifest")),
            [only] => only.clone(),
            several => several
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == "linux"
                            && p.architecture().to_string() == this_architecture()
                    })
                })
                .cloned()
                .ok_or_else(|| {
                    invalid(format!(
                        "the image index has no manifest for linux/{}",
                        this_architecture()
                    ))
                })?,
        };
        if let Some(tag) = chosen
            .annotations()
            .as_ref()
            .and_then(|a| a.get("org.opencontainers.image.ref.name"))
        {
            name.get_or_insert_with(|| tag.clone());
        }
        let digest = chosen.digest().to_string();
        let bytes = blob(&digest)?;
        match chosen.media_type() {
            MediaType::ImageIndex => {
                index = ImageIndex::from_reader(&bytes[..])
                    .map_err(|e| invalid(format!("index {digest}: {e}")))?;
            }
            media_type => break (bytes.clone(), media_type.to_string()),
        }
    };
    let (manifest, media_type) = manifest;
    let parsed = ImageManifest::from_reader(&manifest[..])
        .map_err(|e| invalid(format!("the manifest: {e}")))?;
    let mut blobs = HashMap::new();
    for descriptor in std::iter::once(parsed.config()).chain(parsed.layers()) {
        let digest = descriptor.digest().to_string();
        blobs.insert(digest.clone(), blob(&digest)?.clone());
    }
    Ok(Unpacked {
        manifest,
        media_type,
        parsed,
        blobs,
        name,
    })
}

/// One image of a docker-archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchivedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn docker_archive(mut files: HashMap<String, Vec<u8>>) -> Result<Unpacked, String> {
    let images: Vec<ArchivedImage> = serde_json::from_slice(&files["manifest.json"])
        .map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let [image] = <[ArchivedImage; 1]>::try_from(images).map_err(|images| {
        invalid(format!(
            "manifest.json must describe one image, not {}",
            images.len()
        ))
    })?;
    let mut take = |path: &str| {
        files
            .remove(path)
            .ok_or_else(|| invalid(format!("the archive has no {path}")))
    };
    let config = take(&image.config)?;
    let mut blobs = HashMap::new();
    let mut layers = Vec::new();
    for path in &image.layers {
        let bytes = take(path)?;
        let media_type = if bytes.starts_with(&[0x1f, 0x8b]) {
            DOCKER_LAYER_GZIP
        } else {
            DOCKER_LAYER
        };
        let digest = digest_of(&bytes);
        layers.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": bytes.len()
        }));
        blobs.insert(digest, bytes);
    }
    let config_digest = digest_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .map_err(|e| invalid(e.to_string()))?;
    blobs.insert(config_digest, config);
    let parsed = ImageManifest::from_reader(&manifest[..])
        .map_err(|e| invalid(format!("the manifest made for the archive: {e}")))?;
    Ok(Unpacked {
        manifest,
        media_type: DOCKER_MANIFEST.to_string(),
        parsed,
        blobs,
        name: image.repo_tags.and_then(|tags| tags.into_iter().next()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn blob_path(bytes: &[u8]) -> String {
        format!("blobs/sha256/{}", &digest_of(bytes)["sha256:".len()..])
    }

    #[test]
    fn an_entry_claiming_more_than_the_tarball_holds_is_refused_without_reserving_it() {
        // A header that says its entry is 4 EiB long, with two bytes behind it: reserving what it
        // claims aborted the process (found by the `oci_tarball` fuzz target).
        let mut header = tar::Header::new_gnu();
        header.set_path("index.json").unwrap();
        header.set_size(1 << 62);
        header.set_mode(0o644);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        bytes.resize(bytes.len() + 510 + 1024, 0);
        let refused = read(&bytes).unwrap_err();
        assert!(
            refused.to_string().contains("not a readable tarball"),
            "{refused}"
        );
    }

    const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn an_oci_layout_gives_its_manifest_and_checked_blobs() {
        let layer = b"not really a tar, but a blob all the same".as_slice();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest_of(CONFIG), "size": CONFIG.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest_of(layer), "size": layer.len()}],
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": digest_of(&manifest), "size": manifest.len(),
                           "annotations": {"org.opencontainers.image.ref.name": "busybox:test"}}],
        }))
        .unwrap();
        let files = [
            (
                "oci-layout",
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
            ),
            ("index.json", &index),
            (&blob_path(&manifest), &manifest),
            (&blob_path(CONFIG), CONFIG),
            (&blob_path(layer), layer),
        ];
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, *b)).collect();
        let image = read(&tarball(&files)).unwrap();
        assert_eq!(image.digest(), digest_of(&manifest));
        assert_eq!(image.name.as_deref(), Some("busybox:test"));
        assert_eq!(image.blobs.len(), 2);
        assert_eq!(image.blobs[&digest_of(layer)], layer);

        // A blob that does not match its name is refused.
        let mut tampered = files.clone();
        let wrong = blob_path(layer);
        tampered.retain(|(p, _)| *p != wrong);
        tampered.push((&wrong, b"something else"));
        let error = read(&tarball(&tampered)).unwrap_err().to_string();
        assert!(error.contains("does not match its digest"), "{error}");
    }

    #[test]
    fn a_docker_archive_gets_a_manifest_written_for_it() {
        let layer = b"layer bytes".as_slice();
        let manifest =
            br#"[{"Config":"abc.json","RepoTags":["busybox:saved"],"Layers":["l1/layer.tar"]}]"#;
        let image = read(&tarball(&[
            ("manifest.json", manifest),
            ("abc.json", CONFIG),
            ("l1/layer.tar", layer),
        ]))
        .unwrap();
        assert_eq!(image.media_type, DOCKER_MANIFEST);
        assert_eq!(image.name.as_deref(), Some("busybox:saved"));
        assert_eq!(image.parsed.layers().len(), 1);
        assert_eq!(
            image.parsed.config().digest().to_string(),
            digest_of(CONFIG)
        );
        assert!(image.blobs.contains_key(&digest_of(layer)));
    }

    #[test]
    fn what_is_not_an_image_tarball_is_refused_clearly() {
        let error = read(b"plain text").unwrap_err();
        assert!(error.starts_with("not a readable tarball"), "{error}");
        let error = read(&tarball(&[("hello.txt", b"hi")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("neither an OCI image layout"), "{error}");
        let error = read(&tarball(&[("manifest.json", b"[]")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("one image, not 0"), "{error}");
    }
}
