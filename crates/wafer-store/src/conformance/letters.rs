//! [`crate::ExecutionStore`]'s admission and dead letters: bounded and idempotent submission, dead
//! letters kept with their request and retried or redriven, and the destination a finished execution
//! owes.

use super::executions::{ended, execution, finish, insert, now_ms, queued, write, HOUR};
use super::Stores;
use crate::{Admit, Delivered, Delivery, Enqueued, Retention, Retried};
use std::time::Duration;
use wafer_api::ExecutionStatus;

/// Runs `id`'s attempt on `n1` to a dead end at `at` (ms since the epoch), owing a destination.
async fn die_at(stores: &Stores, id: &str, at: i64) {
    let claimed = stores.executions.claim("n1", HOUR, 10).await.unwrap();
    assert!(claimed.iter().any(|c| c.id == id), "{id} claimed");
    let mut outcome = ended(ExecutionStatus::Dead, at);
    outcome.destination = true;
    let attempt = claimed.iter().find(|c| c.id == id).map_or(1, |c| c.attempt);
    assert_eq!(
        write(stores, vec![finish(id, "n1", attempt, outcome)]).await,
        [true]
    );
}

/// [`die_at`] now.
async fn die(stores: &Stores, id: &str) {
    die_at(stores, id, now_ms()).await
}

fn keyed(key: &str, digest: &str) -> Admit {
    Admit {
        key: Some((key.into(), digest.into())),
        key_window: HOUR,
        max_queued: None,
    }
}

