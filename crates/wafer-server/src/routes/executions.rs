//! The execution endpoints: records, logs (listed or followed over server-sent events) and summaries.

use super::extract::{Path, Query};
use crate::app::App;
use crate::auth::{Caller, Permission};
use crate::error::Error;
use crate::validate;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use std::convert::Infallible;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{
    ErrorBody, Execution, ExecutionList, ExecutionStats, ExecutionStatus, LogLevel, LogList,
    QueueView, TrafficList,
};
use wafer_store::Page;

/// The most executions or log lines one page holds.
const MAX_PAGE: u32 = 1000;

/// `GET /v1/executions/{id}`: one execution with its logs.
#[utoipa::path(get, path = "/v1/executions/{id}", operation_id = "getExecution", tag = "executions",
    params(("id" = String, Path, description = "The execution id")),
    responses((status = 200, body = Execution), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Execution>, Error> {
    let execution = app
        .executions
        .get_execution(&id, true)
        .await?
        .ok_or_else(|| Error::NotFound(format!("execution `{id}` does not exist")))?;
    caller.require(Permission::Read, Some(&execution.function))?;
    Ok(Json(execution))
}

/// Which executions to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only executions in this status (`queued`, `running`, `succeeded`, `failed`, `dead`, `expired`).
    status: Option<String>,
    /// Only executions older than this id (the `next` of the previous page).
    before: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u32>,
}

/// `GET /v1/functions/{name}/executions`: a page of a function's executions, newest first.
#[utoipa::path(get, path = "/v1/functions/{name}/executions", operation_id = "listExecutions", tag = "executions",
    params(("name" = String, Path, description = "The function"), ListQuery),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<ExecutionList>, Error> {
    validate::name(&name)?;
    let status = query
        .status
        .map(|s| s.parse::<ExecutionStatus>())
        .transpose()
        .map_err(Error::InvalidRequest)?;
    let limit = page_size(query.limit, 50)?;
    let executions = app
        .executions
        .list_executions(
            Some(&name),
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

/// One server-sent event of a followed log, as the API's description shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LogEvent {
    /// Always `log`.
    #[schema(pattern = "^log$")]
    event: String,
    /// The line's `seq`, to resume from with `after`.
    #[schema(pattern = "^-?[0-9]+$")]
    id: String,
    /// The line as JSON, a LogEntry.
    data: String,
}

/// How often a follower reads again when nothing woke it.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /v1/functions/{name}/logs`: a function's log lines, or with `follow=true` a live stream of them.
#[utoipa::path(get, path = "/v1/functions/{name}/logs", operation_id = "functionLogs", tag = "executions",
    params(("name" = String, Path, description = "The function"), LogsQuery),
    responses(
        (status = 200, description = "The lines as JSON, or with follow=true a text/event-stream of them",
         content((LogList = "application/json"), (LogEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody)))]
pub async fn logs(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Response, Error> {
    validate::name(&name)?;
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

/// Which window of finished attempts to add to a function's summary.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Add `window`: every attempt that ended this long ago or later (`15m`, `1h`, `24h`; 1 minute to
    /// 48 hours), counted as it ended, pruned and dropped records included.
    since: Option<String>,
    /// The window's bucket length, a whole number of minutes (`1m`, `5m`, `1h`; default `1m`).
    bucket: Option<String>,
}

/// The longest window: what rollups are kept for.
const MAX_WINDOW_MS: u64 = 48 * 3_600_000;

/// `GET /v1/functions/{name}/stats`: a function's executions summarised, and with `since`, its finished
/// attempts over that window in buckets (from per-minute rollups, which outlive the records).
#[utoipa::path(get, path = "/v1/functions/{name}/stats", operation_id = "functionStats", tag = "executions",
    params(("name" = String, Path, description = "The function"), StatsQuery),
    responses((status = 200, body = ExecutionStats), (status = 400, body = ErrorBody)))]
