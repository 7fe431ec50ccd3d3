//! `wafer keys create --scope deploy:hello-* --expires 30d`, `wafer keys ls`, `wafer keys revoke ID`,
//! and `wafer audit`.

use crate::cli::{AuditArgs, KeysArgs, KeysCommand};
use crate::client::Client;
use crate::output;
use std::process::ExitCode;
use wafer_api::{ApiKey, ApiKeyList, AuditLog, CreatedKey, KeyRequest};

pub async fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    match args.command {
        KeysCommand::Create {
            scope,
            name,
            expires,
            rate_limit,
        } => {
            let request = KeyRequest {
                name: name.unwrap_or_default(),
                scopes: scope,
                expires_in: expires,
                rate_limit,
            };
            let created: CreatedKey = client.post_json("/v1/keys", &request).await?;
            let text = format!(
                "created API key {} ({})\n\
                 token: {}\n\
                 send it as `Authorization: Bearer <token>`, or as WAFER_TOKEN to the CLI; SigV4 \
                 clients use the id as their access key id and `{}` as their secret access key.\n\
                 Neither is shown again.",
                created.key.id,
                created.key.scopes.join(" "),
                created.token,
                created.secret
            );
            output::message(args.client.output, &created, &text)?;
        }
        KeysCommand::Ls => {
            let list: ApiKeyList = client.get("/v1/keys").await?;
            let rows = list.keys.iter().map(row).collect();
            let headers = ["ID", "NAME", "SCOPES", "STATUS", "EXPIRES", "RATE"];
            output::table(args.client.output, &list, &headers, rows)?;
        }
        KeysCommand::Revoke { id } => {
            let path = format!("/v1/keys/{id}/revoke");
            let revoked: ApiKey = client.post_json(&path, &serde_json::json!({})).await?;
            let text = format!("revoked API key {id}");
            output::message(args.client.output, &revoked, &text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn row(key: &ApiKey) -> Vec<String> {
    vec![
        key.id.clone(),
        key.name.clone(),
        key.scopes.join(" "),
        key.status.clone(),
        key.expires_at.clone().unwrap_or_else(|| "never".into()),
        key.rate_limit
            .map_or_else(|| "-".into(), |r| format!("{r}/s")),
    ]
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(before) = args.before {
        query.push(("before", before.to_string()));
    }
    let log: AuditLog = client.get_query("/v1/audit", &query).await?;
    let rows = log
        .entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone().unwrap_or_default(),
                e.status.to_string(),
            ]
        })
        .collect();
    let headers = ["SEQ", "AT", "WHO", "WHAT", "TARGET", "STATUS"];
    output::table(args.client.output, &log, &headers, rows)?;
    Ok(ExitCode::SUCCESS)
}
