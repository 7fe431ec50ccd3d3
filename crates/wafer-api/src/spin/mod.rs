//! Spin applications as wafer functions: `wafer deploy spin.toml` reads the manifest here and deploys
//! one function per component, all in one transaction (`POST /v1/apps`).
//!
//! Each component becomes the function `APP-COMPONENT` (shortened with a digest when that passes 63
//! characters). Its HTTP routes become wafer routes under the trigger's base: `/path/...` and `/path`
//! mount `/path` (wafer routes cover what is below them), `/...` is the root catch-all `/`, and a
//! private component gets no route. `allowed_outbound_hosts` (version 1's `allowed_http_hosts`),
//! `key_value_stores`, `sqlite_databases`, `environment` and `files` (read-only, gathered by the CLI into
//! a bundle: [`FileMount`]) carry over; component `variables`
//! (version 1's `[component.config]`) become the function's variables, their `{{ name }}` templates
//! filled from the application's `[variables]` — given values (`--var`, `SPIN_VARIABLE_*`), else
//! defaults — and secret when any variable they use is. Whatever wafer cannot honour is listed in
//! [`SpinApp::notes`].

mod manifest;

use crate::{FunctionConfig, Kind};
use std::collections::BTreeMap;
use toml::{Table, Value};

/// What `wafer deploy` deploys for a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpinApp {
    /// The application's name (the manifest's, unless given).
    pub name: String,
    /// One function per component that an HTTP trigger runs, by component id.
    pub components: Vec<SpinComponent>,
    /// What wafer does not honour: ignored fields, triggers it lacks, components it does not deploy.
    pub notes: Vec<String>,
}

/// A component, as a wafer function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpinComponent {
    /// The component's id in the manifest.
    pub id: String,
    /// The function it becomes.
    pub function: String,
    /// Its module: a path relative to the manifest's directory.
    pub source: String,
    /// Its configuration.
    pub config: FunctionConfig,
    /// Its variables, templates filled.
    pub variables: BTreeMap<String, String>,
    /// Its variables that use a secret application variable.
    pub secrets: BTreeMap<String, String>,
    /// The files it reads, as the manifest lists them (none when it lists none).
    pub files: Vec<FileMount>,
    /// Glob patterns, relative to the manifest's directory, of files left out of `files`.
    pub exclude_files: Vec<String>,
}

/// One entry of a component's `files`: what the guest sees, read-only, under `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMount {
    /// A glob pattern relative to the manifest's directory (`static/**/*`): each file it matches, at
    /// its path relative to that directory.
    Pattern(String),
    /// A directory (relative to the manifest's) and everything in it, at an absolute guest path.
    Directory {
        /// The directory, relative to the manifest's.
        source: String,
        /// Where the guest sees it: an absolute path without `..`.
        destination: String,
    },
}

/// The longest function name.
const MAX_NAME: usize = 63;

/// Reads the manifest `text` as application `app` (or the manifest's name), with application variable
/// values `given` (lowercase names, as `--var` and `SPIN_VARIABLE_*` give them).
pub fn read(
    text: &str,
    app: Option<&str>,
    given: &BTreeMap<String, String>,
) -> Result<SpinApp, String> {
    let manifest = manifest::read(text)?;
    let mut notes = manifest.notes;
    let name = slug(app.unwrap_or(&manifest.name));
    if name.is_empty() {
        return Err(format!(
            "the application name {:?} has no letter or digit",
            manifest.name
        ));
    }
    let values = application_values(&manifest.variables, given)?;
    for unknown in given
        .keys()
        .filter(|k| !manifest.variables.contains_key(*k))
    {
        notes.push(format!(
            "variable `{unknown}` is given but the manifest does not declare it"
        ));
    }
    let mut components = Vec::new();
    for (id, table) in &manifest.components {
        let triggers: Vec<_> = manifest
            .routes
            .iter()
            .filter(|t| &t.component == id)
            .collect();
        if triggers.is_empty() {
            notes.push(format!(
                "component `{id}` is not deployed: no HTTP trigger runs it"
            ));
            continue;
        }
        let mut config = FunctionConfig::default();
        for trigger in &triggers {
            match &trigger.route {
                Some(route) => {
                    let (mounted, note) = mount(&manifest.base, route)?;
                    notes.extend(note.map(|n| format!("component `{id}`: {n}")));
                    if !config.routes.contains(&mounted) {
                        config.routes.push(mounted);
                    }
                }
                None => config.private = true,
            }
            if trigger.wagi {
                config.kind = Some(Kind::Wagi);
            }
        }
        let function = function_name(&name, id);
        components.push(component(id, function, table, &values, config, &mut notes)?);
    }
    if components.is_empty() {
        return Err("the manifest has no component an HTTP trigger runs".into());
    }
    Ok(SpinApp {
        name,
        components,
        notes,
    })
}