pub async fn stats(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<ExecutionStats>, Error> {
    validate::name(&name)?;
    let window = match &query.since {
        Some(since) => Some(window(&app, &name, since, query.bucket.as_deref()).await?),
        None if query.bucket.is_some() => {
            return Err(Error::InvalidRequest("`bucket` needs `since`".into()))
        }
        None => None,
    };
    let mut stats = app.executions.stats(&name).await?;
    stats.window = window;
    Ok(Json(stats))
}

/// `function`'s finished attempts from `since` ago to now, in buckets of `bucket`: the stored rollups
/// and this node's pending ones.
async fn window(
    app: &App,
    function: &str,
    since: &str,
    bucket: Option<&str>,
) -> Result<wafer_api::StatsWindow, Error> {
    let invalid = |what: &str, e: String| Error::InvalidRequest(format!("`{what}`: {e}"));
    let since_ms = window_length(since)?;
    let bucket_ms = match bucket {
        Some(b) => wafer_api::units::parse_timeout_ms(b).map_err(|e| invalid("bucket", e))?,
        None => 60_000,
    };
    if bucket_ms == 0 || bucket_ms % 60_000 != 0 || bucket_ms > since_ms {
        return Err(invalid(
            "bucket",
            "use a whole number of minutes, no longer than `since`".into(),
        ));
    }
    let now = crate::journal::now_ms();
    let start = now - since_ms as i64;
    let rollups = rollups(app, Some(function), start).await?;
    Ok(wafer_api::StatsWindow::from_minutes(
        &rollups,
        start,
        now,
        bucket_ms / 60_000,
    ))
}

/// A window's length from `since` (`15m`, `1h`), in milliseconds: 1 minute to 48 hours.
fn window_length(since: &str) -> Result<u64, Error> {
    let invalid = |e: String| Error::InvalidRequest(format!("`since`: {e}"));
    let ms = wafer_api::units::parse_timeout_ms(since).map_err(invalid)?;
    if !(60_000..=MAX_WINDOW_MS).contains(&ms) {
        return Err(invalid("use 1m to 48h".into()));
    }
    Ok(ms)
}

/// The rollups of `function` (or every function) of the minutes from the one holding `start` on: the
/// stored ones and this node's pending ones.
async fn rollups(
    app: &App,
    function: Option<&str>,
    start: i64,
) -> Result<Vec<wafer_api::MinuteRollup>, Error> {
    let first = start - start.rem_euclid(60_000);
    let stored = app.executions.rollups(function, first);
    Ok(app.rollups.with_pending(stored, function, first).await?)
}

/// The window of the functions overview.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrafficQuery {
    /// Count the attempts that ended this long ago or later (`15m`, `1h`, `24h`; 1 minute to 48
    /// hours; default `1h`).
    since: Option<String>,
}

/// `GET /v1/stats`: every function's finished attempts over one window — invocations, failures,
/// error rate, p50/p99 — from the per-minute rollups; functions without attempts in it are left out.
#[utoipa::path(get, path = "/v1/stats", operation_id = "traffic", tag = "executions",
    params(TrafficQuery),
    responses((status = 200, body = TrafficList), (status = 400, body = ErrorBody)))]
pub async fn traffic(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<TrafficQuery>,
) -> Result<Json<TrafficList>, Error> {
    let since_ms = window_length(query.since.as_deref().unwrap_or("1h"))?;
    let start = crate::journal::now_ms() - since_ms as i64;
    let rollups = rollups(&app, None, start).await?;
    let mut traffic = TrafficList::from_minutes(&rollups, start);
    // A key sees the functions it may read.
    traffic
        .functions
        .retain(|f| caller.allows(Permission::Read, Some(&f.function)));
    Ok(Json(traffic))
}

/// How many of the newest queued executions the queue view looks through for retries, and how many
/// dead ones it lists.
const QUEUE_LOOK: u32 = 200;
const QUEUE_DEAD: u32 = 20;

/// `GET /v1/queue`: the async queue's depth and age, the executions waiting to be retried, and the
/// newest dead letters (dead or expired).
#[utoipa::path(get, path = "/v1/queue", operation_id = "queue", tag = "executions",
    responses((status = 200, body = QueueView)))]
pub async fn queue(State(app): State<Arc<App>>) -> Result<Json<QueueView>, Error> {
    let stats = app.executions.queue_stats().await?;
    let page = |status, limit| Page {
        status: Some(status),
        before: None,
        limit,
    };
    let queued = app
        .executions
        .list_executions(None, page(ExecutionStatus::Queued, QUEUE_LOOK))
        .await?;
    let mut dead = app
        .executions
        .list_executions(None, page(ExecutionStatus::Dead, QUEUE_DEAD))
        .await?;
    dead.extend(
        app.executions
            .list_executions(None, page(ExecutionStatus::Expired, QUEUE_DEAD))
            .await?,
    );
    dead.sort_by(|a, b| b.id.cmp(&a.id));
    dead.truncate(QUEUE_DEAD as usize);
    Ok(Json(QueueView {
        queued: stats.queued,
        running: stats.running,
        oldest_age_ms: stats
            .oldest_age
            .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        retrying: queued.into_iter().filter(|e| e.attempts > 0).collect(),
        dead,
    }))
}
