//! The execution trait: execution records, their log lines, the async queue they form, callbacks owed,
//! and the cron schedule's last ticks.
//!
//! Times in records are milliseconds since the Unix epoch (UTC), as the node that ran the attempt saw
//! them; the API types this trait returns render them as RFC 3339. Every time the store *compares* —
//! whether a queued execution is due, whether a lease has expired, whether a callback is due, what is old
//! enough to delete — is the store's own clock (the database's), never a node's, so nodes whose clocks
//! differ still agree on the queue. Callers hand over durations ("retry in 2 s"), not instants.
//!
//! A claim belongs to a node and holds a lease: the node renews it while the attempt runs, any node
//! may put an execution whose lease expired back in the queue, and an attempt's end is recorded only
//! for the node and attempt that hold the claim (fencing), so an attempt that outlived its lease can
//! never overwrite the attempt that replaced it.
//!
//! Writes come in batches ([`ExecutionStore::write`]) so the server can commit many records with one
//! fsync.

use crate::StoreError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use wafer_api::{
    Execution, ExecutionStats, ExecutionStatus, ExecutionUsage, LogEntry, LogLevel, MinuteRollup,
    Trigger,
};

/// How long per-minute rollups are kept: two days, so a day's window is always whole.
pub const ROLLUP_RETENTION: Duration = Duration::from_secs(48 * 3600);

/// The HTTP request of an async execution, kept until it has run (the body is stored beside it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredRequest {
    /// The method.
    pub method: String,
    /// The path and query the function sees.
    pub path: String,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
}

/// A line to store in an execution's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLog {
    /// `stdout`, `stderr` or `log`.
    pub stream: &'static str,
    /// Its severity.
    pub level: LogLevel,
    /// The line.
    pub line: String,
}

/// How one attempt ended.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// The status the execution moves to: final, or `Queued` for a retry at `next_at`.
    pub status: Option<ExecutionStatus>,
    /// The version that ran.
    pub version: u32,
    /// When the attempt started.
    pub started_at: i64,
    /// When it ended.
    pub finished_at: i64,
    /// How long it ran, in microseconds.
    pub duration_us: u64,
    /// The HTTP status answered.
    pub http_status: Option<u16>,
    /// A command's exit code.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
    /// What it produced, when that is kept (async, cron and command runs).
    pub output: Option<Vec<u8>>,
    /// Whether `output` was cut off.
    pub output_truncated: bool,
    /// What it used, when it got as far as running.
    pub usage: Option<ExecutionUsage>,
    /// For a retry (`status` `Queued`): how long from now (the store's now) it is due.
    pub retry_in: Option<Duration>,
    /// Its log lines.
    pub logs: Vec<NewLog>,
}

/// An execution to store: queued (async, cron), or already finished (sync).
#[derive(Debug, Clone)]
pub struct NewExecution {
    /// Its id.
    pub id: String,
    /// The function.
    pub function: String,
    /// The function's live version when it was submitted.
    pub version: u32,
    /// What started it.
    pub trigger: Trigger,
    /// The most attempts it gets.
    pub max_attempts: u32,
    /// When it was submitted.
    pub queued_at: i64,
    /// The request to replay (async http and wagi executions).
    pub request: Option<StoredRequest>,
    /// The request body, or a command's stdin.
    pub body: Vec<u8>,
    /// Where to post the result.
    pub callback_url: Option<String>,
    /// Its one attempt, for a sync execution that already ran.
    pub attempt: Option<Attempt>,
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store a new execution.
    Insert(NewExecution),
    /// Record how attempt number `attempt` of a running execution ended. Ignored (reported `false`) unless
    /// the execution is still running that attempt under `node`'s claim, so no attempt is ever recorded
    /// twice, nor by a node whose claim has passed to another.
    Finish {
        /// The execution.
        id: String,
        /// The node that claimed it.
        node: String,
        /// The attempt number the worker claimed.
        attempt: u32,
        /// How it ended.
        outcome: Attempt,
    },
}

/// A queued execution a worker has claimed: it is `running` with `attempt` counted.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: String,
    /// The function.
    pub function: String,
    /// What started it.
    pub trigger: Trigger,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// The most attempts it gets.
    pub max_attempts: u32,
    /// When it was submitted.
    pub queued_at: i64,
    /// The request to replay.
    pub request: Option<StoredRequest>,
    /// The body or stdin.
    pub body: Vec<u8>,
}

/// Which executions of a function to list.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only ids before (older than) this one.
    pub before: Option<String>,
    /// At most this many.
    pub limit: u32,
}

/// How many finished executions to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Per function, the newest this many.
    pub per_function: u64,
    /// None that finished longer ago than this.
    pub older_than: Duration,
}

