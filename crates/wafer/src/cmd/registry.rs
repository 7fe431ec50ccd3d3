//! `wafer push`, `wafer pull` and `wafer deploy oci://REF`: functions in OCI registries (oci-client).
//!
//! A pushed function is the image `wafer package` makes (an index over a wasm artifact and a plain
//! image). Pulling takes the wasm from a wasm layer when the image has one, or else from the root
//! filesystem of a plain image at its entrypoint, so an ordinary image whose rootfs holds the `.wasm`
//! works too. The function's config comes from the manifest's `dev.wafer.function.config` annotation.
//!
//! Credentials come from `WAFER_REGISTRY_USER` and `WAFER_REGISTRY_PASSWORD` (anonymous without them).
//! Registries on `localhost` and `127.0.0.1`, or any with `--plain-http`, are spoken to over HTTP.

use super::package::Image;
use crate::cli::{PullArgs, PushArgs};
use crate::progress::Step;
use anyhow::{bail, Context};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;
use std::io::Read;
use std::process::ExitCode;
use wafer_api::oci::{CONFIG_ANNOTATION, INDEX, MANIFEST, WASM_LAYERS, WASM_PATH};
use wafer_api::FunctionConfig;
use wafer_container::pull::Registries;

pub async fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let image = if bytes.starts_with(b"\0asm") {
        Image::new(
            &bytes,
            &super::package::with_kind(&bytes, args.function.config())?,
        )?
    } else {
        Image::from_layout(&bytes).with_context(|| {
            format!(
                "{} is neither wasm nor an image layout",
                args.file.display()
            )
        })?
    };
    let (client, reference, auth) = connect(&args.reference, args.plain_http)?;
    let _pushing = Step::spinner(&format!("pushing to {}", args.reference));
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .with_context(|| format!("cannot log in to {}", reference.registry()))?;
    let root = image.root();
    let manifests: Vec<Value> = if root.media_type() == INDEX {
        let index: Value = serde_json::from_slice(root.bytes())?;
        index["manifests"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut pushed = Vec::new();
    for descriptor in &manifests {
        let digest = descriptor["digest"]
            .as_str()
            .context("a manifest without a digest")?;
        if pushed.iter().any(|d| d == digest) {
            continue;
        }
        let manifest = image.blob(digest).context("the image lacks a manifest")?;
        push_manifest(
            &client,
            &reference,
            &image,
            manifest.bytes(),
            digest,
            MANIFEST,
        )
        .await?;
        pushed.push(digest.to_string());
    }
    if root.media_type() == INDEX {
        let body = root.bytes().to_vec();
        client
            .push_manifest_raw(&reference, body, INDEX.parse()?)
            .await
            .context("cannot push the image index")?;
    } else {
        let digest = root.digest();
        push_manifest(&client, &reference, &image, root.bytes(), &digest, MANIFEST).await?;
        client
            .push_manifest_raw(&reference, root.bytes().to_vec(), MANIFEST.parse()?)
            .await
            .context("cannot tag the manifest")?;
    }
    println!(
        "pushed {} to {reference} ({})",
        args.file.display(),
        root.digest()
    );
    Ok(ExitCode::SUCCESS)
}

/// Pushes the blobs one manifest names, then the manifest itself by digest.
async fn push_manifest(
    client: &Client,
    reference: &Reference,
    image: &Image,
    manifest: &[u8],
    digest: &str,
    media_type: &str,
) -> anyhow::Result<()> {
    let parsed: Value = serde_json::from_slice(manifest).context("a manifest is not JSON")?;
    let layers = parsed["layers"].as_array().cloned().unwrap_or_default();
    for descriptor in layers.iter().chain([&parsed["config"]]) {
        let blob_digest = descriptor["digest"]
            .as_str()
            .context("a descriptor without a digest")?;
        let blob = image
            .blob(blob_digest)
            .with_context(|| format!("the image lacks blob {blob_digest}"))?;
        client
            .push_blob(reference, blob.bytes().to_vec(), blob_digest)
            .await
            .with_context(|| format!("cannot push blob {blob_digest}"))?;
    }
    client
        .push_manifest_raw(
            &at_digest(reference, digest),
            manifest.to_vec(),
            media_type.parse()?,
        )
        .await
        .with_context(|| format!("cannot push manifest {digest}"))?;
    Ok(())
}

pub async fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let pulling = Step::spinner(&format!("pulling {}", args.reference));
    let (wasm, config) = fetch(&args.reference, args.plain_http).await?;
    drop(pulling);
    let output = args.output.unwrap_or_else(|| {
        let reference = args.reference.rsplit('/').next().unwrap_or("function");
        let name = reference.split([':', '@']).next().unwrap_or("function");
        format!("{name}.wasm").into()
    });
    std::fs::write(&output, &wasm).with_context(|| format!("cannot write {}", output.display()))?;
    let config_path = output.with_extension("json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    println!(
        "pulled {} to {} ({} bytes) and its config to {}",
        args.reference,
        output.display(),
        wasm.len(),
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The function an image holds: its wasm and its wafer config (the default when it has none).
pub async fn fetch(reference: &str, plain_http: bool) -> anyhow::Result<(Vec<u8>, FunctionConfig)> {
    let (client, reference, auth) = connect(reference, plain_http)?;
    let accepted = [
        INDEX,
        MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ];
    let (body, _) = client
        .pull_manifest_raw(&reference, &auth, &accepted)
        .await
        .with_context(|| format!("cannot fetch {reference}"))?;
    let mut manifest: Value = serde_json::from_slice(&body).context("the manifest is not JSON")?;
    if manifest.get("manifests").is_some() {
        let chosen = choose(&manifest)?;
        let (body, _) = client
            .pull_manifest_raw(&at_digest(&reference, &chosen), &auth, &accepted)
            .await
            .context("cannot fetch the image's manifest")?;
        manifest = serde_json::from_slice(&body).context("the manifest is not JSON")?;
    }
    let config = match manifest["annotations"][CONFIG_ANNOTATION].as_str() {
        Some(json) => serde_json::from_str(json)
            .with_context(|| format!("the image's {CONFIG_ANNOTATION} is not a wafer config"))?,
        None => FunctionConfig::default(),
    };
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let blob = |descriptor: &Value| {
        let descriptor: oci_client::manifest::OciDescriptor =
            serde_json::from_value(descriptor.clone()).context("a malformed descriptor")?;
        anyhow::Ok(descriptor)
    };
    if let Some(layer) = layers
        .iter()
        .find(|l| WASM_LAYERS.contains(&l["mediaType"].as_str().unwrap_or_default()))
    {
        let mut wasm = Vec::new();
        client
            .pull_blob(&reference, &blob(layer)?, &mut wasm)
            .await?;
        return Ok((wasm, config));
    }
    // A plain image: the wasm is a file in its root filesystem, at its entrypoint.
    let mut image_config = Vec::new();
    client
        .pull_blob(&reference, &blob(&manifest["config"])?, &mut image_config)
        .await
        .context("cannot fetch the image config")?;
    let image_config: Value = serde_json::from_slice(&image_config)?;
    let process = &image_config["config"];
    let entrypoint = process["Entrypoint"][0]
        .as_str()
        .or(process["Cmd"][0].as_str())
        .unwrap_or(WASM_PATH)
        .trim_start_matches('/')
        .to_string();
    for layer in layers.iter().rev() {
        let mut bytes = Vec::new();
        client
            .pull_blob(&reference, &blob(layer)?, &mut bytes)
            .await?;
        let gzipped = layer["mediaType"]
            .as_str()
            .is_some_and(|m| m.ends_with("gzip"));
        if let Some(wasm) = file_in_layer(&bytes, gzipped, &entrypoint)? {
            return Ok((wasm, config));
        }
    }
    bail!("{reference} has no wasm layer and no /{entrypoint} in its root filesystem")
}

/// The content `digest` in the repository `reference` names.
fn at_digest(reference: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        digest.to_string(),
    )
}

/// The manifest to use from an index: the wasm artifact if there is one, else the first.
fn choose(index: &Value) -> anyhow::Result<String> {
    let manifests = index["manifests"]
        .as_array()
        .context("an empty image index")?;
    manifests
        .iter()
        .find(|m| m["platform"]["architecture"] == "wasm")
        .or_else(|| manifests.first())
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .context("an image index without manifests")
}

/// The file at `path` in a layer tar, if it is there.
fn file_in_layer(layer: &[u8], gzipped: bool, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(layer))
    } else {
        Box::new(layer)
    };
    let mut archive = ::tar::Archive::new(reader);
    for entry in archive.entries().context("a layer is not a tar archive")? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy().trim_start_matches("./") == path {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

/// A client for the registry `reference` names, the parsed reference, and the credentials (the
/// server's pull follows the same rule: `wafer_container::pull::client`).
fn connect(reference: &str, plain_http: bool) -> anyhow::Result<(Client, Reference, RegistryAuth)> {
    let reference: Reference = reference
        .parse()
        .with_context(|| format!("invalid image reference {reference:?}"))?;
    let registries = Registries {
        plain_http: if plain_http {
            vec![reference.registry().to_string()]
        } else {
            Vec::new()
        },
        credentials: std::env::var("WAFER_REGISTRY_USER")
            .ok()
            .zip(std::env::var("WAFER_REGISTRY_PASSWORD").ok()),
    };
    let (client, auth) = wafer_container::pull::client(&reference, &registries);
    Ok((client, reference, auth))
}