pub async fn a_key_names_one_execution_and_a_full_queue_refuses(stores: &Stores) {
    let submit = |id: &str, admit| stores.executions.enqueue(queued(id, "f"), admit);
    assert_eq!(
        submit("a", keyed("k", "d1")).await.unwrap(),
        Enqueued::Queued
    );
    assert_eq!(
        submit("b", keyed("k", "d1")).await.unwrap(),
        Enqueued::Existing {
            id: "a".into(),
            same_request: true
        }
    );
    assert_eq!(
        submit("c", keyed("k", "d2")).await.unwrap(),
        Enqueued::Existing {
            id: "a".into(),
            same_request: false
        }
    );
    // Another function's key, and another key, are their own.
    let other = stores
        .executions
        .enqueue(queued("d", "g"), keyed("k", "d1"));
    assert_eq!(other.await.unwrap(), Enqueued::Queued);
    assert_eq!(
        submit("e", keyed("k2", "d1")).await.unwrap(),
        Enqueued::Queued
    );
    // A key past its window names nothing.
    let stale = Admit {
        key_window: Duration::ZERO,
        ..keyed("k", "d1")
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(submit("f", stale).await.unwrap(), Enqueued::Queued);
    // f has three waiting now: a bound of three refuses, storing nothing.
    let bounded = Admit {
        max_queued: Some(3),
        ..Admit::default()
    };
    assert_eq!(submit("g", bounded.clone()).await.unwrap(), Enqueued::Full);
    assert!(stores
        .executions
        .get_execution("g", false)
        .await
        .unwrap()
        .is_none());
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    assert_eq!(submit("h", bounded).await.unwrap(), Enqueued::Queued);
}

pub async fn concurrent_submissions_with_one_key_make_one_execution(stores: &Stores) {
    let submissions: Vec<_> = (0..16)
        .map(|i| {
            let executions = stores.executions.clone();
            tokio::spawn(async move {
                executions
                    .enqueue(queued(&format!("s{i:02}"), "f"), keyed("same", "d"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for submission in submissions {
        match submission.await.unwrap() {
            Enqueued::Queued => {}
            Enqueued::Existing { id, same_request } => {
                assert!(same_request);
                ids.insert(id);
            }
            Enqueued::Full => panic!("unbounded"),
        }
    }
    let stored = stores.executions.claim("n1", HOUR, 100).await.unwrap();
    assert_eq!(stored.len(), 1, "one execution");
    assert!(ids.iter().all(|id| *id == stored[0].id), "{ids:?}");
}

pub async fn a_dead_letter_keeps_its_request_and_is_retried_as_the_same_execution(stores: &Stores) {
    insert(stores, vec![queued("e1", "f")]).await;
    die(stores, "e1").await;
    let dead = execution(stores, "e1", false).await;
    assert_eq!((dead.status, dead.attempts), (ExecutionStatus::Dead, 1));
    assert_eq!(dead.destination_state.as_deref(), Some("pending"));
    assert_eq!(
        stores.executions.retry("nope", 3).await.unwrap(),
        Retried::Missing
    );
    // A retry owes nothing yet: what it owed is settled first, and owed again when it ends.
    assert_eq!(
        stores.executions.retry("e1", 2).await.unwrap(),
        Retried::Queued
    );
    let claimed = stores.executions.claim("n1", HOUR, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let again = &claimed[0];
    assert_eq!((again.attempt, again.max_attempts), (2, 3));
    assert_eq!(again.body, b"input");
    assert_eq!(again.request.as_ref().map(|r| r.headers.len()), Some(1));
    assert_eq!(
        stores.executions.retry("e1", 2).await.unwrap(),
        Retried::NotDead(ExecutionStatus::Running)
    );
    let done = finish("e1", "n1", 2, ended(ExecutionStatus::Succeeded, 20));
    write(stores, vec![done]).await;
    let succeeded = execution(stores, "e1", false).await;
    assert_eq!(succeeded.status, ExecutionStatus::Succeeded);
    assert_eq!(succeeded.destination_state, None, "nothing owed");
    // A succeeded execution's request is gone, and it is no dead letter.
    assert_eq!(
        stores.executions.retry("e1", 2).await.unwrap(),
        Retried::NotDead(ExecutionStatus::Succeeded)
    );
}

pub async fn a_redrive_takes_back_every_kept_dead_letter_and_they_outlive_other_records(
    stores: &Stores,
) {
    insert(stores, vec![queued("old", "f")]).await;
    die_at(stores, "old", now_ms() - 2 * 3_600_000).await;
    for (id, function) in [("new", "f"), ("x", "g")] {
        insert(stores, vec![queued(id, function)]).await;
        die(stores, id).await;
    }
    // Settled destinations: nothing holds them back from pruning.
    let settled = stores
        .executions
        .due_deliveries(Delivery::Destination, "n1", HOUR, 10)
        .await
        .unwrap();
    assert_eq!(settled.len(), 3);
    for due in settled {
        let done = stores.executions.delivery_done(
            Delivery::Destination,
            &due.execution.id,
            "n1",
            Delivered::Nothing,
        );
        assert!(done.await.unwrap());
    }
    assert_eq!(
        execution(stores, "x", false)
            .await
            .destination_state
            .as_deref(),
        Some("none")
    );
    // Dead letters have their own retention: pruning every other record leaves them.
    let others_only = Retention {
        per_function: 0,
        older_than: Duration::ZERO,
        dead_per_function: 10,
        dead_older_than: 24 * HOUR,
    };
    assert_eq!(stores.executions.prune(others_only).await.unwrap(), 0);
    // Since an hour ago: only the new one; then the rest.
    let recent = stores.executions.redrive("f", Some(HOUR), 1).await.unwrap();
    assert_eq!(recent, 1);
    assert_eq!(
        execution(stores, "new", false).await.status,
        ExecutionStatus::Queued
    );
    assert_eq!(stores.executions.redrive("f", None, 1).await.unwrap(), 1);
    assert_eq!(
        execution(stores, "x", false).await.status,
        ExecutionStatus::Dead,
        "another function's stay"
    );
    assert_eq!(stores.executions.redrive("f", None, 1).await.unwrap(), 0);
    let none_kept = Retention {
        dead_per_function: 0,
        ..others_only
    };
    assert_eq!(stores.executions.prune(none_kept).await.unwrap(), 1, "x");
}

pub async fn a_destination_is_owed_until_delivered_and_claimed_once(stores: &Stores) {
    insert(stores, vec![queued("e1", "f")]).await;
    die(stores, "e1").await;
    let due = |node: &'static str, lease| {
        stores
            .executions
            .due_deliveries(Delivery::Destination, node, lease, 10)
    };
    let owed = due("n1", Duration::from_millis(1)).await.unwrap();
    assert_eq!(owed.len(), 1);
    assert_eq!((owed[0].attempts, owed[0].hops), (0, 0));
    assert_eq!(owed[0].execution.status, ExecutionStatus::Dead);
    assert!(
        stores
            .executions
            .due_deliveries(Delivery::Callback, "n1", HOUR, 10)
            .await
            .unwrap()
            .is_empty(),
        "no callback URL, no callback"
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(due("n2", HOUR).await.unwrap().len(), 1, "n1's claim lapsed");
    let report = |node, outcome| {
        stores
            .executions
            .delivery_done(Delivery::Destination, "e1", node, outcome)
    };
    assert!(!report("n1", Delivered::Yes).await.unwrap());
    assert!(report("n2", Delivered::Yes).await.unwrap());
    assert!(due("n1", Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(
        execution(stores, "e1", false)
            .await
            .destination_state
            .as_deref(),
        Some("delivered")
    );
}
