//! `wafer ls`, `wafer versions N`, `wafer rollback N V`, `wafer rm N` and `wafer nodes`.

use crate::cli::{ClientArgs, NameArgs, RollbackArgs};
use crate::client::Client;
use crate::output;
use std::process::ExitCode;
use wafer_api::{FunctionInfo, FunctionList, NodeList, RollbackRequest, VersionList};

pub async fn functions(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let list: FunctionList = Client::new(&args).get("/v1/functions").await?;
    let rows = list
        .functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.live_version.to_string(),
                f.kind.to_string(),
                f.config.routes.join(","),
                format!("{}MiB", f.limits.memory_mb),
                format!("{}ms", f.limits.timeout_ms),
                f.limits
                    .max_concurrency
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                f.updated_at.clone(),
            ]
        })
        .collect();
    output::table(
        args.output,
        &list,
        &[
            "NAME",
            "VERSION",
            "KIND",
            "ROUTES",
            "MEMORY",
            "TIMEOUT",
            "CONCURRENCY",
            "UPDATED",
        ],
        rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn versions(args: NameArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/functions/{}/versions", args.name);
    let list: VersionList = Client::new(&args.client).get(&path).await?;
    let rows = list
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                if v.live { "*" } else { "" }.to_string(),
                v.kind.to_string(),
                v.digest.chars().take(12).collect(),
                v.size.to_string(),
                v.created_at.clone(),
            ]
        })
        .collect();
    output::table(
        args.client.output,
        &list,
        &["VERSION", "LIVE", "KIND", "DIGEST", "SIZE", "CREATED"],
        rows,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/functions/{}/rollback", args.name);
    let body = RollbackRequest {
        version: args.version,
    };
    let function: FunctionInfo = Client::new(&args.client).post_json(&path, &body).await?;
    let text = format!(
        "{} is at version {} (latest {})",
        function.name, function.live_version, function.latest_version
    );
    output::message(args.client.output, &function, &text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn remove(args: NameArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/functions/{}", args.name);
    Client::new(&args.client).delete(&path).await?;
    let value = serde_json::json!({ "deleted": args.name });
    output::message(
        args.client.output,
        &value,
        &format!("deleted {}", args.name),
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn nodes(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let list: NodeList = Client::new(&args).get("/v1/nodes").await?;
    let rows = list
        .nodes
        .iter()
        .map(|n| {
            let lagging = n
                .lagging
                .iter()
                .map(|(name, serving)| format!("{name}@{serving}"))
                .collect::<Vec<_>>();
            vec![
                format!("{}{}", n.id, if n.this_node { " *" } else { "" }),
                n.address.clone(),
                n.version.clone(),
                format!("{}/{}", n.applied, list.feed),
                if lagging.is_empty() {
                    "-".to_string()
                } else {
                    lagging.join(",")
                },
                n.heartbeat_at.clone(),
            ]
        })
        .collect();
    output::table(
        args.output,
        &list,
        &[
            "NODE",
            "ADDRESS",
            "VERSION",
            "APPLIED",
            "LAGGING",
            "HEARTBEAT",
        ],
        rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
