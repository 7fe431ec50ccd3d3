//! [`crate::ExecutionStore`]'s queue: claims (alone, after a batch's writes, and concurrent), fencing,
//! retries, leases and the requeue of a node's claims.

use super::executions::{ended, execution, finish, insert, queued, status_of, write, HOUR};
use super::Stores;
use crate::{Attempt, NewExecution, Write};
use std::collections::BTreeSet;
use std::time::Duration;
use wafer_api::ExecutionStatus;

pub async fn a_claimed_execution_is_claimed_once_and_finishes_once(stores: &Stores) {
    insert(stores, vec![queued("e1", "f")]).await;
    let claimed = stores.executions.claim("n1", HOUR, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].attempt, claimed[0].body.as_slice()),
        (1, &b"input"[..])
    );
    assert_eq!(claimed[0].request.as_ref().unwrap().headers.len(), 1);
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Running);
    assert!(stores
        .executions
        .claim("n2", HOUR, 10)
        .await
        .unwrap()
        .is_empty());
    let done = || ended(ExecutionStatus::Succeeded, 200);
    let applied = write(
        stores,
        vec![
            finish("e1", "n1", 1, done()),
            finish("e1", "n1", 1, done()),
            finish("e1", "n1", 2, done()),
        ],
    )
    .await;
    assert_eq!(applied, [true, false, false]);
    let e = execution(stores, "e1", true).await;
    assert_eq!(
        (e.status, e.attempts, e.logs.len()),
        (ExecutionStatus::Succeeded, 1, 1)
    );
    assert_eq!(e.usage.unwrap().cpu_us, 2000);
    assert_eq!(e.duration_ms, Some(5.0));
}

pub async fn only_the_claiming_node_records_an_attempt(stores: &Stores) {
    insert(stores, vec![queued("e1", "f")]).await;
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    let from_other = finish("e1", "n2", 1, ended(ExecutionStatus::Failed, 1));
    assert_eq!(write(stores, vec![from_other]).await, [false]);
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Running);
    let from_owner = finish("e1", "n1", 1, ended(ExecutionStatus::Succeeded, 1));
    assert_eq!(write(stores, vec![from_owner]).await, [true]);
}

pub async fn a_batch_claims_after_its_writes_in_one_transaction(stores: &Stores) {
    insert(stores, vec![queued("e1", "f")]).await;
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    let claim = claim_of("n1", 2);
    let written = stores
        .executions
        .write(
            vec![
                finish("e1", "n1", 1, ended(ExecutionStatus::Succeeded, 1)),
                Write::Insert(queued("e2", "f")),
                Write::Insert(queued("e3", "f")),
                Write::Insert(queued("e4", "f")),
            ]
            .into(),
            Some(claim),
        )
        .await
        .unwrap();
    assert_eq!(written.applied, [true; 4]);
    let claimed = written.claimed.unwrap();
    assert!(!claimed[0].callback);
    let claimed: Vec<String> = claimed.into_iter().map(|c| c.id).collect();
    assert_eq!(
        claimed,
        ["e2", "e3"],
        "the batch's own inserts, oldest first"
    );
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Succeeded);
    assert_eq!(status_of(stores, "e3").await, ExecutionStatus::Running);
    let rest = stores.executions.claim("n2", HOUR, 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].id, "e4");
}

/// A claim of up to `limit` executions for `node`, leased for an hour.
fn claim_of(node: &str, limit: u32) -> crate::Claim {
    crate::Claim {
        node: node.into(),
        lease: HOUR,
        limit,
    }
}

