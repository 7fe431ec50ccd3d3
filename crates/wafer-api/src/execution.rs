//! Execution records: one per invocation, sync or async, with what it used and logged.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// What started an execution.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// A request to `/fn/{name}` or one of the function's routes.
    Http,
    /// A synchronous `POST /v1/functions/{name}/invoke`.
    Api,
    /// `POST /v1/functions/{name}/invoke?async=true`, run by a queue worker.
    Async,
    /// The function's `schedule`.
    Cron,
    /// Another function, through `http://{name}.fn.internal/` or `proxy_invoke_service`.
    Call,
    /// Another function's execution ended, and this function is its `on_success` or `on_failure`
    /// destination: the request body is that execution's record.
    Destination,
}

/// Where an execution stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionStatus {
    /// Waiting in the queue (first attempt, or a retry after its backoff).
    Queued,
    /// Running now.
    Running,
    /// Finished well: a 2xx/3xx response, or exit code 0.
    Succeeded,
    /// Finished badly, and will not be tried again (sync executions are tried once).
    Failed,
    /// An async or cron execution that failed on every one of its attempts.
    Dead,
    /// An async execution that waited in the queue past its function's `max_event_age_ms`, and was
    /// not run.
    Expired,
}

macro_rules! names {
    ($ty:ty, $what:literal, $($variant:ident => $name:literal),+) => {
        impl $ty {
            /// The name used in the API and the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " `{}`: expected one of {}"),
                        other,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}

names!(Trigger, "trigger", Http => "http", Api => "api", Async => "async", Cron => "cron", Call => "call",
    Destination => "destination");
names!(LogLevel, "log level", Trace => "trace", Debug => "debug", Info => "info", Warn => "warn",
    Error => "error", Critical => "critical");
names!(ExecutionStatus, "status", Queued => "queued", Running => "running",
    Succeeded => "succeeded", Failed => "failed", Dead => "dead", Expired => "expired");

impl ExecutionStatus {
    /// Whether the execution is over for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Dead | Self::Expired
        )
    }

    /// Whether it ended without succeeding after it was queued: what a retry or redrive takes back.
    pub fn is_dead_letter(self) -> bool {
        matches!(self, Self::Dead | Self::Expired)
    }
}

/// What one attempt used.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ExecutionUsage {
    /// Time to create the instance, in microseconds.
    pub instantiate_us: u64,
    /// CPU time spent running the guest, in microseconds.
    pub cpu_us: u64,
    /// The most linear memory the instance held, in bytes.
    pub peak_memory_bytes: u64,
    /// Fuel burnt, on a server that meters fuel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
}

/// One execution of a function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Execution {
    /// Its id (time-ordered: newer ids sort after older ones).
    pub id: String,
    /// The function it ran.
    pub function: String,
    /// The version that ran (for a queued execution, the version live when it was submitted).
    pub version: u32,
    /// What started it.
    pub trigger: Trigger,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The most attempts it gets.
    pub max_attempts: u32,
    /// When it was submitted (RFC 3339, UTC).
    pub queued_at: String,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When its latest attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When a queued execution is due to run (after a retry's backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The latest attempt's duration, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// The HTTP status an http or wagi function (or wafer, on its behalf) answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// A command's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why the latest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What an async, cron or command run produced: the response body or stdout (invalid UTF-8 replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Whether `output` was cut off at the server's cap.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// What the latest attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ExecutionUsage>,
    /// Where the result is posted when the execution ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    /// `pending`, `delivered` or `failed`, when there is a callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_state: Option<String>,
    /// `pending`, `delivered`, `failed` or `none` (nothing to deliver), when the execution ended owing
    /// its function's `on_success` or `on_failure` destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_state: Option<String>,
    /// Its log lines (only when one execution is fetched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogEntry>,
}

/// The answer of `POST /v1/functions/{name}/redrive`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Redriven {
    /// How many dead or expired executions went back in the queue.
    pub redriven: u64,
}

/// A page of executions, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExecutionList {
    /// The executions on this page.
    pub executions: Vec<Execution>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One line a function logged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct LogEntry {
    /// Its position in the server's log; pass as `after` to resume after it.
    pub seq: i64,
    /// The execution that wrote it.
    pub execution_id: String,
    /// The function that wrote it.
    pub function: String,
    /// When the execution ended (RFC 3339, UTC).
    pub at: String,
    /// `stdout`, `stderr`, or `log` (`wasi:logging` and proxy-wasm's `proxy_log`).
    pub stream: String,
    /// Its severity.
    pub level: LogLevel,
    /// The line.
    pub line: String,
}

