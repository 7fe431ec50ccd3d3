//! `wafer package FILE --output app.tar [--tag NAME:TAG]`: a function as an OCI image layout tarball.
//!
//! One image name points to an image index with two manifests:
//! - a wasm OCI artifact (platform `wasm`/`wasip1` or `wasip2`): the binary as its only layer
//!   (`application/vnd.bytecodealliance.wasm.component.layer.v0+wasm` for a component,
//!   `application/wasm` for a module) with an `application/vnd.wasm.config.v0+json` config, which
//!   runwasi-based shims on containerd 1.7 and later, and registries, take as is;
//! - a plain image for linux (amd64 and arm64 alike: it holds no native code) whose one layer is a root
//!   filesystem with `/app.wasm` and `/wafer.json`, entrypoint `/app.wasm`. containerd unpacks and runs
//!   it like any image, so `ctr run --runtime io.containerd.wafer.v1` works on every containerd.
//!
//! Both manifests carry the function's wafer config (kind, env, limits, routes) in the annotation
//! [`CONFIG_ANNOTATION`]; the plain image also has it as `/wafer.json`, where the shim reads it. The
//! media types and paths are the contract in [`wafer_api::oci`], which the shim reads by.
//! The tarball is reproducible: the same inputs give the same bytes.

use crate::cli::PackageArgs;
use crate::progress::Step;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::ExitCode;
use wafer_api::oci::{
    sha256_hex, COMPONENT_LAYER, CONFIG_ANNOTATION, CONFIG_PATH, IMAGE_CONFIG, INDEX, MANIFEST,
    MODULE_LAYER, TAR_LAYER, WASM_CONFIG, WASM_PATH,
};
use wafer_api::FunctionConfig;

/// A blob read from a layout whose media type only its parent descriptor knows.
const UNKNOWN: &str = "application/octet-stream";

pub async fn run(args: PackageArgs) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let stem = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "function".into());
    let reference = image_name(args.tag.as_deref().unwrap_or(&stem))?;
    let config = with_kind(&wasm, args.function.config())?;
    let image = Image::new(&wasm, &config)?;
    let tarball = image.layout(&reference)?;
    std::fs::write(&args.output, tarball)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "packaged {} as {reference} ({})",
        args.file.display(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `config` with its kind settled: the one given, or the one wafer detects, so the shim runs the
/// function as `wafer serve` would. Compiling is also what checks the binary.
pub fn with_kind(wasm: &[u8], config: FunctionConfig) -> anyhow::Result<FunctionConfig> {
    let _compiling = Step::spinner("compiling the binary to check it");
    let engine = wafer_engine::Engine::new(&wafer_engine::EngineOptions {
        pool: None,
        ..Default::default()
    })?;
    let kind = engine.compile(wasm, config.kind)?.function.kind();
    Ok(FunctionConfig {
        kind: Some(kind),
        ..config
    })
}

/// A full image name, `registry/repository:tag`, the way containerd names images: a name without a
/// registry is on `docker.io` (under `library/` when it has no `/`), and a name without a tag is `latest`.
pub fn image_name(name: &str) -> anyhow::Result<String> {
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/:".contains(c);
    if name.is_empty() || !name.chars().all(valid) {
        bail!("invalid image name {name:?}: use lowercase letters, digits, `.`, `_`, `-`, `/` and one `:TAG`");
    }
    let (repository, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "latest"),
    };
    if repository.is_empty() || tag.is_empty() {
        bail!("invalid image name {name:?}");
    }
    let first = repository.split('/').next().unwrap_or_default();
    let has_registry = repository.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    Ok(match (has_registry, repository.contains('/')) {
        (true, _) => format!("{repository}:{tag}"),
        (false, true) => format!("docker.io/{repository}:{tag}"),
        (false, false) => format!("docker.io/library/{repository}:{tag}"),
    })
}

/// A content-addressed blob and its descriptor.
pub struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

