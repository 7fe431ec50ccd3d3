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
    /// Whether, if this end is final, the execution owes its function's destination for it.
    pub destination: bool,
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
    /// The alias or version the call named (`None`: `live`), resolved when each attempt runs.
    pub qualifier: Option<String>,
    /// How many destinations led to it (0 unless its trigger is `destination`).
    pub hops: u32,
    /// Its one attempt, for a sync execution that already ran.
    pub attempt: Option<Attempt>,
}

impl NewExecution {
    /// A queued execution of `function` with `request` and `body`, submitted now (`queued_at`), to be
    /// tried up to `max_attempts` times.
    pub fn queued(
        id: String,
        function: String,
        version: u32,
        trigger: Trigger,
        max_attempts: u32,
        queued_at: i64,
    ) -> Self {
        Self {
            id,
            function,
            version,
            trigger,
            max_attempts,
            queued_at,
            request: None,
            body: Vec::new(),
            callback_url: None,
            qualifier: None,
            hops: 0,
            attempt: None,
        }
    }
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

/// A claim of up to `limit` due executions for `node`, leased for `lease` (see [`ExecutionStore::claim`]).
#[derive(Debug, Clone)]
pub struct Claim {
    /// The node claiming.
    pub node: String,
    /// How long its claims hold without renewal.
    pub lease: Duration,
    /// The most executions it takes.
    pub limit: u32,
}

impl Claim {
    /// How many of the batch's own new executions the claim may still take once it has taken `due`,
    /// the work due before the batch.
    pub(crate) fn left_after(&self, due: &[Claimed]) -> usize {
        usize::try_from(self.limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(due.len())
    }
}

/// What a batch ([`ExecutionStore::write`]) did.
#[derive(Debug)]
pub struct Written {
    /// For each write, whether it took effect.
    pub applied: Vec<bool>,
    /// What the batch's claim took (nothing without one), or why it failed.
    pub claimed: Result<Vec<Claimed>, StoreError>,
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
    /// The alias or version the call named (`None`: `live`).
    pub qualifier: Option<String>,
    /// How many destinations led to it.
    pub hops: u32,
    /// Whether it has a callback URL (its final end owes a callback).
    pub callback: bool,
}

impl Claimed {
    /// The first attempt of `new`, a queued execution claimed as it is stored.
    pub(crate) fn first(new: &NewExecution) -> Self {
        Self {
            id: new.id.clone(),
            function: new.function.clone(),
            trigger: new.trigger,
            attempt: 1,
            max_attempts: new.max_attempts,
            queued_at: new.queued_at,
            request: new.request.clone(),
            body: new.body.clone(),
            qualifier: new.qualifier.clone(),
            hops: new.hops,
            callback: new.callback_url.is_some(),
        }
    }
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

/// How many finished executions to keep: those that ended `dead` or `expired` (dead letters, kept
/// with their request for a retry) by their own rule.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Per function, the newest this many.
    pub per_function: u64,
    /// None that finished longer ago than this.
    pub older_than: Duration,
    /// Per function, the newest this many dead letters.
    pub dead_per_function: u64,
    /// No dead letter that ended longer ago than this.
    pub dead_older_than: Duration,
}

/// What an async submission may be refused for, or answered with instead of a new execution.
#[derive(Debug, Clone, Default)]
pub struct Admit {
    /// The submission's idempotency key and the digest of its request: a submission of the same
    /// function with the same key within `key_window` is the same execution.
    pub key: Option<(String, String)>,
    /// How long a key names its execution.
    pub key_window: Duration,
    /// The most executions of the function that may wait in the queue.
    pub max_queued: Option<u64>,
}

/// How an async submission went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored and queued.
    Queued,
    /// A submission with the same key came first: this is its execution. `same_request` says whether
    /// its request had the same digest.
    Existing {
        /// The first submission's execution.
        id: String,
        /// Whether the requests match.
        same_request: bool,
    },
    /// The function has `max_queued` executions waiting: nothing stored.
    Full,
}

/// What a retry of one execution found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Back in the queue.
    Queued,
    /// No such execution.
    Missing,
    /// It has not ended `dead` or `expired`.
    NotDead(ExecutionStatus),
    /// Its request was not kept (it ended before wafer kept the requests of dead letters).
    NotKept,
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

/// What a finished execution may owe: a callback to its `callback_url`, or its record delivered to its
/// function's `on_success` or `on_failure` destination. Each is claimed and recorded the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To the execution's `callback_url`.
    Callback,
    /// To its function's destination.
    Destination,
}

impl Delivery {
    /// The prefix of its columns.
    pub(crate) fn column(self) -> &'static str {
        match self {
            Delivery::Callback => "callback",
            Delivery::Destination => "destination",
        }
    }
}

