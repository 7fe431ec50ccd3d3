//! The async queue: submission, the workers that run queued executions, retries, and callbacks.
//!
//! A submission is committed to the store before it is acknowledged with 202, so a crash after the answer
//! loses nothing. The dispatcher claims due executions for this node as workers come free: claiming marks
//! them running, counts the attempt and leases them to the node atomically, so no execution runs twice at
//! once. While an attempt runs its lease is renewed; an execution whose node stopped renewing (it died)
//! is put back in the queue by any node's sweep, and a node's start puts back its own. A failed attempt —
//! a trap, a timeout, a status of 300 or more, a non-zero exit — is queued again after an exponential
//! backoff until the function's `max_attempts`, then marked `dead`. Delivery is at least once. A finished
//! execution with a `callback_url` owes a callback, which is retried until delivered or given up, and
//! survives restarts the same way: a node claims the callbacks it posts for a lease, so two nodes never
//! post one at once, and another node posts it when the claiming node dies.
//!
//! Each attempt runs through the invocation core ([`crate::invoke`]), like any other call.

use crate::app::App;
use crate::error::Error;
use crate::invoke::{self, Answer, Ended, Invocation};
use crate::journal::{self, now_ms};
use crate::registry::Entry;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use wafer_api::{AsyncAccepted, ExecutionStatus, Trigger};
use wafer_engine::Mount;
use wafer_store::{Attempt, Claimed, NewExecution, StoredRequest, Write};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How often idle loops look at the store anyway (another process may share it, clocks move).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Attempts a callback gets, with a doubling wait from one second.
const CALLBACK_ATTEMPTS: u32 = 5;

/// The request header telling the guest which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "x-wafer-attempt";

/// Wakes the dispatcher and the callback sender when there is work, and knows the attempts this node runs.
#[derive(Default)]
pub struct Queue {
    work: Notify,
    callbacks: Notify,
    running: Mutex<HashSet<String>>,
}

impl Queue {
    /// Says there is new work in the queue.
    pub fn wake(&self) {
        self.work.notify_one();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Stores an async invocation of `entry` (its request `parts` and `body`) and answers with its id, once
/// it is durable.
pub async fn submit(
    app: &App,
    entry: &Entry,
    parts: &http::request::Parts,
    body: Bytes,
    callback_url: Option<String>,
) -> Result<AsyncAccepted, Error> {
    if let Some(url) = &callback_url {
        check_callback(app, entry, url).await?;
    }
    invoke::check_body(entry, &body)?;
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
async fn check_callback(app: &App, entry: &Entry, url: &str) -> Result<(), Error> {
    let invalid = Error::InvalidCallback;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| invalid(format!("callback_url {url:?} is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(invalid(format!(
            "callback_url {url:?} must be an absolute http:// or https:// URL"
        )));
    }
    let server = wafer_engine::OutboundPolicy::parse(&app.config.executions.callback_hosts)
        .map_err(Error::Internal)?;
    if server.permits(&uri).await.is_ok() || entry.settings.outbound.permits(&uri).await.is_ok() {
        return Ok(());
    }
    Err(invalid(format!(
        "callback_url {url:?} is not allowed: its host must be in the server's callback hosts or the \
         function's allowed_outbound_hosts"
    )))
}

/// Starts the dispatcher, the lease keeper and the callback sender.
pub fn start(app: &Arc<App>) {
    tokio::spawn(dispatch(app.clone()));
    tokio::spawn(keep_leases(app.clone()));
    tokio::spawn(send_callbacks(app.clone()));
}

/// Renews the leases of the attempts this node runs, and puts executions whose leases expired (their
/// node died) back in the queue.
async fn keep_leases(app: Arc<App>) {
    let lease = app.config.executions.lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        let running: Vec<String> = app.queue.running().iter().cloned().collect();
        if !running.is_empty() {
            if let Err(e) = app.executions.renew(&app.node, &running, lease).await {
                tracing::error!("cannot renew the leases of running executions: {e}");
            }
        }
        match app.executions.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    executions = n,
                    "queued again: their node stopped renewing them"
                );
                app.queue.wake();
            }
            Err(e) => tracing::error!("cannot sweep expired claims: {e}"),
        }
    }
}

/// Claims due executions while workers are free, and runs each on its own task.
async fn dispatch(app: Arc<App>) {
    let workers = Arc::new(Semaphore::new(app.config.executions.workers.max(1)));
    // Other nodes sharing the store say when they queue work.
    let events = app.cluster.events();
    loop {
        let free = workers.available_permits();
        if free == 0 {
            // Wait for a worker to come free.
            if let Ok(permit) = workers.clone().acquire_owned().await {
                drop(permit);
            }
            continue;
        }
        let lease = app.config.executions.lease;
        let claimed = match app.executions.claim(&app.node, lease, free as u32).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::error!("cannot claim queued executions: {e}");
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
        };
        if claimed.is_empty() {
            let wait = match app.executions.next_due().await {
                Ok(Some(wait)) => wait.max(Duration::from_millis(1)),
                _ => IDLE_POLL,
            };
            tokio::select! {
                _ = app.queue.work.notified() => {}
                _ = events.wait_queue() => {}
                _ = tokio::time::sleep(wait.min(IDLE_POLL)) => {}
            }
            continue;
        }
        for execution in claimed {
            let Ok(permit) = workers.clone().acquire_owned().await else {
                return;
            };
            let app = app.clone();
            app.queue.running().insert(execution.id.clone());
            tokio::spawn(async move {
                let id = execution.id.clone();
                run_attempt(&app, execution).await;
                app.queue.running().remove(&id);
                drop(permit);
            });
        }
    }
}

