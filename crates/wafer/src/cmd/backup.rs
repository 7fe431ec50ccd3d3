//! `wafer backup` and `wafer restore`: a one-node data directory copied while its server runs, and
//! restored into a fresh one. A cluster's state is in PostgreSQL, whose own tools back it up.

use crate::cli::{BackupArgs, RestoreArgs};
use crate::cmd::serve::state_place;
use anyhow::Context;
use std::process::ExitCode;
use wafer_store::BackupSummary;

/// What to do instead for a cluster.
const CLUSTER_GUIDANCE: &str = "\
a cluster's state is in its PostgreSQL database (module bytes included), so back it up with \
PostgreSQL's tools, e.g.
    pg_dump --format=custom --file wafer.dump \"$WAFER_DATABASE\"
and restore it into an empty database with
    pg_restore --no-owner --dbname \"$NEW_DATABASE_URL\" wafer.dump
Keep the secrets key (--secrets-key-file or WAFER_SECRETS_KEY) with the dump: its secrets are sealed \
with it. Each node's data directory holds only caches and its node id, and needs no backup.";

pub async fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, database) = state_place(args.config.as_deref(), args.data_dir, args.database)?;
    if database.is_some() {
        anyhow::bail!("{CLUSTER_GUIDANCE}");
    }
    let into = args.dir.clone();
    let summary =
        tokio::task::spawn_blocking(move || wafer_store::backup::backup(&data_dir, &into))
            .await?
            .with_context(|| format!("backup into {} failed", args.dir.display()))?;
    println!(
        "backed up into {}: {}",
        args.dir.display(),
        describe(&summary)
    );
    if !summary.secrets_key {
        if let Some(id) = &summary.secrets_key_id {
            println!(
                "its secrets are sealed with key {id}, which is not in the data directory: keep \
                 the key given to the server (--secrets-key-file or WAFER_SECRETS_KEY) with it"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, _) = state_place(args.config.as_deref(), args.data_dir, None)?;
    let (from, to) = (args.dir.clone(), data_dir.clone());
    let summary = tokio::task::spawn_blocking(move || wafer_store::backup::restore(&from, &to))
        .await?
        .with_context(|| format!("restore from {} failed", args.dir.display()))?;
    println!(
        "restored into {} the backup taken at {}: {}",
        data_dir.display(),
        summary.taken_at,
        describe(&summary)
    );
    if let (false, Some(id)) = (summary.secrets_key, &summary.secrets_key_id) {
        println!(
            "start the server with the secrets key {id} (--secrets-key-file or WAFER_SECRETS_KEY)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(summary: &BackupSummary) -> String {
    format!(
        "{} functions, {} versions, {} executions, {} module files, {} function databases, {} bytes",
        summary.functions,
        summary.versions,
        summary.executions,
        summary.modules,
        summary.function_databases,
        summary.bytes
    )
}
