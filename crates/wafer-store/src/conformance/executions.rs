//! [`crate::ExecutionStore`]: records, paging, retention, log cursors, ticks, callbacks and queue
//! statistics, with the helpers every execution case uses.

use super::Stores;
use crate::{
    Attempt, Delivered, Delivery, NewExecution, NewLog, Page, Retention, StoredRequest, Write,
};
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wafer_api::{ExecutionStatus, ExecutionUsage, LogLevel, Trigger};

pub(super) const HOUR: Duration = Duration::from_secs(3600);

/// Milliseconds since the epoch, as a node stamps its records.
pub(super) fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// An async execution of `function`, queued now.
pub(super) fn queued(id: &str, function: &str) -> NewExecution {
    NewExecution {
        id: id.into(),
        function: function.into(),
        version: 1,
        trigger: Trigger::Async,
        max_attempts: 3,
        queued_at: now_ms(),
        request: Some(StoredRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![("a".into(), "b".into())],
        }),
        body: b"input".to_vec(),
        callback_url: None,
        qualifier: None,
        hops: 0,
        attempt: None,
    }
}

/// An attempt that ended in `status` at `at`, with one log line.
pub(super) fn ended(status: ExecutionStatus, at: i64) -> Attempt {
    Attempt {
        status: Some(status),
        version: 1,
        started_at: at,
        finished_at: at + 5,
        duration_us: 5000,
        exit_code: Some(0),
        usage: Some(ExecutionUsage {
            instantiate_us: 10,
            cpu_us: 2000,
            peak_memory_bytes: 65536,
            fuel_consumed: None,
        }),
        logs: vec![NewLog {
            stream: "stderr",
            level: if status == ExecutionStatus::Failed {
                LogLevel::Error
            } else {
                LogLevel::Info
            },
            line: format!("{status} at {at}"),
        }],
        ..Default::default()
    }
}

/// A sync execution that already ran: finished in `status` at `at`.
fn finished(id: &str, function: &str, status: ExecutionStatus, at: i64) -> NewExecution {
    NewExecution {
        trigger: Trigger::Http,
        max_attempts: 1,
        request: None,
        body: Vec::new(),
        attempt: Some(ended(status, at)),
        ..queued(id, function)
    }
}

pub(super) fn finish(id: &str, node: &str, attempt: u32, outcome: Attempt) -> Write {
    Write::Finish {
        id: id.into(),
        node: node.into(),
        attempt,
        outcome,
    }
}

/// Applies `writes` in one batch; whether each took effect.
pub(super) async fn write(stores: &Stores, writes: Vec<Write>) -> Vec<bool> {
    stores
        .executions
        .write(writes.into(), None)
        .await
        .unwrap()
        .applied
}

pub(super) async fn insert(stores: &Stores, executions: Vec<NewExecution>) {
    write(stores, executions.into_iter().map(Write::Insert).collect()).await;
}

/// Execution `id`, which must exist, with its logs when `with_logs`.
pub(super) async fn execution(stores: &Stores, id: &str, with_logs: bool) -> wafer_api::Execution {
    let execution = stores
        .executions
        .get_execution(id, with_logs)
        .await
        .unwrap();
    execution.expect("the execution exists")
}

/// Whether execution `id` is stored.
async fn exists(stores: &Stores, id: &str) -> bool {
    let execution = stores.executions.get_execution(id, false).await.unwrap();
    execution.is_some()
}

pub(super) async fn status_of(stores: &Stores, id: &str) -> ExecutionStatus {
    execution(stores, id, false).await.status
}