impl Blob {
    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its media type.
    pub fn media_type(&self) -> &'static str {
        self.media_type
    }

    fn new(media_type: &'static str, bytes: Vec<u8>) -> Self {
        Self { media_type, bytes }
    }

    fn json(media_type: &'static str, value: &Value) -> anyhow::Result<Self> {
        Ok(Self::new(media_type, serde_json::to_vec(value)?))
    }

    pub fn digest(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.bytes))
    }

    /// The OCI descriptor of this blob, with extra fields (platform, annotations).
    fn descriptor(&self, extra: Value) -> Value {
        let mut descriptor = json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.bytes.len(),
        });
        if let (Some(target), Value::Object(extra)) = (descriptor.as_object_mut(), extra) {
            target.extend(extra);
        }
        descriptor
    }
}

/// The blobs of a packaged function, and the image index that ties them together.
pub struct Image {
    blobs: Vec<Blob>,
    index: Blob,
}

impl Image {
    /// The function `wasm` with `config`, as both image forms.
    pub fn new(wasm: &[u8], config: &FunctionConfig) -> anyhow::Result<Self> {
        let component = wafer_engine::is_component(wasm);
        if !wasm.starts_with(b"\0asm") {
            bail!("not a WebAssembly binary (no \\0asm header)");
        }
        let config_json = serde_json::to_string(config)?;
        let annotations = BTreeMap::from([
            (CONFIG_ANNOTATION, config_json.clone()),
            ("org.opencontainers.image.title", WASM_PATH.to_string()),
        ]);

        // The wasm OCI artifact.
        let layer = Blob::new(
            if component {
                COMPONENT_LAYER
            } else {
                MODULE_LAYER
            },
            wasm.to_vec(),
        );
        let os = if component { "wasip2" } else { "wasip1" };
        let wasm_config = Blob::json(
            WASM_CONFIG,
            &json!({"architecture": "wasm", "os": os, "layerDigests": [layer.digest()]}),
        )?;
        let artifact = Blob::json(
            MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": wasm_config.descriptor(json!({})),
                // The layer carries the config too: a shim given only the layer's descriptor
                // (runwasi's) reads it there.
                "layers": [layer.descriptor(json!({
                    "annotations": {CONFIG_ANNOTATION: config_json.clone()}
                }))],
                "annotations": annotations,
            }),
        )?;

        // The plain image: a root filesystem with the binary and its config.
        let rootfs = Blob::new(
            TAR_LAYER,
            rootfs_tar(&[
                (WASM_PATH, wasm, 0o755),
                (CONFIG_PATH, config_json.as_bytes(), 0o644),
            ])?,
        );
        let image_config = Blob::json(
            IMAGE_CONFIG,
            &json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {"Entrypoint": [format!("/{WASM_PATH}")]},
                "rootfs": {"type": "layers", "diff_ids": [rootfs.digest()]},
            }),
        )?;
        let plain = Blob::json(
            MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": image_config.descriptor(json!({})),
                "layers": [rootfs.descriptor(json!({}))],
                "annotations": annotations,
            }),
        )?;

        let platform = |os: &str, arch: &str| json!({"platform": {"os": os, "architecture": arch}});
        let index = Blob::json(
            INDEX,
            &json!({
                "schemaVersion": 2,
                "mediaType": INDEX,
                "manifests": [
                    plain.descriptor(platform("linux", "amd64")),
                    plain.descriptor(platform("linux", "arm64")),
                    artifact.descriptor(platform(os, "wasm")),
                ],
            }),
        )?;
        Ok(Self {
            blobs: vec![layer, wasm_config, artifact, rootfs, image_config, plain],
            index,
        })
    }

    /// The image read back from an OCI image layout tarball (one written by `wafer package`, or any
    /// layout whose `index.json` names one image).
    pub fn from_layout(tarball: &[u8]) -> anyhow::Result<Self> {
        let mut index = None;
        let mut blobs = BTreeMap::new();
        let mut archive = ::tar::Archive::new(tarball);
        for entry in archive.entries().context("not a tar archive")? {
            let mut entry = entry.context("a broken tar entry")?;
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes)?;
            if path == "index.json" {
                index = Some(bytes);
            } else if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                if !hex.is_empty() {
                    blobs.insert(format!("sha256:{hex}"), bytes);
                }
            }
        }
        let index: Value =
            serde_json::from_slice(&index.context("no index.json: not an OCI image layout")?)
                .context("index.json is not JSON")?;
        let root = index["manifests"]
            .get(0)
            .context("index.json names no image")?;
        let digest = root["digest"].as_str().context("index.json: no digest")?;
        let media_type = match root["mediaType"].as_str() {
            Some(INDEX) => INDEX,
            _ => MANIFEST,
        };
        let take = |digest: &str, blobs: &mut BTreeMap<String, Vec<u8>>| {
            blobs
                .remove(digest)
                .with_context(|| format!("the layout lacks blob {digest}"))
        };
        let root = Blob::new(media_type, take(digest, &mut blobs)?);
        let blobs = blobs
            .into_values()
            .map(|bytes| Blob::new(UNKNOWN, bytes))
            .collect();
        Ok(Self { blobs, index: root })
    }

    /// The index (or, for a single-manifest layout, the manifest) naming everything else.
    pub fn root(&self) -> &Blob {
        &self.index
    }

    /// The blob with `digest`.
    pub fn blob(&self, digest: &str) -> Option<&Blob> {
        self.blobs
            .iter()
            .chain([&self.index])
            .find(|b| b.digest() == digest)
    }

    /// The image as an OCI image layout tarball, named `reference`.
    fn layout(&self, reference: &str) -> anyhow::Result<Vec<u8>> {
        let tag = reference.rsplit_once(':').map_or("latest", |(_, t)| t);
        let top = json!({
            "schemaVersion": 2,
            "manifests": [self.index.descriptor(json!({"annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            }}))],
        });
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), serde_json::to_vec(&top)?),
        ];
        for blob in self.blobs.iter().chain([&self.index]) {
            let path = format!("blobs/sha256/{}", &blob.digest()["sha256:".len()..]);
            if !files.iter().any(|(p, _)| *p == path) {
                files.push((path, blob.bytes.clone()));
            }
        }
        let entries: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice(), 0o644))
            .collect();
        tar(&entries, &["blobs", "blobs/sha256"])
    }
}

