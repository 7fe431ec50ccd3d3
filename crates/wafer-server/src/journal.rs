//! The journal: every execution write goes through one task that commits whatever has piled up in one
//! transaction, so a burst of invocations costs one fsync, not one each.
//!
//! Sync invocations hand their record over and move on ([`Journal::record`]); an async submission or an
//! attempt's result waits for its commit ([`Journal::commit`]) because it is acknowledged, or acted on,
//! afterwards. The queue's claims of work ride in the same transactions: a commit that queues work or
//! ends attempts claims due work for the queue's free workers too ([`Journal::claim_for`]), so under
//! load one commit stores the submissions that arrived, records the attempts that ended and hands the
//! next executions to workers; the queue asks for a look of its own ([`Journal::look`]) only when work
//! may have come another way. Followers of a function's log watch [`Journal::committed`] to know when
//! to read again. A background task deletes finished records outside the retention settings. A stopping
//! node claims no more ([`Journal::stop_claiming`]) and waits for what it sent to be committed
//! ([`Journal::flush`]).

use crate::config::ExecutionSettings;
use crate::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use wafer_store::{Claim, Claimed, ExecutionStore, Retention, StoreError, Write, Written};

/// Writes waiting for the journal task beyond this are refused (records) or wait (commits).
const BACKLOG: usize = 16 * 1024;

/// Writes committed in one transaction at most.
const BATCH: usize = 1024;

/// How long a batch of records nobody waits for waits for more before it is written: a commit's cost is
/// mostly the pages it writes (and its fsync), which a bigger batch shares.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// How long a batch is tried again while the database is unavailable, before its writers get the error.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// The first wait before a batch is tried again; it doubles up to a second.
const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a write failed: the store's message, and whether the store was unavailable (worth retrying).
type Failure = (String, bool);

/// What the journal task takes: a write, the queue's workers, or a request to claim work for them in
/// the next commit.
// Writes are most ops; boxing every one to match the small others would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
enum Op {
    Write {
        write: Write,
        ack: Option<oneshot::Sender<Result<bool, Failure>>>,
    },
    ClaimFor(Box<Workers>),
    Look(oneshot::Sender<Result<Looked, Failure>>),
    /// Claims nothing more: the workers are forgotten, which closes their hand-over channel.
    StopClaiming,
    /// Answers once everything sent before it has been committed.
    Flush(oneshot::Sender<()>),
}

/// What a look ([`Journal::look`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looked {
    /// No worker was free, so nothing was claimed.
    NoneFree,
    /// This many executions were claimed and handed over.
    Claimed(usize),
}

/// Executions claimed for workers, each with the permit of the worker it is for.
pub type Handed = Vec<(Claimed, OwnedSemaphorePermit)>;

/// The queue's workers, as the journal claims work for them: a permit of `free` for each one free.
pub struct Workers {
    /// The node claiming.
    pub node: String,
    /// How long a claim holds without renewal.
    pub lease: std::time::Duration,
    /// A permit for each free worker.
    pub free: std::sync::Arc<Semaphore>,
    /// Where claimed executions go.
    pub hand: mpsc::UnboundedSender<Handed>,
}

impl Workers {
    /// A claim for every free worker, holding their permits, if one is free.
    fn claim(&self) -> Option<(Claim, OwnedSemaphorePermit)> {
        let free = u32::try_from(self.free.available_permits()).unwrap_or(u32::MAX);
        if free == 0 {
            return None;
        }
        let permits = self.free.clone().try_acquire_many_owned(free).ok()?;
        let claim = Claim {
            node: self.node.clone(),
            lease: self.lease,
            limit: free,
        };
        Some((claim, permits))
    }

    /// Hands what a claim took to the workers, a permit each; the permits left over free their workers
    /// again.
    fn hand(
        &self,
        claimed: Result<Vec<Claimed>, Failure>,
        mut permits: OwnedSemaphorePermit,
    ) -> Result<Looked, Failure> {
        let handed: Handed = claimed?
            .into_iter()
            .filter_map(|execution| Some((execution, permits.split(1)?)))
            .collect();
        let count = handed.len();
        if count > 0 {
            let _ = self.hand.send(handed);
        }
        Ok(Looked::Claimed(count))
    }
}