/// A sync call's record, stored in one write, reads back as an execution that ran that attempt: every
/// field of the attempt, what it owes (a callback, its destination) pending, and its logs.
pub async fn a_sync_execution_is_stored_with_its_attempt_and_what_it_owes(stores: &Stores) {
    let attempt = Attempt {
        http_status: Some(502),
        error: Some("the handler trapped".into()),
        output: Some(b"partial".to_vec()),
        output_truncated: true,
        destination: true,
        ..ended(ExecutionStatus::Failed, 1_000)
    };
    let sync = NewExecution {
        version: 3,
        callback_url: Some("http://127.0.0.1:9/hook".into()),
        qualifier: Some("beta".into()),
        body: b"request body".to_vec(),
        attempt: Some(Attempt {
            version: 2,
            ..attempt
        }),
        ..finished("sync", "f", ExecutionStatus::Failed, 1_000)
    };
    insert(stores, vec![sync.clone()]).await;
    let stored = execution(stores, "sync", true).await;
    assert_eq!(stored.status, ExecutionStatus::Failed);
    assert_eq!(
        (stored.version, stored.attempts, stored.max_attempts),
        (2, 1, 1)
    );
    assert!(stored.started_at.is_some() && stored.finished_at.is_some());
    assert_eq!(stored.next_attempt_at, None);
    assert_eq!(stored.duration_ms, Some(5.0));
    assert_eq!(stored.http_status, Some(502));
    assert_eq!(stored.exit_code, Some(0));
    assert_eq!(stored.error.as_deref(), Some("the handler trapped"));
    assert_eq!(stored.output.as_deref(), Some("partial"));
    assert!(stored.output_truncated);
    let usage = stored.usage.expect("usage is stored");
    assert_eq!((usage.instantiate_us, usage.cpu_us), (10, 2000));
    assert_eq!(usage.peak_memory_bytes, 65536);
    assert_eq!(stored.callback_state.as_deref(), Some("pending"));
    assert_eq!(stored.destination_state.as_deref(), Some("pending"));
    assert_eq!(stored.logs.len(), 1);
    assert_eq!(stored.logs[0].line, "failed at 1000");
    // The same id again changes nothing, in a later batch or in the same one.
    write(stores, vec![Write::Insert(sync)]).await;
    assert_eq!(execution(stores, "sync", true).await.logs.len(), 1);
    let twins = [ExecutionStatus::Succeeded, ExecutionStatus::Failed]
        .map(|status| Write::Insert(finished("twin", "f", status, 2_000)));
    assert_eq!(write(stores, twins.into()).await, [true, true]);
    let twin = execution(stores, "twin", true).await;
    assert_eq!(
        (twin.status, twin.logs.len()),
        (ExecutionStatus::Succeeded, 1)
    );
}

