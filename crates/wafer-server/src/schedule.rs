//! The cron trigger: a function's `schedule` queues a `cron` execution at each tick (UTC).
//!
//! A tick is queued through the store's [`wafer_store::ExecutionStore::fire_tick`], which records the tick
//! and queues the execution in one transaction, so a tick fires at most once however often the server
//! restarts. Ticks missed while the server was down collapse into one: the latest due tick is fired and
//! the earlier ones are skipped. The executions themselves run on the async queue, with its retries.
//! Expressions are read, and ticks walked, by [`wafer_formats::cron`].

use crate::app::App;
use crate::journal::{self, now_ms};
use crate::registry::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wafer_api::Trigger;
use wafer_formats::cron::latest_tick;
use wafer_store::{rfc3339, NewExecution, StoredRequest};

/// The longest the scheduler sleeps between looks at its schedules.
const LOOK: Duration = Duration::from_millis(250);

/// Starts the scheduler.
pub fn start(app: &Arc<App>) {
    tokio::spawn(run(app.clone()));
}

async fn run(app: Arc<App>) {
    // The last tick fired per function, as far as this process knows; read from the store on first sight.
    let mut fired: HashMap<String, i64> = HashMap::new();
    loop {
        let now = now_ms();
        for entry in app.registry.scheduled() {
            let name = entry.settings.name.clone();
            let last = match fired.get(&name) {
                Some(last) => *last,
                None => match app.executions.last_tick(&name).await {
                    Ok(last) => last.unwrap_or(i64::MIN),
                    Err(e) => {
                        tracing::error!(function = %name, "cannot read the schedule's last tick: {e}");
                        continue;
                    }
                },
            };
            if let Some(tick) = due_tick(&entry, last, now) {
                match fire(&app, &entry, tick).await {
                    Ok(_) => {
                        fired.insert(name, tick);
                    }
                    Err(e) => tracing::error!(function = %name, "cannot fire the schedule: {e}"),
                }
            } else {
                fired.insert(name, last);
            }
        }
        tokio::time::sleep(LOOK).await;
    }
}

/// The tick of `entry`'s schedule to fire at `now`, given the last one fired.
fn due_tick(entry: &Entry, last: i64, now: i64) -> Option<i64> {
    let (schedule, since) = entry.schedule.as_ref()?;
    latest_tick(schedule, last.max(*since), now)
}

async fn fire(app: &App, entry: &Entry, tick: i64) -> Result<bool, wafer_store::StoreError> {
    let name = &entry.settings.name;
    let fired = app
        .executions
        .fire_tick(
            name,
            tick,
            NewExecution {
                request: Some(StoredRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: vec![("x-wafer-schedule-tick".into(), rfc3339(tick))],
                }),
                ..NewExecution::queued(
                    journal::new_id(),
                    name.clone(),
                    entry.version,
                    Trigger::Cron,
                    entry.max_attempts,
                    now_ms(),
                )
            },
        )
        .await?;
    if fired {
        tracing::info!(function = %name, tick = %rfc3339(tick), "schedule fired");
        app.queue.wake();
    }
    Ok(fired)
}
