//! An invocation's execution record: [`Record`] waits for the instance's trace and makes the attempt's
//! record from it and from how the invocation [`Ended`], for sync calls and queue workers alike.

use super::Answer;
use crate::config::ExecutionSettings;
use crate::error::Error;
use crate::journal::now_ms;
use crate::registry::Entry;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use wafer_api::{ExecutionUsage, LogLevel};
use wafer_engine::Trace;
use wafer_store::{Attempt, NewLog};

/// An invocation's record, complete once its instance is gone and its trace is in.
pub struct Record {
    entry: Arc<Entry>,
    started: Instant,
    started_at: i64,
    trace: oneshot::Receiver<Trace>,
}

/// How an invocation ended, as its record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ended {
    /// The HTTP status the caller saw.
    pub http_status: u16,
    /// A command's exit code.
    pub exit_code: Option<i32>,
    /// Why it failed, as `code: message`.
    pub error: Option<String>,
    /// What it produced, when that is kept: a command's stdout, a queued call's response body.
    pub output: Option<Vec<u8>>,
}

impl Ended {
    /// How an answer ended: its status, and a command's exit code and stdout; or the failure.
    pub fn of(answer: &Result<Answer, Error>) -> Self {
        match answer {
            Ok(Answer::Command(output)) => Self {
                http_status: 200,
                exit_code: Some(output.exit_code),
                output: Some(output.stdout.clone().into_bytes()),
                ..Self::default()
            },
            Ok(answer) => Self {
                http_status: answer.status(),
                ..Self::default()
            },
            Err(e) => Self::failed(e),
        }
    }

    /// An invocation that failed with `error`.
    pub fn failed(error: &Error) -> Self {
        Self {
            http_status: error.status().as_u16(),
            error: Some(error.describe()),
            ..Self::default()
        }
    }

    /// Whether a synchronous call counts as a success: a 1xx–3xx status, and exit code 0 for a command.
    pub fn succeeded(&self) -> bool {
        self.http_status < 400 && self.exit_code.unwrap_or(0) == 0
    }
}

impl Record {
    /// The record of an invocation of `entry` that started at `started`, whose trace arrives on `trace`.
    pub(super) fn start(
        entry: Arc<Entry>,
        started: Instant,
        trace: oneshot::Receiver<Trace>,
    ) -> Self {
        Self {
            entry,
            started,
            started_at: now_ms(),
            trace,
        }
    }

    /// The live version that ran.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// When the invocation started (ms since the epoch).
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// The attempt as it ended, once the instance is gone: the version that ran, when it started and
    /// ended, how long it took, what its trace says it used and logged (logs cut to the kept size), and
    /// its output cut to the kept size. Its status is the caller's to set.
    pub async fn finish(self, settings: &ExecutionSettings, ended: Ended) -> Attempt {
        let trace = self.trace.await.ok();
        let mut attempt = Attempt {
            version: self.entry.version,
            started_at: self.started_at,
            finished_at: now_ms(),
            duration_us: self.started.elapsed().as_micros() as u64,
            http_status: Some(ended.http_status),
            exit_code: ended.exit_code,
            error: ended.error,
            usage: trace.as_ref().map(usage),
            logs: trace
                .as_ref()
                .map(|t| logs(t, settings.max_log_bytes))
                .unwrap_or_default(),
            ..Attempt::default()
        };
        if let Some(mut output) = ended.output {
            attempt.output_truncated = output.len() > settings.max_output_bytes;
            output.truncate(settings.max_output_bytes);
            attempt.output = Some(output);
        }
        attempt
    }
}

/// An engine usage report as the API shows it.
fn usage(trace: &Trace) -> ExecutionUsage {
    let usage = trace.usage;
    ExecutionUsage {
        instantiate_us: usage.instantiate.as_micros() as u64,
        cpu_us: usage.cpu.as_micros() as u64,
        peak_memory_bytes: usage.peak_memory_bytes,
        fuel_consumed: usage.fuel_consumed,
    }
}

/// A trace's log lines, at most `cap` bytes of them, with a last line saying what was dropped.
fn logs(trace: &Trace, cap: usize) -> Vec<NewLog> {
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
            level: LogLevel::Info,
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
    fn a_sync_call_succeeds_below_400_with_exit_code_zero() {
        let ended = |http_status, exit_code| Ended {
            http_status,
            exit_code,
            ..Ended::default()
        };
        assert!(ended(200, None).succeeded());
        assert!(ended(302, Some(0)).succeeded());
        assert!(!ended(404, None).succeeded());
        assert!(!ended(200, Some(3)).succeeded());
        let failed = Ended::failed(&Error::TooLarge("big".into()));
        assert_eq!(
            (failed.http_status, failed.error.as_deref()),
            (413, Some("payload_too_large: big"))
        );
    }
}