pub async fn listing_pages_newest_first_and_filters_by_status(stores: &Stores) {
    let runs = (0..5)
        .map(|i| {
            let status = if i % 2 == 0 {
                ExecutionStatus::Succeeded
            } else {
                ExecutionStatus::Failed
            };
            finished(&format!("e{i}"), "f", status, i)
        })
        .collect();
    insert(stores, runs).await;
    insert(
        stores,
        vec![finished("other", "g", ExecutionStatus::Succeeded, 9)],
    )
    .await;
    let page = |status, before: Option<&str>| {
        let executions = stores.executions.clone();
        let before = before.map(str::to_string);
        async move {
            executions
                .list_executions(
                    Some("f"),
                    Page {
                        status,
                        before,
                        limit: 2,
                    },
                )
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, None).await, ["e4", "e3"]);
    assert_eq!(page(None, Some("e3")).await, ["e2", "e1"]);
    assert_eq!(
        page(Some(ExecutionStatus::Failed), None).await,
        ["e3", "e1"]
    );
    // Across functions.
    let everyone: Vec<String> = stores
        .executions
        .list_executions(
            None,
            Page {
                status: Some(ExecutionStatus::Succeeded),
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(everyone, ["other", "e4", "e2", "e0"]);
    let stats = stores.executions.stats("f").await.unwrap();
    assert_eq!((stats.count, stats.by_status["succeeded"]), (5, 3));
    assert_eq!(stats.cpu_ms.max, 2.0);
    let logs = stores
        .executions
        .logs("f", None, 3, LogLevel::Trace)
        .await
        .unwrap();
    assert_eq!(logs.len(), 3);
    assert!(logs[0].seq < logs[2].seq, "oldest first");
    let after = stores
        .executions
        .logs("f", Some(logs[1].seq), 10, LogLevel::Trace)
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    let errors = stores
        .executions
        .logs("f", None, 10, LogLevel::Warn)
        .await
        .unwrap();
    let errors: Vec<_> = errors.iter().map(|l| (l.level, l.line.as_str())).collect();
    assert_eq!(
        errors,
        [
            (LogLevel::Error, "failed at 1"),
            (LogLevel::Error, "failed at 3")
        ]
    );
}

pub async fn retention_keeps_the_newest_and_owed_callbacks(stores: &Stores) {
    // A minute ago: well within the week kept below.
    let now = now_ms() - 60_000;
    let runs = (0..5)
        .map(|i| finished(&format!("e{i}"), "f", ExecutionStatus::Succeeded, now + i))
        .collect();
    insert(stores, runs).await;
    let keep_two = Retention {
        per_function: 2,
        older_than: 30 * 24 * HOUR,
        dead_per_function: 2,
        dead_older_than: 30 * 24 * HOUR,
    };
    assert_eq!(stores.executions.prune(keep_two).await.unwrap(), 3);
    let left = stores
        .executions
        .list_executions(
            Some("f"),
            Page {
                limit: 10,
                ..Page::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e4", "e3"]
    );
    let logs = stores.executions.logs("f", None, 10, LogLevel::Trace).await;
    assert_eq!(logs.unwrap().len(), 2, "logs go with their executions");
    // A finished execution that still owes its callback is kept, however old.
    insert(
        stores,
        vec![NewExecution {
            callback_url: Some("http://127.0.0.1:1/cb".into()),
            ..queued("owed", "f")
        }],
    )
    .await;
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    let done = finish("owed", "n1", 1, ended(ExecutionStatus::Succeeded, 0));
    write(stores, vec![done]).await;
    let everything = Retention {
        per_function: 0,
        older_than: Duration::ZERO,
        dead_per_function: 0,
        dead_older_than: Duration::ZERO,
    };
    assert_eq!(stores.executions.prune(everything).await.unwrap(), 2);
    assert!(exists(stores, "owed").await);
}

pub async fn retention_of_many_records_deletes_them_all_and_keeps_the_newest(stores: &Stores) {
    // More than one of SQLite's deleting transactions holds (500).
    let now = now_ms() - 60_000;
    let runs = (0..1_234)
        .map(|i| {
            finished(
                &format!("e{i:05}"),
                "f",
                ExecutionStatus::Succeeded,
                now + i,
            )
        })
        .collect();
    insert(stores, runs).await;
    let keep = Retention {
        per_function: 34,
        older_than: 30 * 24 * HOUR,
        dead_per_function: 34,
        dead_older_than: 30 * 24 * HOUR,
    };
    assert_eq!(stores.executions.prune(keep).await.unwrap(), 1_200);
    assert_eq!(stores.executions.prune(keep).await.unwrap(), 0);
    let left = stores
        .executions
        .list_executions(
            Some("f"),
            Page {
                limit: 100,
                ..Page::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 34);
    assert_eq!(left[33].id, "e01200", "the newest are kept");
    let logs = stores
        .executions
        .logs("f", None, 1000, LogLevel::Trace)
        .await;
    assert_eq!(logs.unwrap().len(), 34, "logs go with their executions");
}

pub async fn log_cursors_see_every_line_of_concurrent_writers(stores: &Stores) {
    const WRITERS: usize = 4;
    const BATCHES: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let executions = stores.executions.clone();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let mut run =
                        finished(&format!("w{w}-{b}"), "f", ExecutionStatus::Succeeded, 0);
                    if let Some(attempt) = run.attempt.as_mut() {
                        attempt.logs = (0..3)
                            .map(|i| NewLog {
                                stream: "stderr",
                                level: LogLevel::Info,
                                line: format!("w{w} b{b} line {i}"),
                            })
                            .collect();
                    }
                    executions
                        .write(vec![Write::Insert(run)].into(), None)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let done = writers.iter().all(|w| w.is_finished());
        let lines = stores
            .executions
            .logs("f", Some(after), 1000, LogLevel::Trace)
            .await
            .unwrap();
        if let Some(last) = lines.last() {
            after = last.seq;
        }
        let read_nothing = lines.is_empty();
        seen.extend(lines.into_iter().map(|l| (l.seq, l.line)));
        if done && read_nothing {
            break;
        }
        tokio::task::yield_now().await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let lines: BTreeSet<_> = seen.iter().map(|(_, line)| line.clone()).collect();
    assert_eq!(seen.len(), WRITERS * BATCHES * 3, "no line read twice");
    assert_eq!(lines.len(), WRITERS * BATCHES * 3, "every line read");
}

pub async fn a_schedule_tick_fires_once(stores: &Stores) {
    let fire = |id: &str, tick| {
        let (executions, new) = (stores.executions.clone(), queued(id, "f"));
        async move { executions.fire_tick("f", tick, new).await.unwrap() }
    };
    assert!(fire("c1", 60_000).await);
    assert!(!fire("c2", 60_000).await, "the same tick again");
    assert!(!fire("c3", 0).await, "an earlier tick");
    assert_eq!(
        stores.executions.last_tick("f").await.unwrap(),
        Some(60_000)
    );
    assert!(!exists(stores, "c2").await);
    // Two nodes firing the same tick at once: one of them queues it.
    let (a, b) = tokio::join!(fire("c4", 120_000), fire("c5", 120_000));
    assert!(a ^ b, "exactly one fired: {a} {b}");
    assert_eq!(
        stores.executions.last_tick("f").await.unwrap(),
        Some(120_000)
    );
    assert_eq!(
        status_of(stores, if a { "c4" } else { "c5" }).await,
        ExecutionStatus::Queued
    );
    assert!(stores.executions.last_tick("g").await.unwrap().is_none());
}

pub async fn a_finished_execution_owes_its_callback_until_delivered(stores: &Stores) {
    let new = NewExecution {
        callback_url: Some("http://127.0.0.1:1/cb".into()),
        ..queued("e1", "f")
    };
    insert(stores, vec![new]).await;
    let claimed = stores.executions.claim("n1", HOUR, 1).await.unwrap();
    assert!(
        claimed[0].callback,
        "a claim says the execution has a callback"
    );
    let due = |node: &'static str, lease| {
        stores
            .executions
            .due_deliveries(Delivery::Callback, node, lease, 10)
    };
    assert!(due("n1", HOUR).await.unwrap().is_empty());
    let done = finish("e1", "n1", 1, ended(ExecutionStatus::Succeeded, 10));
    write(stores, vec![done]).await;
    let owed = due("n1", Duration::from_millis(1)).await.unwrap();
    assert_eq!(
        (
            owed.len(),
            owed[0].execution.callback_url.as_deref(),
            owed[0].attempts
        ),
        (1, Some("http://127.0.0.1:1/cb"), 0)
    );
    assert_eq!(owed[0].execution.status, ExecutionStatus::Succeeded);
    // n1's claim lapses: n2 takes the callback over, and n1's late report is refused.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(due("n2", HOUR).await.unwrap().len(), 1);
    assert!(due("n1", HOUR).await.unwrap().is_empty(), "claimed once");
    let report = |node, outcome| {
        stores
            .executions
            .delivery_done(Delivery::Callback, "e1", node, outcome)
    };
    assert!(!report("n1", Delivered::Yes).await.unwrap());
    assert!(report("n2", Delivered::RetryIn(Duration::ZERO))
        .await
        .unwrap());
    let again = due("n1", HOUR).await.unwrap();
    assert_eq!(again[0].attempts, 1, "a failed delivery due again at once");
    assert!(report("n1", Delivered::RetryIn(HOUR)).await.unwrap());
    assert!(due("n1", HOUR).await.unwrap().is_empty());
    assert_eq!(
        execution(stores, "e1", false)
            .await
            .callback_state
            .as_deref(),
        Some("pending")
    );
}

pub async fn the_queue_reports_its_depth_and_age(stores: &Stores) {
    assert_eq!(stores.executions.next_due().await.unwrap(), None);
    assert_eq!(
        stores.executions.queue_stats().await.unwrap(),
        Default::default()
    );
    insert(stores, vec![queued("a", "f"), queued("b", "f")]).await;
    assert_eq!(
        stores.executions.next_due().await.unwrap(),
        Some(Duration::ZERO)
    );
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    let queue = stores.executions.queue_stats().await.unwrap();
    assert_eq!((queue.queued, queue.running), (1, 1));
    let age = queue.oldest_age.expect("one is waiting");
    assert!(age < Duration::from_secs(60), "{age:?}");
}
