//! The async queue: submission (`submit.rs`), the workers that run queued executions, retries, and
//! what finished executions owe (`deliver.rs`).
//!
//! A submission is committed to the store before it is acknowledged with 202, so a crash after the answer
//! loses nothing. The dispatcher claims due executions for this node as workers come free: claiming marks
//! them running, counts the attempt and leases them to the node atomically, so no execution runs twice at
//! once. While an attempt runs its lease is renewed; an execution whose node stopped renewing (it died)
//! is put back in the queue by any node's sweep, and a node's start puts back its own. A failed attempt —
//! a trap, a timeout, a status of 300 or more, a non-zero exit — is queued again after an exponential
//! backoff until the function's `max_attempts`, then marked `dead`; one that waited past the function's
//! `max_event_age_ms` ends `expired` without running. Delivery is at least once. A `dead` or `expired`
//! execution keeps its request, so it can be retried or redriven as further attempts of the same
//! execution. Each attempt runs the version its qualifier (`live` when it has none) draws when it runs.
//!
//! Each attempt runs through the invocation core ([`crate::invoke`]), like any other call.

use crate::app::App;
use crate::error::Error;
use crate::invoke::{self, Answer, Ended, Invocation};
use crate::journal::{now_ms, Handed, Looked, Workers};
use crate::registry::Entry;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use wafer_api::ExecutionStatus;
use wafer_engine::Mount;
use wafer_store::{Attempt, Claimed, Write};

mod deliver;
mod submit;

pub(crate) use submit::check_url;
pub use submit::{redrive, retry, submit, Submission};

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// How often idle loops look at the store anyway (another process may share it, clocks move).
pub(crate) const IDLE_POLL: Duration = Duration::from_secs(1);

/// The request header telling the guest which attempt this is, from 1.
pub const ATTEMPT_HEADER: &str = "x-wafer-attempt";

