//! The async queue: submission, the workers that run queued executions, retries, and callbacks.
//!
//! A submission is committed to the store before it is acknowledged with 202, so a crash after the answer
//! loses nothing. The dispatcher claims due executions (claiming marks them running and counts the
//! attempt atomically, so no execution runs twice at once) as workers come free. A failed attempt — a trap,
//! a timeout, a status of 300 or more, a non-zero exit — is queued again after an exponential backoff until
//! the function's `max_attempts`, then marked `dead`. At start-up, executions a crash left running are
//! queued again: delivery is at least once. A finished execution with a `callback_url` owes a callback,
//! which is retried until delivered or given up, and survives restarts the same way.

use crate::app::App;
use crate::error::ApiError;
use crate::journal::{self, now_ms};
use crate::registry::Entry;
use crate::trigger::{self, Answer};
use axum::extract::Request;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use wafer_api::{AsyncAccepted, ExecutionStatus, Trigger};
use wafer_engine::{Mount, Tracer};
use wafer_store::{Attempt, Claimed, NewExecution, StoredRequest, Write};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How often idle loops look at the store anyway (another process may share it, clocks move).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Attempts a callback gets, with a doubling wait from one second.
const CALLBACK_ATTEMPTS: u32 = 5;

/// The request header telling the guest which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "x-wafer-attempt";

/// Wakes the dispatcher and the callback sender when there is work.
#[derive(Default)]
pub struct Queue {
    work: Notify,
    callbacks: Notify,
}

impl Queue {
    /// Says there is new work in the queue.
    pub fn wake(&self) {
        self.work.notify_one();
    }
}

/// Stores an async invocation of `entry` and answers 202 with its id.
pub async fn submit(
    app: &App,
    entry: &Entry,
    request: Request,
    callback_url: Option<String>,
) -> Result<AsyncAccepted, ApiError> {
    if let Some(url) = &callback_url {
        check_callback(app, entry, url).await?;
    }
    let (parts, body) = request.into_parts();
    let body = trigger::read_body(body, entry.max_request_bytes, "the request body").await?;
    let id = journal::new_id();
    let path = match parts.uri.query().map(without_invoke_params) {
        Some(query) if !query.is_empty() => format!("/?{query}"),
        _ => "/".to_string(),
    };
    let request = StoredRequest {
        method: parts.method.to_string(),
        path,
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != http::header::AUTHORIZATION)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect(),
    };
    app.journal
        .commit(Write::Insert(NewExecution {
            id: id.clone(),
            function: entry.settings.name.clone(),
            version: entry.version,
            trigger: Trigger::Async,
            max_attempts: entry.max_attempts,
            queued_at: now_ms(),
            request: Some(request),
            body: body.to_vec(),
            callback_url,
            attempt: None,
        }))
        .await?;
    app.queue.wake();
    Ok(AsyncAccepted { execution_id: id })
}