/// Runs one claimed attempt and records how it ended.
async fn run_attempt(app: &Arc<App>, claimed: Claimed) {
    let Some(entry) = app.named(&claimed.function).await else {
        let gone = Error::NotFound(format!("function `{}` does not exist", claimed.function));
        return give_up(app, &claimed, &gone).await;
    };
    // A request stored from a valid one replays; one that does not will never run.
    let invocation = match replay(&entry, &claimed) {
        Ok(invocation) => invocation,
        Err(e) => return give_up(app, &claimed, &e).await,
    };
    let invoked = invoke::run(app, invocation).await;
    let ended = match invoked.answer {
        Ok(Answer::Http(response, permit)) => {
            let status = response.status().as_u16();
            // The engine holds the body to the function's response cap.
            let body = invoke::read_response(response.into_body(), usize::MAX).await;
            drop(permit);
            match body {
                Ok(body) => Ended {
                    http_status: status,
                    output: Some(body.to_vec()),
                    ..Ended::default()
                },
                Err(e) => Ended::failed(&Error::Invoke(wafer_engine::InvokeError::BadResponse(
                    format!("the response body failed: {e}"),
                ))),
            }
        }
        other => Ended::of(&other),
    };
    // An async http function must answer 2xx to succeed.
    let ok = ended.error.is_none() && ended.http_status < 300 && ended.exit_code.unwrap_or(0) == 0;
    let mut outcome = invoked.record.finish(&app.config.executions, ended).await;
    outcome.status = Some(if ok {
        ExecutionStatus::Succeeded
    } else if claimed.attempt < claimed.max_attempts {
        app.metrics.retry(&claimed.function);
        outcome.retry_in = Some(backoff(entry.retry_backoff, claimed.attempt));
        ExecutionStatus::Queued
    } else {
        app.metrics.dead(&claimed.function);
        ExecutionStatus::Dead
    });
    finish(app, &claimed, outcome).await;
}

/// Marks a claimed execution `dead` without running it, for `error`.
async fn give_up(app: &App, claimed: &Claimed, error: &Error) {
    let at = now_ms();
    let outcome = Attempt {
        status: Some(ExecutionStatus::Dead),
        started_at: at,
        finished_at: at,
        error: Some(error.describe()),
        ..Attempt::default()
    };
    finish(app, claimed, outcome).await;
}

/// The invocation a claimed execution replays: its stored request under `/fn/{name}`, with the
/// attempt's number in `x-wafer-attempt`.
fn replay(entry: &Arc<Entry>, claimed: &Claimed) -> Result<Invocation, Error> {
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
        .map_err(|e| Error::Internal(format!("the stored request is unusable: {e}")))?
        .into_parts();
    let mount = Mount {
        prefix,
        strip_prefix: true,
        client: None,
    };
    let mut invocation = Invocation::new(
        entry.clone(),
        parts,
        Bytes::from(claimed.body.clone()),
        mount,
        claimed.trigger,
    );
    invocation.id = claimed.id.clone();
    Ok(invocation)
}

/// Records an attempt's end, and wakes the callback sender when a callback is now owed.
async fn finish(app: &App, claimed: &Claimed, outcome: Attempt) {
    let done = outcome.status.is_some_and(ExecutionStatus::is_final);
    app.rollups.record(
        &claimed.function,
        outcome.status == Some(ExecutionStatus::Succeeded),
        outcome.duration_us,
        outcome.finished_at,
    );
    let write = Write::Finish {
        id: claimed.id.clone(),
        node: app.node.clone(),
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
fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF)
}

/// Posts finished executions to their callback URLs.
async fn send_callbacks(app: Arc<App>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    loop {
        let lease = app.config.executions.lease;
        let due = match app.executions.due_callbacks(&app.node, lease, 32).await {
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
                .header(invoke::EXECUTION_HEADER, &id)
                .json(&callback.execution)
                .send()
                .await;
            let delivered = matches!(&sent, Ok(response) if response.status().is_success());
            app.metrics.callback(delivered);
            let retry_in = (!delivered && callback.attempts + 1 < CALLBACK_ATTEMPTS)
                .then(|| backoff(Duration::from_secs(1), callback.attempts + 1));
            if !delivered {
                tracing::warn!(execution = %id, url = %callback.url, "callback not delivered: {}",
                    match &sent { Ok(r) => r.status().to_string(), Err(e) => e.to_string() });
            }
            match app
                .executions
                .callback_done(&id, &app.node, delivered, retry_in)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(execution = %id, "a callback's claim passed to another node first")
                }
                Err(e) => tracing::error!(execution = %id, "cannot record a callback: {e}"),
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
        assert_eq!(
            [1, 2, 3, 4].map(|a| backoff(base, a).as_millis()),
            [100, 200, 400, 800]
        );
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
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