pub async fn a_batch_claims_earlier_work_first_and_its_own_as_any_claim(stores: &Stores) {
    insert(stores, vec![queued("old", "f")]).await;
    let first = NewExecution {
        callback_url: Some("http://127.0.0.1:9/done".into()),
        qualifier: Some("beta".into()),
        hops: 2,
        ..queued("new1", "f")
    };
    let batch = vec![Write::Insert(first), Write::Insert(queued("new2", "f"))];
    let brief = crate::Claim {
        lease: Duration::from_millis(1),
        ..claim_of("n1", 2)
    };
    let written = stores
        .executions
        .write(batch.clone().into(), Some(brief))
        .await
        .unwrap();
    let claimed = written.claimed.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["old", "new1"], "work due before the batch first");
    let new1 = &claimed[1];
    assert_eq!(
        (
            new1.attempt,
            new1.callback,
            new1.qualifier.as_deref(),
            new1.hops
        ),
        (1, true, Some("beta"), 2)
    );
    assert_eq!(new1.body, b"input");
    assert_eq!(new1.request.as_ref().unwrap().headers.len(), 1);
    assert_eq!(status_of(stores, "new2").await, ExecutionStatus::Queued);
    // The same batch again, as after a lost commit: nothing is stored or claimed twice.
    let again = stores
        .executions
        .write(batch.into(), Some(claim_of("n2", 2)))
        .await
        .unwrap();
    let ids: Vec<String> = again.claimed.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["new2"]);
    // A claim taken as its execution was stored lapses, is swept and is claimed again like any other.
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(stores.executions.sweep_expired().await.unwrap(), 2);
    let retaken = stores.executions.claim("n3", HOUR, 10).await.unwrap();
    let attempts: BTreeSet<(String, u32)> =
        retaken.into_iter().map(|c| (c.id, c.attempt)).collect();
    assert_eq!(
        attempts,
        BTreeSet::from([("new1".into(), 2), ("old".into(), 2)])
    );
    let late = finish("new1", "n1", 1, ended(ExecutionStatus::Failed, 1));
    let current = finish("new1", "n3", 2, ended(ExecutionStatus::Succeeded, 2));
    assert_eq!(write(stores, vec![late, current]).await, [false, true]);
    let e = execution(stores, "new1", false).await;
    assert_eq!((e.status, e.attempts), (ExecutionStatus::Succeeded, 2));
}

pub async fn a_retry_waits_for_its_delay(stores: &Stores) {
    insert(stores, vec![queued("later", "f"), queued("now", "f")]).await;
    assert_eq!(
        stores.executions.claim("n1", HOUR, 2).await.unwrap().len(),
        2
    );
    let retry = |delay| Attempt {
        status: Some(ExecutionStatus::Queued),
        retry_in: Some(delay),
        ..ended(ExecutionStatus::Queued, 10)
    };
    let applied = write(
        stores,
        vec![
            finish("later", "n1", 1, retry(HOUR)),
            finish("now", "n1", 1, retry(Duration::ZERO)),
        ],
    )
    .await;
    assert_eq!(applied, [true, true]);
    let again = stores.executions.claim("n1", HOUR, 10).await.unwrap();
    assert_eq!(again.len(), 1, "only the retry due now is claimed");
    assert_eq!((again[0].id.as_str(), again[0].attempt), ("now", 2));
    assert!(again[0].request.is_some(), "a retry keeps its request");
    let wait = stores.executions.next_due().await.unwrap().unwrap();
    assert!(wait > HOUR - Duration::from_secs(60), "{wait:?}");
    let later = execution(stores, "later", false).await;
    assert!(later.next_attempt_at.is_some());
}

/// Queues execution `id` and claims it for `node` under a lease of a millisecond.
async fn claim_briefly(stores: &Stores, id: &str, node: &str) {
    insert(stores, vec![queued(id, "f")]).await;
    let claimed = stores.executions.claim(node, Duration::from_millis(1), 1);
    assert_eq!(claimed.await.unwrap().len(), 1);
}

pub async fn an_expired_lease_is_swept_back_into_the_queue(stores: &Stores) {
    claim_briefly(stores, "e1", "n1").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(stores.executions.sweep_expired().await.unwrap(), 1);
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Queued);
    let again = stores.executions.claim("n2", HOUR, 1).await.unwrap();
    assert_eq!(again[0].attempt, 2);
    // The attempt that outlived its lease cannot overwrite the one that replaced it.
    let late = finish("e1", "n1", 1, ended(ExecutionStatus::Failed, 1));
    let current = finish("e1", "n2", 2, ended(ExecutionStatus::Succeeded, 2));
    let applied = write(stores, vec![late, current]).await;
    assert_eq!(applied, [false, true]);
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Succeeded);
}

