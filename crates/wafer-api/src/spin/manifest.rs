//! Reading a Spin manifest, version 1 (`spin_manifest_version = "1"` or `spin_version = "1"`,
//! `[[component]]` with its own `trigger`) or 2 (`spin_manifest_version = 2`, `[[trigger.http]]` and
//! `[component.NAME]`), into one shape, [`Manifest`], that `mod.rs` maps onto wafer functions. Fields
//! wafer does not use are collected as notes, never dropped silently.

use toml::{Table, Value};

/// A manifest of either version, as far as wafer reads it.
#[derive(Debug, Default)]
pub(super) struct Manifest {
    pub(super) name: String,
    /// The HTTP trigger's base path (`/` unless set).
    pub(super) base: String,
    /// `[variables]`: each name with its declaration (`default`, `required`, `secret`).
    pub(super) variables: Table,
    /// HTTP triggers, in order.
    pub(super) routes: Vec<HttpTrigger>,
    /// Components by id, in order, with their tables.
    pub(super) components: Vec<(String, Table)>,
    /// What wafer does not honour.
    pub(super) notes: Vec<String>,
}

/// One HTTP trigger: the component it runs, where, and how.
#[derive(Debug)]
pub(super) struct HttpTrigger {
    pub(super) component: String,
    /// The route as written, or `None` for a private component (reachable by no route).
    pub(super) route: Option<String>,
    /// `executor = { type = "wagi", … }`.
    pub(super) wagi: bool,
}

/// Reads `text`.
pub(super) fn read(text: &str) -> Result<Manifest, String> {
    let doc: Table =
        toml::from_str(text).map_err(|e| format!("the manifest is not valid TOML: {e}"))?;
    match (doc.get("spin_manifest_version"), doc.get("spin_version")) {
        (Some(Value::Integer(2)), _) => version2(doc),
        (Some(Value::String(v)), _) | (None, Some(Value::String(v))) if v == "1" => version1(doc),
        (Some(other), _) => Err(format!(
            "spin_manifest_version {other} is not one wafer reads (1 or 2)"
        )),
        (None, _) => Err("not a Spin manifest: it has no spin_manifest_version".into()),
    }
}

fn table<'a>(value: Option<&'a Value>, what: &str) -> Result<Option<&'a Table>, String> {
    match value {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t)),
        Some(_) => Err(format!("{what} must be a table")),
    }
}

fn string(value: Option<&Value>, what: &str) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{what} must be a string")),
    }
}

/// Reads an executor table: whether it is WAGI, noting what of it wafer ignores.
fn executor(
    value: Option<&Value>,
    component: &str,
    notes: &mut Vec<String>,
) -> Result<bool, String> {
    let Some(executor) = table(value, "an executor")? else {
        return Ok(false);
    };
    match string(executor.get("type"), "executor.type")?.as_deref() {
        None | Some("spin") | Some("http") => Ok(false),
        Some("wagi") => {
            for key in executor.keys().filter(|k| *k != "type") {
                notes.push(format!(
                    "component `{component}`: the WAGI executor's `{key}` is ignored (wafer runs \
                     `_start` with the function's name as argv[0])"
                ));
            }
            Ok(true)
        }
        Some(other) => Err(format!(
            "component `{component}`: unknown executor type `{other}`"
        )),
    }
}

/// An HTTP trigger's route: `None` for `{ private = true }`.
fn route(value: Option<&Value>, component: &str) -> Result<Option<String>, String> {
    match value {
        Some(Value::String(route)) => Ok(Some(route.clone())),
        Some(Value::Table(t)) if t.get("private") == Some(&Value::Boolean(true)) => Ok(None),
        _ => Err(format!(
            "component `{component}`: a route is a path such as \"/hello/...\", or {{ private = true }}"
        )),
    }
}