/// How severe a log line is, least first. Lines from `wasi:logging` and `proxy_log` carry the level the
/// guest gave; a stdout or stderr line is `info` unless it starts with a level word (`ERROR`, `warn:`,
/// `[debug]` ...).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    Serialize,
    Deserialize,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    /// Step-by-step detail.
    Trace,
    /// Detail for finding a fault.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
    /// A failure that stops the function.
    Critical,
}

impl LogLevel {
    /// Every level, least severe first; a level's position is its rank.
    pub const ALL: [LogLevel; 6] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Critical,
    ];

    /// Its rank, 0 (trace) to 5 (critical), as the database orders levels.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The level of `rank`, or `info` for a rank no level has.
    pub fn from_rank(rank: i64) -> Self {
        usize::try_from(rank)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or_default()
    }

    /// The level a log line announces with a leading level word, bare or in brackets, followed by `:`,
    /// `]` or a space: `ERROR: disk full`, `[warn] slow`, `debug cache miss`. Case is ignored; `warning`,
    /// `err` and `fatal` are understood too.
    pub fn announced(line: &str) -> Option<Self> {
        let line = line.trim_start();
        let rest = line.strip_prefix('[').unwrap_or(line);
        let word_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_len);
        let ends_well = after.is_empty() || after.starts_with([':', ']', ' ', '\t']);
        if !ends_well {
            return None;
        }
        Some(match word.to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" | "err" => Self::Error,
            "critical" | "fatal" => Self::Critical,
            _ => return None,
        })
    }
}

/// Log lines, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct LogList {
    /// The lines.
    pub logs: Vec<LogEntry>,
}

/// The answer to an async invocation: it is stored and will run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AsyncAccepted {
    /// The execution to poll with `GET /v1/executions/{id}`.
    pub execution_id: String,
}

/// Minimum, mean and maximum of one measure.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Summary {
    /// The smallest value.
    pub min: f64,
    /// The mean.
    pub avg: f64,
    /// The largest value.
    pub max: f64,
}

/// A function's executions summarised (those still kept under the retention settings).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ExecutionStats {
    /// The function.
    pub function: String,
    /// Executions kept.
    pub count: u64,
    /// How many are in each status.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Duration of finished attempts, in milliseconds.
    pub duration_ms: Summary,
    /// CPU time of finished attempts, in milliseconds.
    pub cpu_ms: Summary,
    /// Peak linear memory of finished attempts, in bytes.
    pub peak_memory_bytes: Summary,
    /// Instantiation time of finished attempts, in microseconds.
    pub instantiate_us: Summary,
    /// Every attempt that ended since `since`, counted as it ended (pruned and dropped records
    /// included), in buckets of `bucket`: present when the request gave `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<crate::rollup::StatsWindow>,
}

/// The async queue now (`GET /v1/queue`): its depth and age, what waits to be retried, and what
/// died lately.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct QueueView {
    /// Executions waiting to run (first attempts and retries).
    pub queued: u64,
    /// Executions running now.
    pub running: u64,
    /// How long the oldest queued execution has waited, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// Queued executions that have failed at least once and wait for another attempt, newest first
    /// (of the newest queued).
    pub retrying: Vec<Execution>,
    /// The newest dead letters: executions that failed every attempt, or expired unrun.
    pub dead: Vec<Execution>,
}

#[cfg(test)]
mod tests {
    use super::LogLevel;

    #[test]
    fn a_leading_level_word_is_the_lines_level() {
        for (line, level) in [
            ("ERROR: disk full", Some(LogLevel::Error)),
            ("[warn] slow upstream", Some(LogLevel::Warn)),
            ("  Warning: deprecated", Some(LogLevel::Warn)),
            ("debug cache miss", Some(LogLevel::Debug)),
            ("fatal", Some(LogLevel::Critical)),
            ("[TRACE]", Some(LogLevel::Trace)),
            ("errors are fine", None),
            ("information", None),
            ("hello", None),
            ("", None),
        ] {
            assert_eq!(LogLevel::announced(line), level, "{line:?}");
        }
    }

    #[test]
    fn ranks_order_levels_and_round_trip() {
        for level in LogLevel::ALL {
            assert_eq!(LogLevel::from_rank(level.rank().into()), level);
            assert_eq!(level.as_str().parse::<LogLevel>(), Ok(level));
        }
        assert!(LogLevel::Warn > LogLevel::Info);
        assert_eq!(LogLevel::from_rank(99), LogLevel::Info);
    }
}
