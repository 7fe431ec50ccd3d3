//! Images pulled from a registry (`oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]`) by wafer itself, since
//! containerd 1.6 has no transfer service: the manifest (this platform's, from an index), its
//! configuration and its layers, each checked against its digest, become an OCI-layout tarball — the
//! same form an uploaded image takes, so a pulled version is as self-contained as an uploaded one.

use crate::error::ContainerError;
use crate::tarball::{digest_of, this_architecture};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

/// How registries are reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registries {
    /// Registries spoken to over plain HTTP (`host[:port]`); `localhost` and `127.0.0.1` always are.
    pub plain_http: Vec<String>,
    /// A user name and password for every registry, when set; anonymous otherwise.
    pub credentials: Option<(String, String)>,
}

/// The media types of manifests and indexes wafer reads.
const ACCEPTED: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A pulled image: its OCI-layout tarball and the reference pinned to its manifest digest.
#[derive(Debug)]
pub struct Pulled {
    pub tarball: Vec<u8>,
    /// `REGISTRY/REPOSITORY[:TAG]@sha256:…`
    pub pinned: String,
}

/// A failed pull: the registry's fault (unreachable, or its own 5xx), or else the reference's (an
/// unknown image or tag, refused credentials).
fn pull_error(reference: &str, e: oci_client::errors::OciDistributionError) -> ContainerError {
    use oci_client::errors::OciDistributionError as E;
    let message = format!("cannot pull {reference}: {e}");
    match e {
        E::RequestError(_) | E::IoError(_) => ContainerError::Registry(message),
        E::ServerError { code, .. } if code >= 500 => ContainerError::Registry(message),
        _ => ContainerError::InvalidImage(message),
    }
}

fn invalid(message: impl Into<String>) -> ContainerError {
    ContainerError::InvalidImage(message.into())
}

/// Pulls `reference` (without its `oci://`), refusing an image larger than `cap` bytes in all.
pub async fn pull(
    reference: &str,
    registries: &Registries,
    cap: usize,
) -> Result<Pulled, ContainerError> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e| invalid(format!("{reference:?} is not an image reference: {e}")))?;
    let (client, auth) = client(&parsed, registries);
    let unreachable = |e| pull_error(reference, e);
    let (mut manifest, mut digest) = client
        .pull_manifest_raw(&parsed, &auth, &ACCEPTED)
        .await
        .map_err(unreachable)?;
    let mut json: Value = serde_json::from_slice(&manifest)
        .map_err(|e| invalid(format!("the manifest of {reference} is not JSON: {e}")))?;
    if json.get("manifests").is_some() {
        let chosen = platform(&json)?;
        let pinned = at(&parsed, &chosen)?;
        (manifest, digest) = client
            .pull_manifest_raw(&pinned, &auth, &ACCEPTED)
            .await
            .map_err(unreachable)?;
        json = serde_json::from_slice(&manifest)
            .map_err(|e| invalid(format!("the platform manifest is not JSON: {e}")))?;
    }
    let manifest = manifest.to_vec();
    if digest_of(&manifest) != digest {
        return Err(invalid(format!(
            "the registry's manifest does not match its digest {digest}"
        )));
    }
    let media_type = json["mediaType"]
        .as_str()
        .unwrap_or(ACCEPTED[1])
        .to_string();
    let mut descriptors = vec![json["config"].clone()];
    descriptors.extend(json["layers"].as_array().cloned().unwrap_or_default());
    let mut blobs = Vec::new();
    let mut total = manifest.len();
    for descriptor in descriptors {
        let descriptor: OciDescriptor = serde_json::from_value(descriptor)
            .map_err(|e| invalid(format!("a malformed descriptor in the manifest: {e}")))?;
        total = total.saturating_add(usize::try_from(descriptor.size).unwrap_or(usize::MAX));
        if total > cap {
            return Err(invalid(format!(
                "the image is larger than the limit of {cap} bytes"
            )));
        }
        let mut bytes = Vec::new();
        client
            .pull_blob(&parsed, &descriptor, &mut bytes)
            .await
            .map_err(unreachable)?;
        if digest_of(&bytes) != descriptor.digest {
            return Err(invalid(format!(
                "blob {} does not match its digest",
                descriptor.digest
            )));
        }
        blobs.push((descriptor.digest, bytes));
    }
    let tarball = layout(&manifest, &media_type, &blobs)?;
    let name = match parsed.tag() {
        Some(tag) => format!("{}/{}:{tag}", parsed.registry(), parsed.repository()),
        None => format!("{}/{}", parsed.registry(), parsed.repository()),
    };
    Ok(Pulled {
        tarball,
        pinned: format!("{name}@{digest}"),
    })
}

/// A client for the registry `reference` names, over plain HTTP when `registries` says so (and always
/// for `localhost` and `127.0.0.1`), with its credentials.
pub fn client(reference: &Reference, registries: &Registries) -> (Client, RegistryAuth) {
    let host = reference.registry();
    let bare = host.split(':').next().unwrap_or_default();
    let plain = ["localhost", "127.0.0.1"].contains(&bare)
        || registries.plain_http.iter().any(|p| p == host || p == bare);
    let client = Client::new(ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    });
    let auth = match &registries.credentials {
        Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
        None => RegistryAuth::Anonymous,
    };
    (client, auth)
}

/// The digest of this platform's manifest in an index.
fn platform(index: &Value) -> Result<String, ContainerError> {
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let fits = |m: &&Value| {
        m["platform"]["os"] == "linux" && m["platform"]["architecture"] == this_architecture()
    };
    let chosen = match manifests.as_slice() {
        [only] => Some(only),
        several => several.iter().find(fits),
    };
    chosen
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            invalid(format!(
                "the image has no manifest for linux/{}",
                this_architecture()
            ))
        })
}

/// `reference` pinned to `digest`.
fn at(reference: &Reference, digest: &str) -> Result<Reference, ContainerError> {
    format!(
        "{}/{}@{digest}",
        reference.registry(),
        reference.repository()
    )
    .parse()
    .map_err(|e| invalid(format!("cannot address {digest}: {e}")))
}

/// An OCI layout holding one manifest and its blobs, as a tarball.
pub fn layout(
    manifest: &[u8],
    media_type: &str,
    blobs: &[(String, Vec<u8>)],
) -> Result<Vec<u8>, ContainerError> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type,
            "digest": digest_of(manifest),
            "size": manifest.len(),
        }]
    });
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index.to_string().into_bytes()),
        (blob_path(&digest_of(manifest)), manifest.to_vec()),
    ];
    for (digest, bytes) in blobs {
        files.push((blob_path(digest), bytes.clone()));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, &bytes[..])?;
    }
    Ok(builder.into_inner()?)
}

fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}
