//! `wafer kv …` (key-value stores) and `wafer config NAME …` (a function's variables and secrets).

use crate::cli::{ConfigArgs, KvArgs, KvCommand, Output};
use crate::client::Client;
use crate::cmd::invoke::read_data;
use crate::output;
use anyhow::Context;
use reqwest::Method;
use std::io::Write;
use std::process::ExitCode;
use wafer_api::{ConfigUpdate, ConfigView, KeyList};

/// Escapes a path segment.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn kv(args: KvArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let output = args.client.output;
    match args.command {
        KvCommand::Set { store, key, value } => {
            let value = read_data(Some(&value)).await?;
            let path = format!("/v1/kv/{}/{}", segment(&store), segment(&key));
            client.raw(Method::PUT, &path, Some(value)).await?;
            let done = serde_json::json!({"store": store, "key": key});
            output::message(output, &done, &format!("set {key} in {store}"))?;
        }
        KvCommand::Get { store, key } => {
            let path = format!("/v1/kv/{}/{}", segment(&store), segment(&key));
            let value = client.raw(Method::GET, &path, None).await?.bytes().await?;
            let mut stdout = std::io::stdout();
            stdout.write_all(&value).context("cannot write the value")?;
            if output == Output::Text && !value.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
        }
        KvCommand::Ls { store } => {
            let mut all = KeyList {
                store: store.clone(),
                ..KeyList::default()
            };
            let mut cursor: Option<String> = None;
            loop {
                let query: Vec<(&str, String)> =
                    cursor.iter().map(|c| ("cursor", c.clone())).collect();
                let page: KeyList = client
                    .get_query(&format!("/v1/kv/{}", segment(&store)), &query)
                    .await?;
                all.keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let text = all.keys.join("\n");
            output::message(output, &all, &text)?;
        }
        KvCommand::Rm { store, key } => {
            let path = format!("/v1/kv/{}/{}", segment(&store), segment(&key));
            client.raw(Method::DELETE, &path, None).await?;
            let done = serde_json::json!({"store": store, "key": key});
            output::message(output, &done, &format!("deleted {key} from {store}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let path = format!("/v1/functions/{}/config", segment(&args.name));
    let mut current: ConfigView = client.get(&path).await?;
    if !(args.vars.is_empty() && args.secrets.is_empty() && args.unset.is_empty()) {
        let mut update = ConfigUpdate {
            variables: current.variables.clone(),
            ..ConfigUpdate::default()
        };
        for name in &args.unset {
            update.variables.remove(name);
            if current.secrets.contains(name) {
                update.secrets.insert(name.clone(), None);
            }
        }
        for (name, value) in args.vars {
            update.secrets.remove(&name);
            if current.secrets.contains(&name) {
                update.secrets.insert(name.clone(), None);
            }
            update.variables.insert(name, value);
        }
        for (name, value) in args.secrets {
            update.variables.remove(&name);
            update.secrets.insert(name, Some(value));
        }
        current = client.put_json(&path, &update).await?;
    }
    let mut lines: Vec<String> = current
        .variables
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    lines.extend(current.secrets.iter().map(|k| format!("{k}=(secret)")));
    output::message(args.client.output, &current, &lines.join("\n"))?;
    Ok(ExitCode::SUCCESS)
}