/// Application variables by name: a value (given, else the default) if any, and whether it is secret.
type Values = BTreeMap<String, (Option<String>, bool)>;

/// The application variables' values.
fn application_values(
    declared: &Table,
    given: &BTreeMap<String, String>,
) -> Result<Values, String> {
    let mut values = BTreeMap::new();
    for (name, declaration) in declared {
        let Value::Table(declaration) = declaration else {
            return Err(format!(
                "variable `{name}` must be a table such as {{ default = \"…\" }}"
            ));
        };
        let flag = |key: &str| declaration.get(key) == Some(&Value::Boolean(true));
        let default = match declaration.get("default") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(format!("variable `{name}`: its default must be a string")),
        };
        let value = given.get(name).cloned().or(default);
        if value.is_none() && flag("required") {
            return Err(format!(
                "variable `{name}` is required: give it with --var {name}=VALUE or SPIN_VARIABLE_{}",
                name.to_ascii_uppercase()
            ));
        }
        values.insert(name.clone(), (value, flag("secret")));
    }
    Ok(values)
}

/// Fills a template's `{{ name }}` references; whether any was secret.
fn fill(template: &str, values: &Values) -> Result<(String, bool), String> {
    let (mut out, mut secret, mut rest) = (String::new(), false, template);
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{template:?}: `{{{{` without `}}}}`"))?;
        let name = after[..end].trim();
        match values.get(name) {
            Some((Some(value), is_secret)) => {
                out.push_str(value);
                secret |= is_secret;
            }
            Some((None, _)) => {
                return Err(format!(
                    "{template:?} uses variable `{name}`, which has no value: give it with --var {name}=VALUE"
                ))
            }
            None => return Err(format!("{template:?} uses variable `{name}`, which [variables] does not declare")),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok((out, secret))
}

/// Component `id` as function `function`: its table mapped onto `config` (which has its routes).
fn component(
    id: &str,
    function: String,
    table: &Table,
    values: &Values,
    mut config: FunctionConfig,
    notes: &mut Vec<String>,
) -> Result<SpinComponent, String> {
    let in_component = |e: String| format!("component `{id}`: {e}");
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match table.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(in_component(format!("{key} must list strings"))),
                })
                .collect(),
            Some(_) => Err(in_component(format!("{key} must be a list"))),
        }
    };
    let source = match table.get("source") {
        Some(Value::String(path)) => path.clone(),
        Some(Value::Table(t)) if t.contains_key("url") => {
            return Err(in_component(
                "its source is a URL: download the module and name its file as the source".into(),
            ))
        }
        _ => return Err(in_component("it has no source file".into())),
    };
    let (mut variables, mut secrets) = (BTreeMap::new(), BTreeMap::new());
    if let Some(declared) = table.get("variables") {
        let Value::Table(declared) = declared else {
            return Err(in_component("variables must be a table".into()));
        };
        for (name, template) in declared {
            let Value::String(template) = template else {
                return Err(in_component(format!("variable `{name}` must be a string")));
            };
            let (value, secret) = fill(template, values).map_err(in_component)?;
            if secret {
                secrets.insert(name.clone(), value);
            } else {
                variables.insert(name.clone(), value);
            }
        }
    }
    for entry in strings("allowed_outbound_hosts")?
        .into_iter()
        .chain(strings("allowed_http_hosts")?)
    {
        let (entry, _) = fill(&entry, values).map_err(in_component)?;
        match outbound(&entry) {
            Ok(host) => config.allowed_outbound_hosts.push(host),
            Err(why) => notes.push(in_component(format!(
                "outbound host {entry:?} is not granted: {why}"
            ))),
        }
    }
    config.key_value_stores = strings("key_value_stores")?;
    config.sqlite_databases = strings("sqlite_databases")?;
    match table.get("environment") {
        None => {}
        Some(Value::Table(env)) => {
            for (k, v) in env {
                let Value::String(v) = v else {
                    return Err(in_component(format!("environment `{k}` must be a string")));
                };
                config.env.insert(k.clone(), v.clone());
            }
        }
        Some(_) => return Err(in_component("environment must be a table".into())),
    }
    for (key, _) in table {
        let note = match key.as_str() {
            "source"
            | "variables"
            | "allowed_outbound_hosts"
            | "allowed_http_hosts"
            | "key_value_stores"
            | "sqlite_databases"
            | "environment"
            | "description" => continue,
            "build" => {
                "its build section is ignored: build the component before deploying".to_string()
            }
            "files" | "exclude_files" => continue,
            "ai_models" => "ai_models are not granted: wafer provides no LLM".to_string(),
            "dependencies" | "dependencies_inherit_configuration" => {
                format!("`{key}` is not supported: wafer does not compose components")
            }
            other => format!("`{other}` is ignored"),
        };
        notes.push(in_component(note));
    }
    let files = match table.get("files") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(file_mount)
            .collect::<Result<_, _>>()
            .map_err(in_component)?,
        Some(_) => return Err(in_component("files must be a list".into())),
    };
    Ok(SpinComponent {
        id: id.to_string(),
        function,
        source,
        config,
        variables,
        secrets,
        files,
        exclude_files: strings("exclude_files")?,
    })
}

