//! `wafer invoke N [--data STR|@FILE|@-] [--qualifier ALIAS|VERSION] [--async [--callback URL]
//! [--idempotency-key K]]`.
//!
//! A command function's reply is its exit code and output: for people, its stdout and stderr are written
//! out and its exit code becomes ours; with `--output json` the reply is printed as is. An http or wagi
//! function's response body is written to stdout, and a failing status makes the exit code non-zero.
//! With `--async` the invocation is queued and its execution id printed.

use crate::cli::{InvokeArgs, Output};
use crate::client::{AsyncOptions, Client};
use crate::output;
use anyhow::Context;
use std::io::{Read, Write};
use std::process::ExitCode;
use wafer_api::CommandOutput;

/// The header the server sets on a command function's job reply.
const KIND_HEADER: &str = "x-wafer-kind";

/// The bytes a data argument names: the string itself, `@FILE`'s contents, or stdin for `@-`.
pub async fn read_data(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    Ok(match data {
        None => Vec::new(),
        Some("@-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
        Some(data) => match data.strip_prefix('@') {
            Some(path) => tokio::fs::read(path)
                .await
                .with_context(|| format!("cannot read {path}"))?,
            None => data.as_bytes().to_vec(),
        },
    })
}

pub async fn run(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let body = read_data(args.data.as_deref()).await?;
    let client = Client::new(&args.client);
    if args.run_async {
        let options = AsyncOptions {
            callback: args.callback.as_deref(),
            qualifier: args.qualifier.as_deref(),
            idempotency_key: args.idempotency_key.as_deref(),
        };
        let accepted = client.invoke_async(&args.name, body, &options).await?;
        let text = format!(
            "queued execution {id}\n  wafer execution {id}",
            id = accepted.execution_id
        );
        output::message(args.client.output, &accepted, &text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let response = client
        .invoke(&args.name, body, args.qualifier.as_deref())
        .await?;
    let status = response.status();
    let is_command = response
        .headers()
        .get(KIND_HEADER)
        .is_some_and(|v| v == "command");
    let bytes = response.bytes().await?;
    if is_command {
        let reply: CommandOutput =
            serde_json::from_slice(&bytes).context("the command reply is not valid JSON")?;
        if args.client.output == Output::Json {
            output::json(&reply)?;
        } else {
            print!("{}", reply.stdout);
            eprint!("{}", reply.stderr);
        }
        return Ok(ExitCode::from(u8::try_from(reply.exit_code).unwrap_or(1)));
    }
    std::io::stdout().write_all(&bytes)?;
    if status.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: the function answered {status}");
        Ok(ExitCode::FAILURE)
    }
}
