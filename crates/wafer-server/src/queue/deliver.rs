//! What a finished execution owes, delivered at least once: its callback (a POST of its record to its
//! `callback_url`), and its function's destination — `on_success` for a success, `on_failure` for a
//! dead or expired end — a function, which gets the record as a new async execution (trigger
//! `destination`), or a URL, which gets it as a POST.
//!
//! The attempt's end marks what is owed in the same write that records it, so a crash between the end
//! and the delivery loses nothing: a node claims due deliveries for a lease, as it claims queued work,
//! and another node makes the delivery when the claiming one dies. A destination is resolved when it
//! is delivered, from the function's live configuration. A chain of destinations ends after
//! [`MAX_HOPS`]: an execution that many destinations deep delivers nowhere (logged), so a loop ends.

use super::submit::check_url;
use super::{backoff, IDLE_POLL};
use crate::app::App;
use crate::invoke;
use crate::journal::{self, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use wafer_api::{Destination, Execution, ExecutionStatus, Trigger};
use wafer_store::{Delivered, Delivery, Due, NewExecution, StoredRequest, Write};

/// Attempts a delivery gets, with a doubling wait from one second.
const ATTEMPTS: u32 = 5;

/// The longest chain of destinations.
pub const MAX_HOPS: u32 = 4;

/// The request header naming the execution a destination's record is of.
pub const SOURCE_HEADER: &str = "x-wafer-source-execution";

/// Starts the senders of callbacks and of destinations.
pub fn start(app: &Arc<App>) {
    tokio::spawn(deliver(app.clone(), Delivery::Callback));
    tokio::spawn(deliver(app.clone(), Delivery::Destination));
}

/// Makes the deliveries of `kind` as they come due.
async fn deliver(app: Arc<App>, kind: Delivery) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    let wake: &Notify = match kind {
        Delivery::Callback => &app.queue.callbacks,
        Delivery::Destination => &app.queue.destinations,
    };
    loop {
        let lease = app.config.executions.lease;
        let due = match app
            .executions
            .due_deliveries(kind, &app.node, lease, 32)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(?kind, "cannot read due deliveries: {e}");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        for due in due {
            let id = due.execution.id.clone();
            let outcome = match kind {
                Delivery::Callback => {
                    let url = due.execution.callback_url.clone().unwrap_or_default();
                    let delivered = post(&client, &url, &due.execution).await;
                    app.metrics.callback(delivered);
                    outcome(delivered, due.attempts)
                }
                Delivery::Destination => destination(&app, &client, &due).await,
            };
            match app
                .executions
                .delivery_done(kind, &id, &app.node, outcome)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(execution = %id, ?kind, "a delivery's claim passed to another node first")
                }
                Err(e) => tracing::error!(execution = %id, ?kind, "cannot record a delivery: {e}"),
            }
        }
    }
}

/// What a delivery that did or did not get through, after `attempts` earlier ones, leaves.
fn outcome(delivered: bool, attempts: u32) -> Delivered {
    match delivered {
        true => Delivered::Yes,
        false if attempts + 1 < ATTEMPTS => {
            Delivered::RetryIn(backoff(Duration::from_secs(1), attempts + 1))
        }
        false => Delivered::GaveUp,
    }
}

/// Posts `execution`'s record to `url`; whether it was taken (a 2xx).
async fn post(client: &reqwest::Client, url: &str, execution: &Execution) -> bool {
    let sent = client
        .post(url)
        .header(invoke::EXECUTION_HEADER, &execution.id)
        .json(execution)
        .send()
        .await;
    let delivered = matches!(&sent, Ok(response) if response.status().is_success());
    if !delivered {
        tracing::warn!(execution = %execution.id, url, "delivery failed: {}",
            match &sent { Ok(r) => r.status().to_string(), Err(e) => e.to_string() });
    }
    delivered
}

/// Delivers a finished execution to its function's destination for how it ended, if it has one.
async fn destination(app: &App, client: &reqwest::Client, due: &Due) -> Delivered {
    let execution = &due.execution;
    let source = app.named(&execution.function).await;
    let target = source.as_ref().and_then(|entry| match execution.status {
        ExecutionStatus::Succeeded => entry.config.on_success.clone(),
        status if status.is_dead_letter() => entry.config.on_failure.clone(),
        _ => None,
    });
    let (Some(source), Some(target)) = (source, target) else {
        app.metrics.destination("none");
        return Delivered::Nothing;
    };
    if due.hops >= MAX_HOPS {
        tracing::warn!(execution = %execution.id, function = %execution.function, hops = due.hops,
            "destination not delivered: the chain of destinations is {MAX_HOPS} long");
        app.metrics.destination("none");
        return Delivered::Nothing;
    }
    let delivered = match &target {
        Destination::Function(name) => to_function(app, name, execution, due.hops).await,
        Destination::Url(url) => {
            match check_url(app, &source.settings.outbound, url, "on_success/on_failure").await {
                Ok(()) => post(client, url, execution).await,
                Err(e) => {
                    tracing::error!(execution = %execution.id, "destination given up: {e}");
                    app.metrics.destination("failed");
                    return Delivered::GaveUp;
                }
            }
        }
    };
    app.metrics
        .destination(if delivered { "delivered" } else { "failed" });
    outcome(delivered, due.attempts)
}

/// Queues `execution`'s record as an async execution of function `name`, one hop further along.
async fn to_function(app: &App, name: &str, execution: &Execution, hops: u32) -> bool {
    let Some(target) = app.named(name).await else {
        tracing::warn!(execution = %execution.id, "destination function `{name}` does not exist");
        return false;
    };
    let body = match serde_json::to_vec(execution) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(execution = %execution.id, "the record does not serialise: {e}");
            return false;
        }
    };
    let new = NewExecution {
        request: Some(StoredRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (SOURCE_HEADER.into(), execution.id.clone()),
            ],
        }),
        body,
        hops: hops + 1,
        ..NewExecution::queued(
            journal::new_id(),
            name.to_string(),
            target.version,
            Trigger::Destination,
            target.max_attempts,
            now_ms(),
        )
    };
    match app.journal.commit(Write::Insert(new)).await {
        Ok(_) => {
            app.queue.wake();
            true
        }
        Err(e) => {
            tracing::warn!(execution = %execution.id, "cannot queue the destination's execution: {e:?}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_delivery_is_tried_again_then_given_up() {
        assert_eq!(outcome(true, 3), Delivered::Yes);
        assert_eq!(
            outcome(false, 0),
            Delivered::RetryIn(Duration::from_secs(1))
        );
        assert_eq!(
            outcome(false, 2),
            Delivered::RetryIn(Duration::from_secs(4))
        );
        assert_eq!(outcome(false, ATTEMPTS - 1), Delivered::GaveUp);
    }
}