/// One entry of `files`: a pattern, or `{ source = "dir", destination = "/path" }`.
fn file_mount(item: &Value) -> Result<FileMount, String> {
    match item {
        Value::String(pattern) => Ok(FileMount::Pattern(pattern.clone())),
        Value::Table(t) => {
            let field = |key: &str| {
                match t.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(format!(
                    "a files entry that is a table needs `source` and `destination` strings, not {t}"
                )),
            }
            };
            let (source, destination) = (field("source")?, field("destination")?);
            if !destination.starts_with('/') || destination.split('/').any(|part| part == "..") {
                return Err(format!(
                    "files destination {destination:?} must be an absolute path without `..`"
                ));
            }
            Ok(FileMount::Directory {
                source,
                destination,
            })
        }
        other => Err(format!(
            "a files entry is a pattern or {{ source, destination }}, not {other}"
        )),
    }
}

/// A Spin outbound entry as wafer's allowlist takes it, or why not.
fn outbound(entry: &str) -> Result<String, String> {
    if entry == "insecure:allow-all" {
        return Ok("*://*:*".into());
    }
    let scheme = entry.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("http" | "https" | "redis" | "postgres" | "*") | None => {}
        Some(other) => return Err(format!("wafer has no {other} client")),
    }
    let host = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    if host == "self" || host.starts_with("self:") {
        // The application's own routes: wafer's `http://self` entry, whatever the scheme and port.
        return Ok("http://self".into());
    }
    Ok(entry.to_string())
}

/// Where a Spin route is mounted in wafer, with a note when wafer matches it more broadly.
fn mount(base: &str, route: &str) -> Result<(String, Option<String>), String> {
    let base = base.trim_end_matches('/');
    let joined = format!("{base}/{}", route.trim_start_matches('/'));
    let path = match joined.strip_suffix("/...") {
        Some(prefix) => prefix.to_string(),
        None => joined.trim_end_matches('/').to_string(),
    };
    let mut kept = Vec::new();
    let mut parameter = false;
    for segment in path.split('/').skip(1) {
        if segment.starts_with(':') || segment == "..." {
            parameter = true;
            break;
        }
        kept.push(segment);
    }
    let mounted = format!("/{}", kept.join("/"));
    let note = parameter.then(|| {
        format!("route {route:?} has parameters: wafer mounts it at {mounted}, with what is below")
    });
    Ok((mounted, note))
}

/// `s` in function-name form: lowercase letters, digits and `-`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The function a component becomes: `APP-COMPONENT`, or, past 63 characters, as much of it as fits
/// followed by a digest of the whole, so names stay distinct.
fn function_name(app: &str, id: &str) -> String {
    let full = format!("{app}-{}", slug(id));
    if full.len() <= MAX_NAME {
        return full;
    }
    let digest = crate::oci::sha256_hex(full.as_bytes());
    let keep = &full[..MAX_NAME - 9];
    format!("{}-{}", keep.trim_end_matches('-'), &digest[..8])
}

#[cfg(test)]
mod tests;