fn version2(mut doc: Table) -> Result<Manifest, String> {
    let mut m = Manifest {
        base: "/".into(),
        ..Manifest::default()
    };
    let application = table(doc.get("application"), "[application]")?
        .ok_or("the manifest has no [application]")?;
    m.name = string(application.get("name"), "application.name")?
        .ok_or("the application has no name")?;
    if let Some(triggers) = table(application.get("trigger"), "application.trigger")? {
        for (kind, settings) in triggers {
            if kind == "http" {
                if let Some(base) =
                    table(Some(settings), "application.trigger.http")?.and_then(|t| t.get("base"))
                {
                    m.base =
                        string(Some(base), "application.trigger.http.base")?.unwrap_or_default();
                }
            } else {
                m.notes.push(format!(
                    "application.trigger.{kind} is ignored: wafer has no {kind} trigger"
                ));
            }
        }
    }
    if let Some(Value::Table(variables)) = doc.remove("variables") {
        m.variables = variables;
    }
    if let Some(Value::Table(components)) = doc.remove("component") {
        for (id, component) in components {
            match component {
                Value::Table(t) => m.components.push((id, t)),
                _ => return Err(format!("[component.{id}] must be a table")),
            }
        }
    }
    let triggers = table(doc.get("trigger"), "[trigger]")?
        .cloned()
        .unwrap_or_default();
    for (kind, list) in triggers {
        let Value::Array(list) = list else {
            return Err(format!(
                "trigger.{kind} must be an array of tables ([[trigger.{kind}]])"
            ));
        };
        for (i, trigger) in list.into_iter().enumerate() {
            let Value::Table(trigger) = trigger else {
                return Err(format!("trigger.{kind} entries must be tables"));
            };
            let component = match trigger.get("component") {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Table(inline)) => {
                    let id = string(trigger.get("id"), "trigger id")?
                        .unwrap_or_else(|| format!("{kind}-{}", i + 1));
                    m.components.push((id.clone(), inline.clone()));
                    id
                }
                _ => return Err(format!("trigger.{kind} #{}: it names no component", i + 1)),
            };
            if kind != "http" {
                m.notes.push(format!(
                    "trigger.{kind} (component `{component}`) is not deployed: wafer has no {kind} trigger"
                ));
                continue;
            }
            for key in trigger.keys() {
                if !["route", "component", "executor", "id"].contains(&key.as_str()) {
                    m.notes
                        .push(format!("trigger.http `{component}`: `{key}` is ignored"));
                }
            }
            let wagi = executor(trigger.get("executor"), &component, &mut m.notes)?;
            m.routes.push(HttpTrigger {
                route: route(trigger.get("route"), &component)?,
                component,
                wagi,
            });
        }
    }
    for key in doc.keys() {
        if !["spin_manifest_version", "application", "trigger"].contains(&key.as_str()) {
            m.notes.push(format!("`{key}` is ignored"));
        }
    }
    Ok(m)
}

fn version1(doc: Table) -> Result<Manifest, String> {
    let mut m = Manifest {
        name: string(doc.get("name"), "name")?.ok_or("the application has no name")?,
        base: "/".into(),
        ..Manifest::default()
    };
    let trigger = table(doc.get("trigger"), "trigger")?.ok_or("the manifest has no trigger")?;
    let kind = string(trigger.get("type"), "trigger.type")?.unwrap_or_default();
    if let Some(base) = string(trigger.get("base"), "trigger.base")? {
        m.base = base;
    }
    if let Some(Value::Table(variables)) = doc.get("variables") {
        m.variables = variables.clone();
    }
    let components = match doc.get("component") {
        Some(Value::Array(list)) => list.clone(),
        None => Vec::new(),
        Some(_) => return Err("component must be an array of tables ([[component]])".into()),
    };
    for component in components {
        let Value::Table(mut component) = component else {
            return Err("[[component]] entries must be tables".into());
        };
        let id = string(component.get("id"), "component.id")?.ok_or("a component has no id")?;
        if kind != "http" {
            m.notes.push(format!(
                "component `{id}` is not deployed: wafer has no {kind} trigger"
            ));
            continue;
        }
        let trigger = match component.remove("trigger") {
            Some(Value::Table(t)) => t,
            _ => return Err(format!("component `{id}` has no [component.trigger]")),
        };
        let wagi = executor(trigger.get("executor"), &id, &mut m.notes)?;
        m.routes.push(HttpTrigger {
            component: id.clone(),
            route: route(trigger.get("route"), &id)?,
            wagi,
        });
        // Version 1's `config` is version 2's component `variables`; `allowed_http_hosts` its
        // `allowed_outbound_hosts`.
        if let Some(config) = component.remove("config") {
            component.insert("variables".into(), config);
        }
        component.remove("id");
        m.components.push((id, component));
    }
    for key in doc.keys() {
        if ![
            "spin_manifest_version",
            "spin_version",
            "name",
            "trigger",
            "variables",
            "component",
            "version",
            "description",
            "authors",
        ]
        .contains(&key.as_str())
        {
            m.notes.push(format!("`{key}` is ignored"));
        }
    }
    Ok(m)
}