/// A query string without the parameters that steer the invocation itself.
fn without_invoke_params(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && key != "async" && key != "callback_url"
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A callback may go to a host the server allows callbacks to, or one the function may reach itself.
async fn check_callback(app: &App, entry: &Entry, url: &str) -> Result<(), ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_callback", why);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(format!("callback_url {url:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid(format!(
            "callback_url {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    let server = wafer_engine::OutboundPolicy::parse(&app.config.executions.callback_hosts)
        .map_err(ApiError::internal)?;
    if server.permits(&uri).await.is_ok() || entry.settings.outbound.permits(&uri).await.is_ok() {
        return Ok(());
    }
    Err(invalid(format!(
        "callback_url {url:?} is not allowed: its host must be in the server's callback hosts or the \
         function's allowed_outbound_hosts"
    )))
}

/// Starts the dispatcher and the callback sender.
pub fn start(app: &Arc<App>) {
    tokio::spawn(dispatch(app.clone()));
    tokio::spawn(send_callbacks(app.clone()));
}

/// Claims due executions while workers are free, and runs each on its own task.
async fn dispatch(app: Arc<App>) {
    let workers = Arc::new(Semaphore::new(app.config.executions.workers.max(1)));
    loop {
        let free = workers.available_permits();
        if free == 0 {
            // Wait for a worker to come free.
            if let Ok(permit) = workers.clone().acquire_owned().await {
                drop(permit);
            }
            continue;
        }
        let claimed = match app.executions.claim(now_ms(), free as u32).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!("cannot claim queued executions: {e}");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if claimed.is_empty() {
            let wait = match app.executions.next_due().await {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms()).max(1) as u64),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = app.queue.work.notified() => {}
                _ = tokio::time::sleep(wait.min(IDLE_POLL)) => {}
            }
            continue;
        }
        for execution in claimed {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            let app = app.clone();
            tokio::spawn(async move {
                run_attempt(&app, execution).await;
                drop(permit);
            });
        }
    }
}

/// Runs one claimed attempt and records how it ended.
async fn run_attempt(app: &Arc<App>, claimed: Claimed) {
    let started = Instant::now();
    let started_at = now_ms();
    let settings = &app.config.executions;
    let Some(entry) = app.registry.get(&claimed.function) else {
        let outcome = Attempt {
            status: Some(ExecutionStatus::Dead),
            started_at,
            finished_at: now_ms(),
            error: Some(format!(
                "not_found: function `{}` does not exist",
                claimed.function
            )),
            ..Attempt::default()
        };
        finish(app, &claimed, outcome).await;
        return;
    };
    let (tracer, trace) = Tracer::channel();
    let result = attempt(app, &entry, &claimed, tracer).await;
    let trace = trace.await.ok();
    let mut outcome = Attempt {
        version: entry.version,
        started_at,
        ..Attempt::default()
    };
    let (ok, output) = match result {
        Ok((status, exit_code, output)) => {
            outcome.http_status = Some(status);
            outcome.exit_code = exit_code;
            // An async http function must answer 2xx to succeed.
            (status < 300 && exit_code.unwrap_or(0) == 0, Some(output))
        }
        Err(e) => {
            outcome.http_status = Some(e.status().as_u16());
            outcome.error = Some(e.describe());
            (false, None)
        }
    };
    app.metrics.invocation(
        &entry.settings.name,
        entry.kind.as_str(),
        outcome.http_status.unwrap_or(500),
        started.elapsed(),
    );
    journal::close_attempt(&mut outcome, started, trace.as_ref(), output, settings);
    outcome.status = Some(if ok {
        ExecutionStatus::Succeeded
    } else if claimed.attempt < claimed.max_attempts {
        app.metrics.retry(&claimed.function);
        outcome.next_at = Some(now_ms() + backoff(entry.retry_backoff, claimed.attempt));
        ExecutionStatus::Queued
    } else {
        app.metrics.dead(&claimed.function);
        ExecutionStatus::Dead
    });
    finish(app, &claimed, outcome).await;
}

/// Runs the function on the stored request; returns the status, exit code and output.
async fn attempt(
    app: &App,
    entry: &Entry,
    claimed: &Claimed,
    tracer: Tracer,
) -> Result<(u16, Option<i32>, Vec<u8>), ApiError> {
    let stored = claimed.request.clone().unwrap_or_else(|| StoredRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: Vec::new(),
    });
    let prefix = format!("/fn/{}", claimed.function);
    let mut builder = http::Request::builder()
        .method(stored.method.as_str())
        .uri(format!("{prefix}{}", stored.path));
    for (name, value) in &stored.headers {
        builder = builder.header(name, value);
    }
    builder = builder.header(ATTEMPT_HEADER, claimed.attempt);
    let (parts, ()) = builder
        .body(())
        .map_err(|e| ApiError::internal(format!("the stored request is unusable: {e}")))?
        .into_parts();
    let mount = Mount {
        prefix,
        strip_prefix: true,
        client: None,
    };
    let body = bytes::Bytes::from(claimed.body.clone());
    match trigger::execute(app, entry, parts, body, &mount, &claimed.id, tracer).await? {
        Answer::Command(output) => Ok((200, Some(output.exit_code), output.stdout.into_bytes())),
        Answer::Http(response, permit) => {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await;
            drop(permit);
            let body = body.map_err(|e| {
                ApiError::from(wafer_engine::InvokeError::BadResponse(format!(
                    "the response body failed: {e}"
                )))
            })?;
            Ok((status, None, body.to_bytes().to_vec()))
        }
    }
}

/// Records an attempt's end, and wakes the callback sender when a callback is now owed.
async fn finish(app: &App, claimed: &Claimed, outcome: Attempt) {
    let done = outcome.status.is_some_and(ExecutionStatus::is_final);
    let write = Write::Finish {
        id: claimed.id.clone(),
        attempt: claimed.attempt,
        outcome,
    };
    match app.journal.commit(write).await {
        Ok(true) if done => app.queue.callbacks.notify_one(),
        Ok(true) => app.queue.wake(),
        Ok(false) => {
            tracing::warn!(execution = %claimed.id, "an attempt ended after its execution moved on")
        }
        Err(e) => tracing::error!(execution = %claimed.id, "cannot record an attempt: {e:?}"),
    }
}

/// The wait before retrying after attempt number `attempt` failed: `base`, doubling each attempt.
fn backoff(base: Duration, attempt: u32) -> i64 {
    let wait = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF);
    wait.as_millis() as i64
}

/// Posts finished executions to their callback URLs.
async fn send_callbacks(app: Arc<App>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    loop {
        let due = match app.executions.due_callbacks(now_ms(), 32).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!("cannot read due callbacks: {e}");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = app.queue.callbacks.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for callback in due {
            let id = callback.execution.id.clone();
            let sent = client
                .post(&callback.url)
                .header(trigger::EXECUTION_HEADER, &id)
                .json(&callback.execution)
                .send()
                .await;
            let delivered = matches!(&sent, Ok(response) if response.status().is_success());
            app.metrics.callback(delivered);
            let retry_at = (!delivered && callback.attempts + 1 < CALLBACK_ATTEMPTS)
                .then(|| now_ms() + backoff(Duration::from_secs(1), callback.attempts + 1));
            if !delivered {
                tracing::warn!(execution = %id, url = %callback.url, "callback not delivered: {}",
                    match &sent { Ok(r) => r.status().to_string(), Err(e) => e.to_string() });
            }
            if let Err(e) = app.executions.callback_done(&id, delivered, retry_at).await {
                tracing::error!(execution = %id, "cannot record a callback: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!([1, 2, 3, 4].map(|a| backoff(base, a)), [100, 200, 400, 800]);
        assert_eq!(backoff(base, 40), MAX_BACKOFF.as_millis() as i64);
    }

    #[test]
    fn invoke_parameters_are_not_passed_on() {
        assert_eq!(
            without_invoke_params("async=true&x=1&callback_url=http://a/&y"),
            "x=1&y"
        );
        assert_eq!(without_invoke_params("async=true"), "");
    }
}
