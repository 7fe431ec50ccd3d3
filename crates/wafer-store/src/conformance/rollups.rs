//! Per-minute rollups: counts from several writers add up, reads filter by function and minute, and
//! pruning drops only rollups past their retention.

use super::Stores;
use crate::Retention;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wafer_api::MinuteRollup;

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// A rollup of `function` at `at_ms` with `ok` successes of 1 ms and `bad` failures of 1 s.
fn rollup(function: &str, at_ms: i64, ok: u64, bad: u64) -> MinuteRollup {
    let mut rollup = MinuteRollup::new(function, at_ms);
    for _ in 0..ok {
        rollup.record(true, 1_000);
    }
    for _ in 0..bad {
        rollup.record(false, 1_000_000);
    }
    rollup
}

pub async fn rollups_add_up_across_writers_and_prune_after_two_days(stores: &Stores) {
    let store = &stores.executions;
    let now = now_ms();
    let hour_ago = now - 3_600_000;
    let days_ago = now - 3 * 86_400_000;
    store
        .add_rollups(vec![
            rollup("f", hour_ago, 3, 1),
            rollup("g", hour_ago, 1, 0),
            rollup("f", days_ago, 5, 0),
        ])
        .await
        .unwrap();
    // Two nodes add to the same minute at once.
    let (a, b) = tokio::join!(
        store.add_rollups(vec![rollup("f", hour_ago, 2, 0)]),
        store.add_rollups(vec![rollup("f", hour_ago, 0, 2)]),
    );
    a.unwrap();
    b.unwrap();
    let f = store.rollups(Some("f"), now - 7_200_000).await.unwrap();
    assert_eq!(f.len(), 1, "{f:?}");
    let mut want = rollup("f", hour_ago, 5, 3);
    want.function = "f".into();
    assert_eq!(f[0], want);
    let all = store.rollups(None, now - 7_200_000).await.unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.function.as_str()).collect();
    assert_eq!(names, ["f", "g"]);
    assert_eq!(store.rollups(Some("f"), 0).await.unwrap().len(), 2);
    assert!(store.rollups(Some("f"), now).await.unwrap().is_empty());
    // Pruning keeps every execution here and drops the rollup of three days ago.
    let keep = Retention {
        per_function: 1000,
        older_than: Duration::from_secs(30 * 86_400),
        dead_per_function: 1000,
        dead_older_than: Duration::from_secs(30 * 86_400),
    };
    store.prune(keep).await.unwrap();
    let left = store.rollups(Some("f"), 0).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].minute, want.minute);
}
