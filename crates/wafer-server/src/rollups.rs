//! Per-minute rollups of finished attempts (`wafer_api::rollup`), counted here as each attempt ends —
//! before its record goes to the journal, so a record the journal drops under load still counts — and
//! added to the store every few seconds. A read merges what is still pending here, so this node's
//! figures are current at once; another node's show after its next flush. A read waits for a flush
//! in progress, whose rollups are for that moment neither pending nor stored, and a flush for the
//! reads in progress, so no read counts an attempt twice or not at all.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wafer_api::MinuteRollup;
use wafer_store::{ExecutionStore, StoreError};

/// How often pending rollups are added to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Rollups counted on this node and not yet in the store.
#[derive(Default)]
pub struct Rollups {
    pending: Mutex<HashMap<(String, i64), MinuteRollup>>,
    /// Held for writing by a flush, for reading by a read of stored and pending rollups together.
    flushing: tokio::sync::RwLock<()>,
}

impl Rollups {
    /// Counts an attempt of `function` that ended at `ended_at_ms` after `duration_us`.
    pub fn record(&self, function: &str, succeeded: bool, duration_us: u64, ended_at_ms: i64) {
        let fresh = MinuteRollup::new(function, ended_at_ms);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .entry((fresh.function.clone(), fresh.minute))
            .or_insert(fresh)
            .record(succeeded, duration_us);
    }

    /// The pending rollups of `function` (or of every function) from `since_ms` on.
    pub fn pending(&self, function: Option<&str>, since_ms: i64) -> Vec<MinuteRollup> {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending
            .values()
            .filter(|r| function.is_none_or(|f| r.function == f) && r.minute >= since_ms)
            .cloned()
            .collect()
    }

    /// The rollups `stored` reads from the store, with this node's pending ones of `function` (or of
    /// every function) from `since_ms` on, read while no flush moves rollups from one to the other.
    pub async fn with_pending<E>(
        &self,
        stored: impl Future<Output = Result<Vec<MinuteRollup>, E>>,
        function: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<MinuteRollup>, E> {
        let _no_flush = self.flushing.read().await;
        let mut rollups = stored.await?;
        rollups.extend(self.pending(function, since_ms));
        Ok(rollups)
    }

    /// Adds the pending rollups to `store`; on failure they stay pending for the next flush.
    pub async fn flush(&self, store: &dyn ExecutionStore) {
        self.flush_with(|taken| store.add_rollups(taken)).await;
    }

    /// Hands the pending rollups to `add`; if it fails they stay pending for the next flush.
    async fn flush_with<F: Future<Output = Result<(), StoreError>>>(
        &self,
        add: impl FnOnce(Vec<MinuteRollup>) -> F,
    ) {
        let _flushing = self.flushing.write().await;
        let taken: Vec<MinuteRollup> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.drain().map(|(_, rollup)| rollup).collect()
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = add(taken.clone()).await {
            tracing::warn!("cannot store invocation rollups, keeping them for later: {e}");
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for rollup in taken {
                pending
                    .entry((rollup.function.clone(), rollup.minute))
                    .and_modify(|newer| newer.add(&rollup))
                    .or_insert(rollup);
            }
        }
    }
}

/// Starts the task that adds pending rollups to `store` every [`FLUSH_EVERY`].
pub fn start_flushing(rollups: Arc<Rollups>, store: Arc<dyn ExecutionStore>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FLUSH_EVERY).await;
            rollups.flush(store.as_ref()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_of_one_minute_share_a_rollup() {
        let rollups = Rollups::default();
        rollups.record("f", true, 1_000, 60_000);
        rollups.record("f", false, 1_000, 119_999);
        rollups.record("f", true, 1_000, 120_000);
        rollups.record("g", true, 1_000, 60_000);
        let mut f = rollups.pending(Some("f"), 0);
        f.sort_by_key(|r| r.minute);
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].minute, f[0].succeeded, f[0].failed), (60_000, 1, 1));
        assert_eq!(rollups.pending(None, 120_000).len(), 1);
    }

    #[tokio::test]
    async fn a_read_during_a_flush_counts_each_attempt_once() {
        let rollups = Arc::new(Rollups::default());
        rollups.record("f", true, 1_000, 60_000);
        let stored = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let flush = tokio::spawn({
            let (rollups, stored) = (rollups.clone(), stored.clone());
            async move {
                rollups
                    .flush_with(|taken| async move {
                        let _ = gate.await;
                        stored.lock().unwrap().extend(taken);
                        Ok(())
                    })
                    .await
            }
        });
        // The flush has taken the rollup from the pending ones and not yet stored it.
        while !rollups.pending(None, 0).is_empty() {
            tokio::task::yield_now().await;
        }
        let read = tokio::spawn({
            let (rollups, stored) = (rollups.clone(), stored.clone());
            async move {
                let stored = async { Ok::<_, StoreError>(stored.lock().unwrap().clone()) };
                rollups.with_pending(stored, Some("f"), 0).await
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!read.is_finished(), "the read waits for the flush");
        release.send(()).unwrap();
        flush.await.unwrap();
        let counted: u64 = read
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(|r| r.succeeded)
            .sum();
        assert_eq!(counted, 1);
    }
}