/// Wakes the dispatcher and the senders of callbacks and destinations when there is work, and knows the
/// attempts this node runs.
#[derive(Default)]
pub struct Queue {
    work: Notify,
    callbacks: Notify,
    destinations: Notify,
    running: Mutex<HashSet<String>>,
    /// Told each time an attempt's end has been recorded.
    ended: Notify,
    dispatcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Queue {
    /// Says there is new work in the queue.
    pub fn wake(&self) {
        self.work.notify_one();
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.running)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a stop ([`stop`]) left the attempts this node was running.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Attempts running once the stop had started everything claimed before it.
    pub running: usize,
    /// Of those, the ones cut short at the deadline and given back to the queue.
    pub released: u64,
}

/// Starts the dispatcher, the lease keeper and the senders of callbacks and destinations.
pub fn start(app: &Arc<App>) {
    *lock(&app.queue.dispatcher) = Some(tokio::spawn(dispatch(app.clone())));
    tokio::spawn(keep_leases(app.clone()));
    deliver::start(app);
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

/// Runs claimed executions, each on its own task, on the node's workers.
///
/// Claims ride in the journal's commits: a commit that stores submissions or records attempts' ends
/// claims due work for every worker then free and hands it over here, so under load one commit stores
/// the submissions that arrived, records the attempts that ended and starts the next. A worker is free
/// again as soon as its attempt has run, and the commit of its record claims work for it. The
/// dispatcher asks for a claim itself only when work may have come another way: at start, when woken
/// (a retry, a redrive, a sweep, a schedule), when another node queues work, when a retry comes due, and
/// every [`IDLE_POLL`]. Nothing claims more than the free workers: a claimed execution counts an
/// attempt, and one claimed but not yet started when the node died would lose that attempt without
/// having run.
async fn dispatch(app: Arc<App>) {
    let free = Arc::new(Semaphore::new(app.config.executions.workers.max(1)));
    let (hand, mut handed) = mpsc::unbounded_channel();
    let workers = Workers {
        node: app.node.clone(),
        lease: app.config.executions.lease,
        free,
        hand,
    };
    if app.journal.claim_for(workers).await.is_err() {
        return;
    }
    // Other nodes sharing the store say when they queue work.
    let events = app.cluster.events();
    let mut look = true;
    let mut next = tokio::time::Instant::now();
    loop {
        if look {
            look = false;
            let wait = match app.journal.look().await {
                // A worker was free and took what was due: wake when the next retry is.
                Ok(Looked::Claimed(_)) => match app.executions.next_due().await {
                    Ok(Some(due)) => due.clamp(Duration::from_millis(1), IDLE_POLL),
                    _ => IDLE_POLL,
                },
                // Every worker is busy: the commit of the first to end claims for it.
                Ok(Looked::NoneFree) => IDLE_POLL,
                // The journal has logged why.
                Err(e) => {
                    tracing::debug!("cannot look for queued executions: {e}");
                    IDLE_POLL
                }
            };
            next = tokio::time::Instant::now() + wait;
        }
        tokio::select! {
            claimed = handed.recv() => {
                let Some(claimed) = claimed else { return };
                run_all(&app, claimed);
            }
            _ = app.queue.work.notified() => look = true,
            _ = events.wait_queue() => look = true,
            _ = tokio::time::sleep_until(next) => look = true,
        }
    }
}

/// Runs each claimed execution on its own task, on the worker its permit stands for.
fn run_all(app: &Arc<App>, claimed: Handed) {
    app.queue
        .running()
        .extend(claimed.iter().map(|(execution, _)| execution.id.clone()));
    for (execution, permit) in claimed {
        let app = app.clone();
        tokio::spawn(async move {
            let outcome = run_attempt(&app, &execution).await;
            // The worker is free once the attempt has run; its record is committed with others.
            drop(permit);
            finish(&app, &execution, outcome).await;
            app.queue.running().remove(&execution.id);
            app.queue.ended.notify_waiters();
        });
    }
}

/// Stops the queue on this node: claims no more work, lets the attempts it runs end and records them
/// until `deadline`, then gives back the claims of those still running, so another node (or this
/// one, restarted) runs them again without counting the attempt that was cut short.
pub async fn stop(app: &App, deadline: tokio::time::Instant) -> Stopped {
    if app.journal.stop_claiming().await.is_err() {
        return Stopped::default();
    }
    // The dispatcher ends once it has started everything the journal claimed for it.
    let dispatcher = lock(&app.queue.dispatcher).take();
    if let Some(dispatcher) = dispatcher {
        let _ = tokio::time::timeout_at(deadline, dispatcher).await;
    }
    let running = app.queue.running().len();
    let ended = async {
        loop {
            let ended = app.queue.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if app.queue.running().is_empty() {
                return;
            }
            ended.await;
        }
    };
    let released = match tokio::time::timeout_at(deadline, ended).await {
        Ok(()) => 0,
        Err(_) => {
            let cut: Vec<String> = app.queue.running().iter().cloned().collect();
            match app.executions.release_claims(&app.node, &cut).await {
                Ok(released) => released,
                Err(e) => {
                    tracing::error!(
                        executions = cut.len(),
                        "cannot give back the claims of attempts cut short; they run again once \
                         their leases lapse: {e}"
                    );
                    0
                }
            }
        }
    };
    Stopped { running, released }
}

/// Runs one claimed attempt and says how it ended: the version its qualifier draws, unless it
/// waited past its function's `max_event_age_ms`, when it ends `expired` without running.
async fn run_attempt(app: &Arc<App>, claimed: &Claimed) -> Attempt {
    let Some(live) = app.named(&claimed.function).await else {
        let gone = Error::NotFound(format!("function `{}` does not exist", claimed.function));
        return give_up(claimed, &gone, ExecutionStatus::Dead, None);
    };
    if let Some(max_age) = live.config.max_event_age_ms {
        let waited = now_ms().saturating_sub(claimed.queued_at);
        if u64::try_from(waited).unwrap_or_default() > max_age {
            app.metrics.expired(&claimed.function);
            let expired = Error::Expired(format!(
                "it waited {waited} ms in the queue, past its function's max_event_age_ms of {max_age}"
            ));
            return give_up(claimed, &expired, ExecutionStatus::Expired, Some(&live));
        }
    }
    let entry = match app
        .version_for(live.clone(), claimed.qualifier.as_deref())
        .await
    {
        Ok(entry) => entry,
        Err(e) => return give_up(claimed, &e, ExecutionStatus::Dead, Some(&live)),
    };
    // A request stored from a valid one replays; one that does not will never run.
    let invocation = match replay(&entry, claimed) {
        Ok(invocation) => invocation,
        Err(e) => return give_up(claimed, &e, ExecutionStatus::Dead, Some(&live)),
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
    outcome.destination = outcome.status.is_some_and(ExecutionStatus::is_final)
        && owes_destination(&live, claimed, ok);
    outcome
}

/// Whether an end (a success, or a final failure) owes `live`'s function's destination for it: it has
/// one, and the chain of destinations that led here is shorter than [`deliver::MAX_HOPS`] (a longer
/// one ends here, logged, so a loop of destinations ends).
fn owes_destination(live: &Entry, claimed: &Claimed, succeeded: bool) -> bool {
    let destination = match succeeded {
        true => &live.config.on_success,
        false => &live.config.on_failure,
    };
    if destination.is_some() && claimed.hops >= deliver::MAX_HOPS {
        tracing::warn!(execution = %claimed.id, function = %claimed.function, hops = claimed.hops,
            "destination not delivered: the chain of destinations is {} long", deliver::MAX_HOPS);
        return false;
    }
    destination.is_some()
}

/// How a claimed execution ends in `status` (`dead` or `expired`) without running, for `error`, owing
/// the `on_failure` of its function's `live` version when it has one.
fn give_up(
    claimed: &Claimed,
    error: &Error,
    status: ExecutionStatus,
    live: Option<&Entry>,
) -> Attempt {
    let at = now_ms();
    Attempt {
        status: Some(status),
        version: live.map_or(0, |live| live.version),
        started_at: at,
        finished_at: at,
        error: Some(error.describe()),
        destination: live.is_some_and(|live| owes_destination(live, claimed, false)),
        ..Attempt::default()
    }
}

/// The invocation a claimed execution replays: its stored request under `/fn/{name}`, with the
/// attempt's number in `x-wafer-attempt`.
fn replay(entry: &Arc<Entry>, claimed: &Claimed) -> Result<Invocation, Error> {
    let (parts, prefix) =
        submit::replay_parts(&claimed.function, claimed.request.clone(), claimed.attempt)?;
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

/// Records an attempt's end, and wakes the sender of each delivery it now owes.
async fn finish(app: &App, claimed: &Claimed, outcome: Attempt) {
    let done = outcome.status.is_some_and(ExecutionStatus::is_final);
    let owes_destination = outcome.destination;
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
        Ok(true) if done => {
            if claimed.callback {
                app.queue.callbacks.notify_one();
            }
            if owes_destination {
                app.queue.destinations.notify_one();
            }
        }
        Ok(true) => app.queue.wake(),
        Ok(false) => {
            tracing::warn!(execution = %claimed.id, "an attempt ended after its execution moved on")
        }
        Err(e) => tracing::error!(execution = %claimed.id, "cannot record an attempt: {e:?}"),
    }
}

/// The wait before retrying after attempt number `attempt` failed: `base`, doubling each attempt.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF)
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
}
