//! The journal: every execution write goes through one task that commits whatever has piled up in one
//! transaction, so a burst of invocations costs one fsync, not one each.
//!
//! Sync invocations hand their record over and move on ([`Journal::record`]); an async submission or an
//! attempt's result waits for its commit ([`Journal::commit`]) because it is acknowledged, or acted on,
//! afterwards. The queue's claims of work ride in the same transactions ([`Journal::claim`]): under
//! load one commit stores the submissions that arrived, records the attempts that ended and claims the
//! next executions. Followers of a function's log watch [`Journal::committed`] to know when to read
//! again. A background task deletes finished records outside the retention settings.

use crate::config::ExecutionSettings;
use crate::error::Error;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
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

/// What the journal task takes: a write, or a claim of queued work to make in the next commit.
// Claims are rare and small; boxing every write to match them would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
enum Op {
    Write {
        write: Write,
        ack: Option<oneshot::Sender<Result<bool, Failure>>>,
    },
    Claim {
        claim: Claim,
        ack: oneshot::Sender<Result<Vec<Claimed>, Failure>>,
    },
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
            // Claims beyond one per batch wait for the next.
            let mut claims = VecDeque::new();
            loop {
                if claims.is_empty() {
                    if receiver.recv_many(&mut ops, BATCH).await == 0 {
                        return;
                    }
                    linger(&mut receiver, &mut ops).await;
                } else {
                    while ops.len() < BATCH {
                        let Ok(op) = receiver.try_recv() else { break };
                        ops.push(op);
                    }
                }
                let mut writes = Vec::with_capacity(ops.len());
                let mut acks = Vec::with_capacity(ops.len());
                for op in ops.drain(..) {
                    match op {
                        Op::Write { write, ack } => {
                            writes.push(write);
                            acks.push(ack);
                        }
                        Op::Claim { claim, ack } => claims.push_back((claim, ack)),
                    }
                }
                let (claim, claim_ack) = claims.pop_front().unzip();
                let result = write_batch(store.as_ref(), writes.into(), claim).await;
                if let Err(e) = &result {
                    tracing::error!("cannot store execution records: {e}");
                }
                let (applied, claimed) = match result {
                    Ok(Written { applied, claimed }) => (Ok(applied), claimed.map_err(failure)),
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
                if let Some(ack) = claim_ack {
                    let _ = ack.send(claimed);
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

    /// Claims due queued work in the next commit (see [`wafer_store::ExecutionStore::claim`]).
    pub async fn claim(&self, claim: Claim) -> Result<Vec<Claimed>, Error> {
        let (ack, done) = oneshot::channel();
        self.send(Op::Claim { claim, ack }).await?;
        answer(done).await
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

/// A store error as the journal hands it to waiting writers.
fn failure(e: StoreError) -> Failure {
    let unavailable = matches!(e, StoreError::Unavailable(_));
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
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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

    #[test]
    fn ids_sort_by_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(new_id() > a);
    }
}
