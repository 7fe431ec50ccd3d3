//! The execution endpoints: records, logs (listed or followed over server-sent events) and summaries.

use crate::app::App;
use crate::error::Error;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{
    ErrorBody, Execution, ExecutionList, ExecutionStats, ExecutionStatus, LogLevel, LogList,
};
use wafer_store::Page;

/// The most executions or log lines one page holds.
const MAX_PAGE: u32 = 1000;

/// `GET /v1/executions/{id}`: one execution with its logs.
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "The execution id")),
    responses((status = 200, body = Execution), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Execution>, Error> {
    app.executions
        .get_execution(&id, true)
        .await?
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("execution `{id}` does not exist")))
}

/// Which executions to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this status (`queued`, `running`, `succeeded`, `failed`, `dead`).
    status: Option<String>,
    /// Only executions older than this id (the `next` of the previous page).
    before: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/functions/{name}/executions`: a page of a function's executions, newest first.
#[utoipa::path(get, path = "/v1/functions/{name}/executions", tag = "executions",
    params(("name" = String, Path, description = "The function"), ListQuery),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ExecutionList>, Error> {
    let status = query
        .status
        .map(|s| s.parse::<ExecutionStatus>())
        .transpose()
        .map_err(Error::InvalidRequest)?;
    let limit = page_size(query.limit, 50)?;
    let executions = app
        .executions
        .list_executions(
            &name,
            Page {
                status,
                before: query.before,
                limit,
            },
        )
        .await?;
    let next = (executions.len() == limit as usize)
        .then(|| executions.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(ExecutionList { executions, next }))
}

fn page_size(asked: Option<u32>, default: u32) -> Result<u32, Error> {
    match asked.unwrap_or(default) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(Error::InvalidRequest(format!(
            "limit must be between 1 and {MAX_PAGE}, not {n}"
        ))),
    }
}

/// Which log lines to read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only lines after this `seq`; without it, the latest `limit` lines.
    after: Option<i64>,
    /// Lines per page, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// Only lines at this level or above: `trace`, `debug`, `info`, `warn`, `error` or `critical`
    /// (default: all).
    level: Option<String>,
    /// Keep the response open and stream new lines as server-sent events (`event: log`, `id: seq`,
    /// the line as JSON data).
    #[serde(default)]
    follow: bool,
}

/// How often a follower reads again when nothing woke it.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /v1/functions/{name}/logs`: a function's log lines, or with `follow=true` a live stream of them.
#[utoipa::path(get, path = "/v1/functions/{name}/logs", tag = "executions",
    params(("name" = String, Path, description = "The function"), LogsQuery),
    responses(
        (status = 200, description = "The lines as JSON, or with follow=true a text/event-stream of them",
         body = LogList),
        (status = 400, body = ErrorBody)))]
pub async fn logs(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, Error> {
    let limit = page_size(query.limit, 100)?;
    let level = query
        .level
        .map(|l| l.parse::<LogLevel>())
        .transpose()
        .map_err(Error::InvalidRequest)?
        .unwrap_or(LogLevel::Trace);
    let first = app
        .executions
        .logs(&name, query.after, limit, level)
        .await?;
    if !query.follow {
        return Ok(Json(LogList { logs: first }).into_response());
    }
    let mut committed = app.journal.committed();
    committed.mark_unchanged();
    let mut logged = app.cluster.events().logs();
    logged.mark_unchanged();
    let after = query.after.unwrap_or(0);
    let wakes = (committed, logged);
    let state = (app, name, first, after, wakes);
    let stream = futures_util::stream::unfold(
        state,
        move |(app, name, mut pending, mut after, mut wakes)| async move {
            loop {
                if !pending.is_empty() {
                    let line = pending.remove(0);
                    after = after.max(line.seq);
                    let event = Event::default()
                        .event("log")
                        .id(line.seq.to_string())
                        .json_data(&line)
                        .unwrap_or_else(|_| Event::default().comment("unencodable line"));
                    let state = (app, name, pending, after, wakes);
                    return Some((Ok::<_, Infallible>(event), state));
                }
                // Wait for this node's journal to commit or another node to say it wrote lines (or,
                // in case that word was lost, a while), then read what is new.
                let (committed, logged) = &mut wakes;
                tokio::select! {
                    changed = committed.changed() => changed.ok()?,
                    _ = logged.changed() => {}
                    _ = tokio::time::sleep(FOLLOW_POLL) => {}
                }
                match app
                    .executions
                    .logs(&name, Some(after), MAX_PAGE, level)
                    .await
                {
                    Ok(lines) => pending = lines,
                    Err(e) => {
                        tracing::error!(function = %name, "cannot read logs to follow: {e}");
                        return None;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /v1/functions/{name}/stats`: a function's executions summarised.
#[utoipa::path(get, path = "/v1/functions/{name}/stats", tag = "executions",
    params(("name" = String, Path, description = "The function")),
    responses((status = 200, body = ExecutionStats)))]
pub async fn stats(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<ExecutionStats>, Error> {
    Ok(Json(app.executions.stats(&name).await?))
}
