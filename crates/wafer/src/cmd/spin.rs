//! `wafer deploy spin.toml` (or a directory holding one): a Spin application, every component a
//! function, deployed in one transaction. The manifest is read by `wafer_api::spin`; this side finds
//! it, gathers the application's variables (`--var`, `SPIN_VARIABLE_*`), reads the modules, bundles
//! each component's files, and says what wafer does not honour.

use super::deploy::overlay;
use super::files::Bundle;
use crate::cli::DeployArgs;
use crate::client::Client;
use crate::output;
use crate::progress::Step;
use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wafer_api::spin::{FileMount, SpinComponent};
use wafer_api::{AppDeploy, AppFunctionSpec, ConfigUpdate};

/// The manifest `file` names: itself when it is a `.toml` file, or the `spin.toml` of a directory.
pub fn manifest_of(file: &str) -> Option<PathBuf> {
    let path = Path::new(file);
    if path.is_dir() {
        return Some(path.join("spin.toml"));
    }
    (path.extension().is_some_and(|e| e == "toml")).then(|| path.to_path_buf())
}

/// The application variables given: `SPIN_VARIABLE_NAME` from the environment, then `--var`.
fn given(vars: &[(String, String)]) -> BTreeMap<String, String> {
    let mut given: BTreeMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("SPIN_VARIABLE_")?.to_ascii_lowercase(), v)))
        .collect();
    given.extend(
        vars.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone())),
    );
    given
}

pub async fn deploy(args: DeployArgs, manifest: PathBuf) -> anyhow::Result<ExitCode> {
    if args.name.is_some() {
        anyhow::bail!(
            "a Spin application names its functions APP-COMPONENT: give --app, not --name"
        );
    }
    if !args.secrets.is_empty() || args.no_promote || args.files.is_some() {
        anyhow::bail!(
            "--secret, --no-promote and --files apply to one function: declare secrets as secret \
             [variables] and each component's files in the manifest"
        );
    }
    let text = tokio::fs::read_to_string(&manifest)
        .await
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let app = wafer_api::spin::read(&text, args.app.as_deref(), &given(&args.vars))
        .map_err(|e| anyhow::anyhow!("{}: {e}", manifest.display()))?;
    for note in &app.notes {
        eprintln!("note: {note}");
    }
    let dir = manifest.parent().unwrap_or(Path::new("."));
    let flags = args.function.config();
    let (mut parts, mut modules, mut functions) = (BTreeMap::new(), Vec::new(), Vec::new());
    let mut bundles: Vec<(String, Vec<u8>)> = Vec::new();
    for component in &app.components {
        let part = match parts.get(&component.source) {
            Some(part) => String::clone(part),
            None => {
                let path = dir.join(&component.source);
                let module = tokio::fs::read(&path).await.with_context(|| {
                    format!(
                        "cannot read component `{}`'s module {} (build the application first)",
                        component.id,
                        path.display()
                    )
                })?;
                let part = format!("module-{}", modules.len() + 1);
                modules.push((part.clone(), module));
                parts.insert(component.source.clone(), part.clone());
                part
            }
        };
        // Components with the same files share one part.
        let files =
            files_of(component, dir)?.map(|tar| match bundles.iter().find(|(_, t)| *t == tar) {
                Some((part, _)) => part.clone(),
                None => {
                    let part = format!("files-{}", bundles.len() + 1);
                    bundles.push((part.clone(), tar));
                    part
                }
            });
        functions.push(AppFunctionSpec {
            name: component.function.clone(),
            module: part,
            files,
            config: overlay(component.config.clone(), flags.clone()),
            variables: ConfigUpdate {
                variables: component.variables.clone(),
                secrets: component
                    .secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            },
        });
    }
    let client = Client::new(&args.client);
    let size = modules
        .iter()
        .chain(&bundles)
        .map(|(_, m)| m.len() as u64)
        .sum();
    let step = Step::upload(&format!("uploading {}", manifest.display()), size);
    let deployed = client
        .deploy_app(&AppDeploy { functions }, modules, bundles, &step)
        .await?;
    drop(step);
    let mut text = format!("deployed application {}", app.name);
    for version in &deployed.functions {
        text.push_str(&format!(
            "\n  {} version {} ({})",
            version.function, version.version, version.kind
        ));
        for route in &version.config.routes {
            text.push_str(&format!("  {}{}", client.base(), route));
        }
    }
    output::message(args.client.output, &deployed, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// A component's `files`, less its `exclude_files`, as one tar (none when it lists none). Patterns
/// and sources are relative to the manifest's directory `dir`.
fn files_of(component: &SpinComponent, dir: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    if component.files.is_empty() {
        return Ok(None);
    }
    let in_component =
        |e: anyhow::Error| e.context(format!("component `{}`'s files", component.id));
    let mut bundle = Bundle::new(dir, &component.exclude_files).map_err(in_component)?;
    for mount in &component.files {
        let added = match mount {
            FileMount::Pattern(pattern) => bundle.add_pattern(pattern),
            FileMount::Directory {
                source,
                destination,
            } => bundle.add_dir(
                &dir.join(source),
                Path::new(destination.trim_start_matches('/')),
            ),
        }
        .map_err(in_component)?;
        if added == 0 {
            eprintln!(
                "note: component `{}`: files entry {mount:?} adds no file",
                component.id
            );
        }
    }
    bundle.finish()
}
