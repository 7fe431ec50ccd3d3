//! The journal: every execution write goes through one task that commits whatever has piled up in one
//! transaction, so a burst of invocations costs one fsync, not one each.
//!
//! Sync invocations hand their record over and move on ([`Journal::record`]); an async submission or an
//! attempt's result waits for its commit ([`Journal::commit`]) because it is acknowledged, or acted on,
//! afterwards. Followers of a function's log watch [`Journal::committed`] to know when to read again.
//! A background task deletes finished records outside the retention settings.

use crate::app::App;
use crate::config::ExecutionSettings;
use crate::error::ApiError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use wafer_api::{ExecutionUsage, LogLevel};
use wafer_engine::Trace;
use wafer_store::{Attempt, ExecutionStore, NewLog, Retention, Write};

/// Writes waiting for the journal task beyond this are refused (records) or wait (commits).
const BACKLOG: usize = 16 * 1024;

/// Writes committed in one transaction at most.
const BATCH: usize = 1024;

struct Op {
    write: Write,
    ack: Option<oneshot::Sender<Result<bool, String>>>,
}

/// The handle to the journal task.
pub struct Journal {
    sender: mpsc::Sender<Op>,
    committed: watch::Receiver<u64>,
    dropped: AtomicU64,
}

impl Journal {
    /// Starts the journal task over `store`.
    pub fn start(store: Arc<dyn ExecutionStore>) -> Self {
        let (sender, mut receiver) = mpsc::channel::<Op>(BACKLOG);
        let (generation, committed) = watch::channel(0u64);
        tokio::spawn(async move {
            let mut ops = Vec::with_capacity(BATCH);
            while receiver.recv_many(&mut ops, BATCH).await > 0 {
                let (writes, acks): (Vec<_>, Vec<_>) =
                    ops.drain(..).map(|op| (op.write, op.ack)).unzip();
                let result = store.write(writes).await;
                if let Err(e) = &result {
                    tracing::error!("cannot store execution records: {e}");
                }
                for (i, ack) in acks.into_iter().enumerate() {
                    if let Some(ack) = ack {
                        let outcome = match &result {
                            Ok(applied) => Ok(applied.get(i).copied().unwrap_or(false)),
                            Err(e) => Err(e.to_string()),
                        };
                        let _ = ack.send(outcome);
                    }
                }
                generation.send_modify(|g| *g += 1);
            }
        });
        Self {
            sender,
            committed,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a write without waiting for it; under a backlog it is dropped and counted.
    pub fn record(&self, write: Write) {
        if self.sender.try_send(Op { write, ack: None }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes durably; returns whether the write took effect (see [`Write::Finish`]).
    pub async fn commit(&self, write: Write) -> Result<bool, ApiError> {
        let (ack, done) = oneshot::channel();
        let unavailable = || ApiError::unavailable("the execution journal has stopped");
        self.sender
            .send(Op {
                write,
                ack: Some(ack),
            })
            .await
            .map_err(|_| unavailable())?;
        done.await
            .map_err(|_| unavailable())?
            .map_err(ApiError::internal)
    }

    /// A receiver that changes after every commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Records dropped because the journal was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How often finished executions outside the retention settings are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts the task that deletes finished executions outside the retention settings.
pub fn start_retention(app: &Arc<App>) {
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let settings = &app.config.executions;
            let retention = Retention {
                per_function: settings.retain_per_function,
                finished_before: now_ms()
                    - i64::try_from(settings.retain.as_millis()).unwrap_or(i64::MAX),
            };
            match app.executions.prune(retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(executions = n, "old execution records deleted"),
                Err(e) => tracing::error!("cannot delete old execution records: {e}"),
            }
            tokio::time::sleep(PRUNE_EVERY).await;
        }
    });
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A new execution id: a UUIDv7, so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Completes an attempt's record once its instance is gone: when it ended, how long it took from
/// `started`, what its trace says it used and logged, and its `output` cut to the kept size.
pub fn close_attempt(
    attempt: &mut Attempt,
    started: std::time::Instant,
    trace: Option<&Trace>,
    output: Option<Vec<u8>>,
    settings: &ExecutionSettings,
) {
    attempt.finished_at = now_ms();
    attempt.duration_us = started.elapsed().as_micros() as u64;
    attempt.usage = trace.map(usage);
    attempt.logs = trace
        .map(|t| logs(t, settings.max_log_bytes))
        .unwrap_or_default();
    if let Some(mut output) = output {
        attempt.output_truncated = output.len() > settings.max_output_bytes;
        output.truncate(settings.max_output_bytes);
        attempt.output = Some(output);
    }
}

/// An engine usage report as the API shows it.
pub fn usage(trace: &Trace) -> ExecutionUsage {
    let usage = trace.usage;
    ExecutionUsage {
        instantiate_us: usage.instantiate.as_micros() as u64,
        cpu_us: usage.cpu.as_micros() as u64,
        peak_memory_bytes: usage.peak_memory_bytes,
        fuel_consumed: usage.fuel_consumed,
    }
}

/// A trace's log lines, at most `cap` bytes of them, with a last line saying what was dropped.
pub fn logs(trace: &Trace, cap: usize) -> Vec<NewLog> {
    let mut kept = 0;
    let mut logs = Vec::new();
    let mut dropped = 0;
    for line in &trace.logs {
        if kept + line.text.len() > cap {
            dropped += 1;
            continue;
        }
        kept += line.text.len();
        logs.push(NewLog {
            stream: line.stream.as_str(),
            level: line.level,
            line: line.text.clone(),
        });
    }
    if dropped > 0 || trace.logs_truncated {
        logs.push(NewLog {
            stream: "log",
            level: LogLevel::Warn,
            line: format!("[wafer] log output past the cap of {cap} bytes was dropped"),
        });
    }
    logs
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_engine::{LogLine, Stream};

    #[test]
    fn logs_past_the_cap_are_dropped_and_said_so() {
        let line = |text: &str| LogLine {
            stream: Stream::Stderr,
            level: wafer_api::LogLevel::Info,
            text: text.into(),
        };
        let trace = Trace {
            logs: vec![line("12345"), line("67890"), line("1")],
            ..Default::default()
        };
        let kept: Vec<_> = logs(&trace, 6).into_iter().map(|l| l.line).collect();
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[..2], ["12345", "1"]);
        assert!(kept[2].contains("dropped"));
        assert_eq!(logs(&trace, 100).len(), 3);
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id() > a);
    }
}
