//! `wafer execution ID`, `wafer executions N`, `wafer retry ID`, `wafer redrive N`, `wafer logs N
//! [-f]` and `wafer stats N`.

use crate::cli::{ExecutionArgs, ExecutionsArgs, LogsArgs, Output, RedriveArgs, StatsArgs};
use crate::client::Client;
use crate::output;
use anyhow::Context;
use futures_util::StreamExt;
use std::process::ExitCode;
use wafer_api::{
    AsyncAccepted, Execution, ExecutionList, ExecutionStats, LogEntry, LogList, Redriven, Summary,
};

pub async fn show(args: ExecutionArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let e: Execution = client.get(&format!("/v1/executions/{}", args.id)).await?;
    if args.client.output == Output::Json {
        output::json(&e)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![
        format!("execution  {}", e.id),
        format!("function   {} (version {})", e.function, e.version),
        format!("trigger    {}", e.trigger),
        format!(
            "status     {} (attempt {} of {})",
            e.status, e.attempts, e.max_attempts
        ),
        format!("queued     {}", e.queued_at),
    ];
    let optional = [
        ("started", e.started_at.clone()),
        ("finished", e.finished_at.clone()),
        ("next try", e.next_attempt_at.clone()),
        ("duration", e.duration_ms.map(|ms| format!("{ms:.3} ms"))),
        ("http", e.http_status.map(|s| s.to_string())),
        ("exit code", e.exit_code.map(|c| c.to_string())),
        ("error", e.error.clone()),
        (
            "used",
            e.usage.map(|u| {
                format!(
                    "{:.3} ms CPU, {} KiB peak memory, {} µs to instantiate{}",
                    u.cpu_us as f64 / 1000.0,
                    u.peak_memory_bytes / 1024,
                    u.instantiate_us,
                    u.fuel_consumed
                        .map(|f| format!(", {f} fuel"))
                        .unwrap_or_default()
                )
            }),
        ),
        (
            "callback",
            e.callback_url
                .as_ref()
                .map(|url| format!("{url} ({})", e.callback_state.as_deref().unwrap_or("-"))),
        ),
    ];
    for (label, value) in optional {
        if let Some(value) = value {
            lines.push(format!("{label:<10} {value}"));
        }
    }
    println!("{}", lines.join("\n"));
    if let Some(out) = &e.output {
        let cut = if e.output_truncated {
            " (truncated)"
        } else {
            ""
        };
        println!("output{cut}:\n{out}");
    }
    if !e.logs.is_empty() {
        println!("logs:");
        for line in &e.logs {
            println!(
                "  {} {} {}: {}",
                line.at, line.stream, line.level, line.line
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `wafer retry ID`.
pub async fn retry(args: ExecutionArgs) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/executions/{}/retry", args.id);
    let accepted: AsyncAccepted = Client::new(&args.client)
        .post_json(&path, &serde_json::json!({}))
        .await?;
    let text = format!(
        "execution {id} is queued again\n  wafer execution {id}",
        id = accepted.execution_id
    );
    output::message(args.client.output, &accepted, &text)?;
    Ok(ExitCode::SUCCESS)
}

/// `wafer redrive NAME [--since 6h]`.
pub async fn redrive(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/functions/{}/redrive", args.name);
    if let Some(since) = &args.since {
        path.push_str(&format!("?since={since}"));
    }
    let redriven: Redriven = Client::new(&args.client)
        .post_json(&path, &serde_json::json!({}))
        .await?;
    let text = format!(
        "{} dead or expired executions of {} are queued again",
        redriven.redriven, args.name
    );
    output::message(args.client.output, &redriven, &text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(args: ExecutionsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(status) = args.status {
        query.push(("status", status));
    }
    if let Some(before) = args.before {
        query.push(("before", before));
    }
    let page: ExecutionList = client
        .get_query(&format!("/v1/functions/{}/executions", args.name), &query)
        .await?;
    let rows = page
        .executions
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.trigger.to_string(),
                e.status.to_string(),
                e.attempts.to_string(),
                e.queued_at.clone(),
                e.duration_ms
                    .map(|ms| format!("{ms:.2}"))
                    .unwrap_or_default(),
                e.http_status
                    .map(|s| s.to_string())
                    .or(e.exit_code.map(|c| format!("exit {c}")))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        args.client.output,
        &page,
        &[
            "ID", "TRIGGER", "STATUS", "ATTEMPTS", "QUEUED", "MS", "RESULT",
        ],
        rows,
    )?;
    if let (Some(next), Output::Text) = (&page.next, args.client.output) {
        println!("more: wafer executions {} --before {next}", args.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// One log line as people read it.
fn print_line(output: Output, line: &LogEntry) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string(line)?),
        Output::Text => println!(
            "{} {} {} {}: {}",
            line.at, line.execution_id, line.stream, line.level, line.line
        ),
    }
    Ok(())
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let path = format!("/v1/functions/{}/logs", args.name);
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(level) = args.level {
        query.push(("level", level));
    }
    if !args.follow {
        let list: LogList = client.get_query(&path, &query).await?;
        for line in &list.logs {
            print_line(args.client.output, line)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    query.push(("follow", "true".into()));
    let response = client.stream(&path, &query).await?;
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk.context("the log stream broke off")?);
        // Server-sent events: `data:` lines carry the JSON of one log line.
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            if let Some(data) = text.trim_end().strip_prefix("data:") {
                let entry: LogEntry = serde_json::from_str(data.trim_start())
                    .context("the server sent a log line that is not valid JSON")?;
                print_line(args.client.output, &entry)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    let query: Vec<(&str, String)> = args.since.iter().map(|s| ("since", s.clone())).collect();
    let stats: ExecutionStats = client
        .get_query(&format!("/v1/functions/{}/stats", args.name), &query)
        .await?;
    let row = |what: &str, s: &Summary, unit: &str, scale: f64| {
        vec![
            what.to_string(),
            format!("{:.3}{unit}", s.min / scale),
            format!("{:.3}{unit}", s.avg / scale),
            format!("{:.3}{unit}", s.max / scale),
        ]
    };
    if args.client.output == Output::Text {
        let by_status: Vec<String> = stats
            .by_status
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        println!(
            "{}: {} executions ({})",
            stats.function,
            stats.count,
            by_status.join(", ")
        );
        if let (Some(window), Some(since)) = (&stats.window, &args.since) {
            let window = &window.traffic;
            let ms = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
            println!(
                "last {since}: {} invocations, {} failed ({:.1}%), p50 {}, p99 {}",
                window.invocations,
                window.failed,
                window.error_rate * 100.0,
                ms(window.p50_ms),
                ms(window.p99_ms)
            );
        }
    }
    output::table(
        args.client.output,
        &stats,
        &["", "MIN", "AVG", "MAX"],
        vec![
            row("duration", &stats.duration_ms, " ms", 1.0),
            row("cpu", &stats.cpu_ms, " ms", 1.0),
            row("memory", &stats.peak_memory_bytes, " MiB", 1024.0 * 1024.0),
            row("instantiate", &stats.instantiate_us, " µs", 1.0),
        ],
    )?;
    Ok(ExitCode::SUCCESS)
}
