//! The journal: every execution write goes through one task that commits whatever has piled up in one
//! transaction, so a burst of invocations costs one fsync, not one each.
//!
//! Sync invocations hand their record over and move on ([`Journal::record`]); an async submission or an
//! attempt's result waits for its commit ([`Journal::commit`]) because it is acknowledged, or acted on,
//! afterwards. Followers of a function's log watch [`Journal::committed`] to know when to read again.
//! A background task deletes finished records outside the retention settings.

use crate::config::ExecutionSettings;
use crate::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use wafer_store::{ExecutionStore, Retention, StoreError, Write};

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

struct Op {
    write: Write,
    ack: Option<oneshot::Sender<Result<bool, Failure>>>,
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
                linger(&mut receiver, &mut ops).await;
                let (writes, acks): (Vec<_>, Vec<_>) =
                    ops.drain(..).map(|op| (op.write, op.ack)).unzip();
                let result = write_batch(store.as_ref(), writes.into()).await;
                if let Err(e) = &result {
                    tracing::error!("cannot store execution records: {e}");
                }
                for (i, ack) in acks.into_iter().enumerate() {
                    if let Some(ack) = ack {
                        let outcome = match &result {
                            Ok(applied) => Ok(applied.get(i).copied().unwrap_or(false)),
                            Err(e) => Err((e.to_string(), matches!(e, StoreError::Unavailable(_)))),
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

    /// Queues a write without waiting for it (committed within [`LINGER`] of the last commit at the
    /// latest, unless the store is slow); under a backlog it is dropped and counted.
    pub fn record(&self, write: Write) {
        if self.sender.try_send(Op { write, ack: None }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes durably; returns whether the write took effect (see [`Write::Finish`]).
    pub async fn commit(&self, write: Write) -> Result<bool, Error> {
        let (ack, done) = oneshot::channel();
        let unavailable = || Error::Unavailable("the execution journal has stopped".into());
        self.sender
            .send(Op {
                write,
                ack: Some(ack),
            })
            .await
            .map_err(|_| unavailable())?;
        done.await
            .map_err(|_| unavailable())?
            .map_err(|(message, unavailable)| match unavailable {
                true => Error::Unavailable(message),
                false => Error::Internal(message),
            })
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

/// Lets a batch of records that no writer waits for grow for up to [`LINGER`], or until it is full or
/// one that a writer waits for arrives: under load one commit then carries many records instead of a
/// few, and an acknowledged write is never held back.
async fn linger(receiver: &mut mpsc::Receiver<Op>, ops: &mut Vec<Op>) {
    let waited_for = |ops: &[Op]| ops.iter().any(|op| op.ack.is_some());
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
/// applied, which the queue takes for "the execution moved on" and leaves alone.
async fn write_batch(
    store: &dyn ExecutionStore,
    writes: Arc<[Write]>,
) -> Result<Vec<bool>, StoreError> {
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut wait = FIRST_RETRY;
    loop {
        match store.write(writes.clone()).await {
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