/// The async queue at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Executions waiting (including retries waiting out their backoff).
    pub queued: u64,
    /// Executions running.
    pub running: u64,
    /// How long the oldest waiting execution has waited since it was submitted.
    pub oldest_age: Option<Duration>,
}

/// A callback owed: post `execution` to `url`.
#[derive(Debug, Clone)]
pub struct DueCallback {
    /// The URL.
    pub url: String,
    /// Deliveries tried so far.
    pub attempts: u32,
    /// The finished execution.
    pub execution: Execution,
}

/// Execution storage. Every method is atomic.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Applies a batch of writes in one transaction; durable when it returns. For each write, whether it
    /// took effect (see [`Write::Finish`]). Applying a batch again after it failed, or after a connection
    /// was lost before its commit was confirmed, is safe: an insert already stored is not stored twice.
    async fn write(&self, writes: Arc<[Write]>) -> Result<Vec<bool>, StoreError>;

    /// Claims up to `limit` queued executions that are due, oldest due first, for `node`: marks them
    /// running, counts the attempt, and leases them to `node` for `lease`.
    async fn claim(
        &self,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError>;

    /// Extends to `lease` from now the leases `node` holds on the running executions `ids`. Returns how
    /// many of them it still holds.
    async fn renew(&self, node: &str, ids: &[String], lease: Duration) -> Result<u64, StoreError>;

    /// Puts every running execution whose lease has expired (its node stopped renewing it) back in the
    /// queue, due now — or, when it has had its `max_attempts`, marks it `dead` (owing its callback).
    /// Returns how many there were.
    async fn sweep_expired(&self) -> Result<u64, StoreError>;

    /// Puts every running execution `node` claimed back in the queue (or marks it `dead`, as
    /// [`ExecutionStore::sweep_expired`] does), with any claimed before claims named their node: when a
    /// node starts, nothing of its own is running. Other nodes' claims are left alone. Returns how many
    /// there were.
    async fn requeue_claims(&self, node: &str) -> Result<u64, StoreError>;

    /// How long until the next queued execution is due (zero when one is due now), if any is queued.
    async fn next_due(&self) -> Result<Option<Duration>, StoreError>;

    /// One execution, with its log lines when `with_logs`.
    async fn get_execution(
        &self,
        id: &str,
        with_logs: bool,
    ) -> Result<Option<Execution>, StoreError>;

    /// A page of a function's executions (or, with `None`, of every function's), newest first.
    async fn list_executions(
        &self,
        function: Option<&str>,
        page: Page,
    ) -> Result<Vec<Execution>, StoreError>;

    /// A function's log lines at `level` or above, after `after` (oldest first), or its latest `limit`
    /// such lines when `after` is `None`.
    ///
    /// Lines become visible in the order of their `seq`: a reader that pages on with the last `seq` it
    /// saw never skips a line that a concurrent writer commits afterwards.
    async fn logs(
        &self,
        function: &str,
        after: Option<i64>,
        limit: u32,
        level: LogLevel,
    ) -> Result<Vec<LogEntry>, StoreError>;

    /// A function's executions summarised.
    async fn stats(&self, function: &str) -> Result<ExecutionStats, StoreError>;

    /// The queue's depth and age.
    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;

    /// Adds `rollups` to the stored per-minute rollups: counts add up, so nodes that counted attempts
    /// of one function in one minute each add their own.
    async fn add_rollups(&self, rollups: Vec<MinuteRollup>) -> Result<(), StoreError>;

    /// The stored per-minute rollups of minutes from `since_ms` on, of `function` or, with `None`, of
    /// every function; ordered by function, then minute.
    async fn rollups(
        &self,
        function: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>, StoreError>;

    /// Deletes finished executions (and their logs) outside `retention`, and rollups older than
    /// [`ROLLUP_RETENTION`]; returns how many executions.
    async fn prune(&self, retention: Retention) -> Result<u64, StoreError>;

    /// Claims up to `limit` callbacks that are due for `node`: none is due again for anyone until
    /// `lease` has passed, so two nodes never post one callback at once, and one whose node died is
    /// posted by another after the lease.
    async fn due_callbacks(
        &self,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<DueCallback>, StoreError>;

    /// Records a delivery by `node`: `delivered`, or failed with a retry `retry_in` from now (`None`:
    /// given up). Ignored (`false`) unless `node` still holds the callback's claim.
    async fn callback_done(
        &self,
        id: &str,
        node: &str,
        delivered: bool,
        retry_in: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// When `function`'s schedule last fired.
    async fn last_tick(&self, function: &str) -> Result<Option<i64>, StoreError>;

    /// Fires `function`'s schedule for `tick`: queues `execution` and records the tick, unless a tick at
    /// or after it was already recorded. Returns whether it fired.
    async fn fire_tick(
        &self,
        function: &str,
        tick: i64,
        execution: NewExecution,
    ) -> Result<bool, StoreError>;
}