/// A root filesystem layer holding `files` at its top.
fn rootfs_tar(files: &[(&str, &[u8], u32)]) -> anyhow::Result<Vec<u8>> {
    tar(files, &[])
}

/// An uncompressed tar of `dirs` then `files`, with fixed owners and times so it is reproducible.
fn tar(files: &[(&str, &[u8], u32)], dirs: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut builder = ::tar::Builder::new(Vec::new());
    for dir in dirs {
        let mut header = ::tar::Header::new_ustar();
        header.set_entry_type(::tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    for (path, bytes, mode) in files {
        let mut header = ::tar::Header::new_ustar();
        header.set_mode(*mode);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        builder.append_data(&mut header, path, *bytes)?;
    }
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_completed_as_containerd_does() {
        assert_eq!(
            image_name("hello").unwrap(),
            "docker.io/library/hello:latest"
        );
        assert_eq!(image_name("me/hello:v1").unwrap(), "docker.io/me/hello:v1");
        assert_eq!(
            image_name("localhost:5000/hello:v1").unwrap(),
            "localhost:5000/hello:v1"
        );
        assert_eq!(
            image_name("ghcr.io/me/hello").unwrap(),
            "ghcr.io/me/hello:latest"
        );
        assert!(image_name("Hello").is_err());
        assert!(image_name("hello:").is_err());
    }

    #[test]
    fn a_package_is_reproducible_and_refuses_what_is_not_wasm() {
        let module = b"\0asm\x01\0\0\0".to_vec();
        let config = FunctionConfig::default();
        let once = Image::new(&module, &config)
            .unwrap()
            .layout("docker.io/library/m:latest");
        let again = Image::new(&module, &config)
            .unwrap()
            .layout("docker.io/library/m:latest");
        assert_eq!(once.unwrap(), again.unwrap());
        assert!(Image::new(b"#!/bin/sh", &config).is_err());
    }
}