/// A delivery owed, claimed by a node.
#[derive(Debug, Clone)]
pub struct Due {
    /// Deliveries tried so far.
    pub attempts: u32,
    /// How many destinations led to the execution.
    pub hops: u32,
    /// The finished execution (its `callback_url` is where a callback goes).
    pub execution: Execution,
}

/// How a delivery went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Delivered.
    Yes,
    /// Not delivered; try again this long from now.
    RetryIn(Duration),
    /// Not delivered, and given up.
    GaveUp,
    /// There was nothing to deliver (the function has no destination for this end, or the chain of
    /// destinations is too long).
    Nothing,
}

/// Execution storage. Every method is atomic.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Applies a batch of writes in one transaction and, with `claim`, claims queued work in the same
    /// transaction, so one commit serves both; durable when it returns. The claim takes work that was
    /// due before the batch first, oldest first, then the executions the batch queues, in order; a
    /// store may store those already claimed rather than queued and then claimed, which writes their
    /// row once less. For each write,
    /// whether it took effect (see [`Write::Finish`]). A claim that fails is undone alone: the writes
    /// stand and [`Written::claimed`] has the error. Applying a batch again after it failed, or after a
    /// connection was lost before its commit was confirmed, is safe: an insert already stored is not
    /// stored twice (and what a lost claim took goes back to the queue when its lease ends).
    async fn write(
        &self,
        writes: Arc<[Write]>,
        claim: Option<Claim>,
    ) -> Result<Written, StoreError>;

    /// Claims up to `limit` queued executions that are due, oldest due first, for `node`: marks them
    /// running, counts the attempt, and leases them to `node` for `lease`. A batch of no writes.
    async fn claim(
        &self,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let claim = Claim {
            node: node.to_owned(),
            lease,
            limit,
        };
        self.write(Arc::from([]), Some(claim)).await?.claimed
    }

    /// Extends to `lease` from now the leases `node` holds on the running executions `ids`. Returns how
    /// many of them it still holds.
    async fn renew(&self, node: &str, ids: &[String], lease: Duration) -> Result<u64, StoreError>;

    /// Puts every running execution whose lease has expired (its node stopped renewing it) back in the
    /// queue, due now — or, when it has had its `max_attempts`, marks it `dead` (owing its callback and
    /// its destination, keeping its request).
    /// Returns how many there were.
    async fn sweep_expired(&self) -> Result<u64, StoreError>;

    /// Puts every running execution `node` claimed back in the queue (or marks it `dead`, as
    /// [`ExecutionStore::sweep_expired`] does), with any claimed before claims named their node: when a
    /// node starts, nothing of its own is running. Other nodes' claims are left alone. Returns how many
    /// there were.
    async fn requeue_claims(&self, node: &str) -> Result<u64, StoreError>;

    /// Gives back the claims `node` holds on the running executions `ids`, as a stopping node does for
    /// the attempts it cut short: each goes back in the queue, due now, its attempt not counted (it
    /// never ended), so it runs again — on another node, or on this one after its restart — as the
    /// same attempt. An attempt that ends afterwards is refused, as any end of a claim no longer held.
    /// Returns how many it gave back.
    async fn release_claims(&self, node: &str, ids: &[String]) -> Result<u64, StoreError>;

    /// How long until the next queued execution is due (zero when one is due now), if any is queued.
    async fn next_due(&self) -> Result<Option<Duration>, StoreError>;

    /// One execution, with its log lines when `with_logs`.
    async fn get_execution(
        &self,
        id: &str,
        with_logs: bool,
    ) -> Result<Option<Execution>, StoreError>;

    /// Stores a new async execution unless [`Admit`] says otherwise; durable when it returns.
    async fn enqueue(&self, new: NewExecution, admit: Admit) -> Result<Enqueued, StoreError>;

    /// Puts dead letter `id` back in the queue, due now, as further attempts of the same execution
    /// with its kept request and `budget` more attempts; its callback is owed again when it ends.
    async fn retry(&self, id: &str, budget: u32) -> Result<Retried, StoreError>;

    /// [`ExecutionStore::retry`] for every dead letter of `function` whose request was kept (that
    /// ended within `since`, when given); returns how many were queued.
    async fn redrive(
        &self,
        function: &str,
        since: Option<Duration>,
        budget: u32,
    ) -> Result<u64, StoreError>;

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

    /// Claims up to `limit` deliveries of `kind` that are due for `node`: none is due again for anyone
    /// until `lease` has passed, so two nodes never make one delivery at once, and one whose node died
    /// is made by another after the lease.
    async fn due_deliveries(
        &self,
        kind: Delivery,
        node: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Due>, StoreError>;

    /// Records how a delivery of `kind` by `node` went. Ignored (`false`) unless `node` still holds
    /// its claim.
    async fn delivery_done(
        &self,
        kind: Delivery,
        id: &str,
        node: &str,
        outcome: Delivered,
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