/// Whether `write` queues work or frees a worker, so its commit is the moment to claim.
fn makes_work(write: &Write) -> bool {
    match write {
        Write::Insert(new) => new.attempt.is_none(),
        Write::Finish { .. } => true,
    }
}

impl Op {
    /// Whether someone waits for this op's commit.
    fn waited_for(&self) -> bool {
        !matches!(self, Op::Write { ack: None, .. })
    }
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
            let mut workers: Option<Box<Workers>> = None;
            loop {
                if receiver.recv_many(&mut ops, BATCH).await == 0 {
                    return;
                }
                linger(&mut receiver, &mut ops).await;
                let mut writes = Vec::with_capacity(ops.len());
                let mut acks = Vec::with_capacity(ops.len());
                let mut looks = Vec::new();
                let mut flushes = Vec::new();
                for op in ops.drain(..) {
                    match op {
                        Op::Write { write, ack } => {
                            writes.push(write);
                            acks.push(ack);
                        }
                        Op::ClaimFor(these) => workers = Some(these),
                        Op::Look(ack) => looks.push(ack),
                        Op::StopClaiming => workers = None,
                        Op::Flush(ack) => flushes.push(ack),
                    }
                }
                // A batch that makes work, or that was asked to, claims work for the free workers.
                let asked = !looks.is_empty() || writes.iter().any(makes_work);
                let claim = workers
                    .as_ref()
                    .filter(|_| asked)
                    .and_then(|workers| workers.claim());
                if writes.is_empty() && claim.is_none() {
                    for ack in looks {
                        let _ = ack.send(Ok(Looked::NoneFree));
                    }
                    flushes.into_iter().for_each(|ack| {
                        let _ = ack.send(());
                    });
                    continue;
                }
                let (claim, permits) = claim.unzip();
                let result = write_batch(store.as_ref(), writes.into(), claim).await;
                if let Err(e) = &result {
                    tracing::error!("cannot store execution records: {e}");
                }
                let (applied, claimed) = match result {
                    Ok(Written { applied, claimed }) => {
                        let claimed = claimed.map_err(|e| {
                            tracing::error!("cannot claim queued executions: {e}");
                            failure(e)
                        });
                        (Ok(applied), claimed)
                    }
                    Err(e) => {
                        let failed = failure(e);
                        (Err(failed.clone()), Err(failed))
                    }
                };
                for (i, ack) in acks.into_iter().enumerate() {
                    if let Some(ack) = ack {
                        let outcome = match &applied {
                            Ok(applied) => Ok(applied.get(i).copied().unwrap_or(false)),
                            Err(failure) => Err(failure.clone()),
                        };
                        let _ = ack.send(outcome);
                    }
                }
                let looked = match (permits, &workers) {
                    (Some(permits), Some(workers)) => workers.hand(claimed, permits),
                    _ => Ok(Looked::NoneFree),
                };
                for ack in looks {
                    let _ = ack.send(looked.clone());
                }
                flushes.into_iter().for_each(|ack| {
                    let _ = ack.send(());
                });
                generation.send_modify(|g| *g += 1);
            }
        });
        Self {
            sender,
            committed,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues a write without waiting for it (committed within [`LINGER`] of the last commit at the
    /// latest, unless the store is slow); under a backlog it is dropped and counted.
    pub fn record(&self, write: Write) {
        if self
            .sender
            .try_send(Op::Write { write, ack: None })
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes durably; returns whether the write took effect (see [`Write::Finish`]).
    pub async fn commit(&self, write: Write) -> Result<bool, Error> {
        let (ack, done) = oneshot::channel();
        self.send(Op::Write {
            write,
            ack: Some(ack),
        })
        .await?;
        answer(done).await
    }

    /// From now on, every commit that queues work or ends an attempt claims due work for `workers`'
    /// free workers and hands it to them.
    pub async fn claim_for(&self, workers: Workers) -> Result<(), Error> {
        self.send(Op::ClaimFor(Box::new(workers))).await
    }

    /// Claims due work for the free workers in the next commit, even one with nothing else to write
    /// (see [`Journal::claim_for`]), and says what it found once that has committed.
    pub async fn look(&self) -> Result<Looked, Error> {
        let (ack, done) = oneshot::channel();
        self.send(Op::Look(ack)).await?;
        answer(done).await
    }

    /// Claims no more work for the workers [`Journal::claim_for`] named: commits from now on only
    /// write, and the workers' hand-over channel closes once what was claimed has been handed over.
    pub async fn stop_claiming(&self) -> Result<(), Error> {
        self.send(Op::StopClaiming).await
    }

    /// Waits until every write sent before this call has been committed (or has failed, which its
    /// writer hears of), records nobody waits for included.
    pub async fn flush(&self) -> Result<(), Error> {
        let (ack, done) = oneshot::channel();
        self.send(Op::Flush(ack)).await?;
        done.await.map_err(|_| stopped())
    }

    async fn send(&self, op: Op) -> Result<(), Error> {
        self.sender.send(op).await.map_err(|_| stopped())
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

/// The error for a write the journal can no longer take.
fn stopped() -> Error {
    Error::Unavailable("the execution journal has stopped".into())
}

/// The answer the journal sends to a waiting writer.
async fn answer<T>(done: oneshot::Receiver<Result<T, Failure>>) -> Result<T, Error> {
    done.await
        .map_err(|_| stopped())?
        .map_err(|(message, unavailable)| match unavailable {
            true => Error::Unavailable(message),
            false => Error::Internal(message),
        })
}

/// A store error as the journal hands it to waiting writers: a database that cannot be reached or a
/// full disk is unavailable for now, not broken.
fn failure(e: StoreError) -> Failure {
    let unavailable = matches!(e, StoreError::Unavailable(_) | StoreError::NoSpace(_));
    (e.to_string(), unavailable)
}

/// Lets a batch of records that no writer waits for grow for up to [`LINGER`], or until it is full or
/// one that a writer waits for arrives: under load one commit then carries many records instead of a
/// few, and an acknowledged write is never held back.
async fn linger(receiver: &mut mpsc::Receiver<Op>, ops: &mut Vec<Op>) {
    let waited_for = |ops: &[Op]| ops.iter().any(Op::waited_for);
    if waited_for(ops) {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        while ops.len() < BATCH {
            let seen = ops.len();
            if receiver.recv_many(ops, BATCH - seen).await == 0 || waited_for(&ops[seen..]) {
                return;
            }
        }
    })
    .await;
}

/// Writes a batch, trying it again while the store is unavailable (a database restarting, a connection
/// lost) for up to [`RETRY_FOR`]. A batch whose commit was lost on the way may have been applied: the
/// store takes it again without storing anything twice, and a finish it recorded then counts as not
/// applied, which the queue takes for "the execution moved on" and leaves alone; what a lost claim took
/// is nobody's, and goes back to the queue when its lease ends.
async fn write_batch(
    store: &dyn ExecutionStore,
    writes: Arc<[Write]>,
    claim: Option<Claim>,
) -> Result<Written, StoreError> {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut wait = FIRST_RETRY;
    loop {
        match store.write(writes.clone(), claim.clone()).await {
            Err(StoreError::Unavailable(e)) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(
                    writes = writes.len(),
                    "the store is unavailable, trying again: {e}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            result => return result,
        }
    }
}

/// How often finished executions outside the retention settings are deleted.
pub(crate) const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts the task that deletes the finished executions in `store` outside the retention `settings`.
pub fn start_retention(store: Arc<dyn ExecutionStore>, settings: &ExecutionSettings) {
    let retention = Retention {
        per_function: settings.retain_per_function,
        older_than: settings.retain,
        dead_per_function: settings.retain_dead_per_function,
        dead_older_than: settings.retain_dead,
    };
    tokio::spawn(async move {
        loop {
            match store.prune(retention).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A queued execution of `f` with id `id`.
    fn queued(id: &str) -> Write {
        let new = wafer_store::NewExecution::queued(
            id.into(),
            "f".into(),
            1,
            wafer_api::Trigger::Async,
            3,
            now_ms(),
        );
        Write::Insert(new)
    }

    #[tokio::test]
    async fn a_commit_that_queues_work_claims_it_for_the_free_workers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(wafer_store::SqliteStore::open(dir.path()).unwrap());
        let journal = Journal::start(store.clone());
        let free = Arc::new(Semaphore::new(2));
        let (hand, mut handed) = mpsc::unbounded_channel();
        let workers = Workers {
            node: "n1".into(),
            lease: std::time::Duration::from_secs(60),
            free: free.clone(),
            hand,
        };
        journal.claim_for(workers).await.unwrap();

        assert!(journal.commit(queued("e1")).await.unwrap());
        let first = handed.recv().await.unwrap();
        let ids: Vec<&str> = first.iter().map(|(c, _)| c.id.as_str()).collect();
        assert_eq!(ids, ["e1"]);
        assert_eq!(free.available_permits(), 1, "one worker taken, one free");

        // Two more for the one free worker: the older is handed over, the other waits in the queue.
        let (two, three) = tokio::join!(journal.commit(queued("e2")), async {
            tokio::task::yield_now().await;
            journal.commit(queued("e3")).await
        });
        assert!(two.unwrap() && three.unwrap());
        let second = handed.recv().await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].0.id, "e2");
        assert_eq!(free.available_permits(), 0);
        assert!(handed.try_recv().is_err(), "no worker was free for e3");

        // A worker comes free; a commit of nothing to do with the queue claims nothing for it.
        drop(first);
        let ran = wafer_store::Attempt {
            status: Some(wafer_api::ExecutionStatus::Succeeded),
            ..wafer_store::Attempt::default()
        };
        let sync = wafer_store::NewExecution {
            attempt: Some(ran),
            ..wafer_store::NewExecution::queued(
                "s1".into(),
                "f".into(),
                1,
                wafer_api::Trigger::Http,
                1,
                now_ms(),
            )
        };
        assert!(journal.commit(Write::Insert(sync)).await.unwrap());
        assert!(handed.try_recv().is_err());
        assert_eq!(free.available_permits(), 1);
        // Ending e1's attempt makes work: its commit claims e3 for the free worker.
        let end = Write::Finish {
            id: "e1".into(),
            node: "n1".into(),
            attempt: 1,
            outcome: wafer_store::Attempt {
                status: Some(wafer_api::ExecutionStatus::Succeeded),
                ..wafer_store::Attempt::default()
            },
        };
        assert!(journal.commit(end).await.unwrap());
        let third = handed.recv().await.unwrap();
        assert_eq!((third.len(), third[0].0.id.as_str()), (1, "e3"));
        assert_eq!(free.available_permits(), 0);

        // Asked to look, a commit with nothing to write claims for the free workers, if there are any.
        assert!(journal.commit(queued("e4")).await.unwrap());
        assert_eq!(journal.look().await.unwrap(), Looked::NoneFree);
        drop(second);
        assert_eq!(journal.look().await.unwrap(), Looked::Claimed(1));
        let fourth = handed.recv().await.unwrap();
        assert_eq!(fourth[0].0.id, "e4");
        assert_eq!(journal.look().await.unwrap(), Looked::NoneFree);
        drop((third, fourth));
        assert_eq!(journal.look().await.unwrap(), Looked::Claimed(0));
        assert_eq!(
            free.available_permits(),
            2,
            "a claim that took nothing frees its workers"
        );
    }

    #[tokio::test]
    async fn a_stopped_claimer_gets_nothing_more_and_a_flush_waits_for_unwaited_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(wafer_store::SqliteStore::open(dir.path()).unwrap());
        let journal = Journal::start(store.clone());
        let (hand, mut handed) = mpsc::unbounded_channel();
        let workers = Workers {
            node: "n1".into(),
            lease: std::time::Duration::from_secs(60),
            free: Arc::new(Semaphore::new(4)),
            hand,
        };
        journal.claim_for(workers).await.unwrap();
        assert!(journal.commit(queued("e1")).await.unwrap());
        journal.stop_claiming().await.unwrap();
        // What was claimed before the stop is still handed over; then the channel closes.
        assert_eq!(handed.recv().await.unwrap()[0].0.id, "e1");
        assert!(handed.recv().await.is_none());
        assert!(journal.commit(queued("e2")).await.unwrap());
        assert_eq!(journal.look().await.unwrap(), Looked::NoneFree);

        // A record nobody waits for is in the store once a flush after it returns.
        journal.record(queued("e3"));
        journal.flush().await.unwrap();
        let e3 = store.get_execution("e3", false).await.unwrap().unwrap();
        let e2 = store.get_execution("e2", false).await.unwrap().unwrap();
        assert_eq!(
            (e2.status, e3.status),
            (
                wafer_api::ExecutionStatus::Queued,
                wafer_api::ExecutionStatus::Queued
            )
        );
    }

    #[test]
    fn ids_sort_by_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id() > a);
    }
}