pub async fn a_renewed_lease_is_kept(stores: &Stores) {
    claim_briefly(stores, "e1", "n1").await;
    let ids = ["e1".to_string()];
    assert_eq!(stores.executions.renew("n1", &ids, HOUR).await.unwrap(), 1);
    assert_eq!(stores.executions.renew("n2", &ids, HOUR).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(stores.executions.sweep_expired().await.unwrap(), 0);
    assert_eq!(status_of(stores, "e1").await, ExecutionStatus::Running);
}

pub async fn a_start_requeues_only_the_nodes_own_claims(stores: &Stores) {
    insert(stores, vec![queued("mine", "f")]).await;
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    insert(stores, vec![queued("theirs", "f")]).await;
    stores.executions.claim("n2", HOUR, 1).await.unwrap();
    assert_eq!(stores.executions.requeue_claims("n1").await.unwrap(), 1);
    assert_eq!(status_of(stores, "mine").await, ExecutionStatus::Queued);
    assert_eq!(status_of(stores, "theirs").await, ExecutionStatus::Running);
    let again = stores.executions.claim("n1", HOUR, 10).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|c| (c.id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("mine", 2)]
    );
}

pub async fn a_released_claim_is_queued_again_without_counting_its_attempt(stores: &Stores) {
    insert(stores, vec![queued("mine", "f"), queued("theirs", "f")]).await;
    stores.executions.claim("n1", HOUR, 1).await.unwrap();
    stores.executions.claim("n2", HOUR, 1).await.unwrap();
    let ids = ["mine".to_string(), "theirs".to_string(), "none".to_string()];
    assert_eq!(
        stores.executions.release_claims("n1", &ids).await.unwrap(),
        1
    );
    assert_eq!(status_of(stores, "mine").await, ExecutionStatus::Queued);
    assert_eq!(status_of(stores, "theirs").await, ExecutionStatus::Running);
    assert_eq!(execution(stores, "mine", false).await.attempts, 0);
    // The cut attempt's end comes too late, and the execution runs again as the same attempt.
    let late = finish("mine", "n1", 1, ended(ExecutionStatus::Succeeded, 1));
    assert_eq!(write(stores, vec![late]).await, [false]);
    let again = stores.executions.claim("n2", HOUR, 10).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|c| (c.id.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("mine", 1)]
    );
    assert_eq!(
        stores.executions.release_claims("n1", &ids).await.unwrap(),
        0
    );
}

pub async fn concurrent_claimers_never_share_an_execution(stores: &Stores) {
    const QUEUED: usize = 200;
    insert(
        stores,
        (0..QUEUED)
            .map(|i| queued(&format!("e{i:03}"), "f"))
            .collect(),
    )
    .await;
    let claimers: Vec<_> = (0..4)
        .map(|c| {
            let executions = stores.executions.clone();
            tokio::spawn(async move {
                let node = format!("n{c}");
                let mut mine = Vec::new();
                loop {
                    let claimed = executions.claim(&node, HOUR, 7).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|c| c.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for claimer in claimers {
        all.extend(claimer.await.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), QUEUED, "every execution claimed once");
    assert_eq!(distinct.len(), QUEUED);
}

pub async fn a_lapsed_last_attempt_is_dead_and_owes_its_callback(stores: &Stores) {
    let new = NewExecution {
        max_attempts: 1,
        callback_url: Some("http://127.0.0.1:1/cb".into()),
        ..queued("e1", "f")
    };
    insert(stores, vec![new]).await;
    let claimed = stores.executions.claim("n1", Duration::from_millis(1), 1);
    assert_eq!(claimed.await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(stores.executions.sweep_expired().await.unwrap(), 1);
    let dead = execution(stores, "e1", false).await;
    assert_eq!(dead.status, ExecutionStatus::Dead);
    assert!(dead.error.is_some() && dead.finished_at.is_some());
    assert_eq!(dead.callback_state.as_deref(), Some("pending"));
    assert!(stores
        .executions
        .claim("n2", HOUR, 1)
        .await
        .unwrap()
        .is_empty());
}
