//! Per-minute rollups of finished attempts (`wafer_api::rollup`), counted here as each attempt ends —
//! before its record goes to the journal, so a record the journal drops under load still counts — and
//! added to the store every few seconds. A read merges what is still pending here, so this node's
//! figures are current at once; another node's show after its next flush.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use wafer_api::MinuteRollup;
use wafer_store::ExecutionStore;

/// How often pending rollups are added to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Rollups counted on this node and not yet in the store.
#[derive(Default)]
pub struct Rollups {
    pending: Mutex<HashMap<(String, i64), MinuteRollup>>,
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

    /// Adds the pending rollups to `store`; on failure they stay pending for the next flush.
    pub async fn flush(&self, store: &dyn ExecutionStore) {
        let taken: Vec<MinuteRollup> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.drain().map(|(_, rollup)| rollup).collect()
        };
        if taken.is_empty() {
            return;
        }
        if let Err(e) = store.add_rollups(taken.clone()).await {
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
}
