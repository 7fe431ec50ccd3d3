//! [`crate::ClusterStore`]: the change feed every change to a function moves, and the nodes table.

use super::Stores;
use crate::{NewVersion, NodeBeat};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;
use wafer_api::oci::sha256_hex;
use wafer_api::{FunctionConfig, Kind};

async fn deploy(stores: &Stores, name: &str) {
    let new = NewVersion {
        name: name.into(),
        kind: Kind::Wagi,
        config: FunctionConfig::default(),
        digest: sha256_hex(name.as_bytes()),
        size: name.len() as u64,
        variables: Default::default(),
        files: None,
    };
    let module = Bytes::copy_from_slice(name.as_bytes());
    stores.meta.insert_version(new, module, true).await.unwrap();
}

/// The functions changed since `seq`, and the feed's position now.
async fn since(stores: &Stores, seq: u64) -> (u64, Vec<String>) {
    let changes = stores.cluster.changes_since(seq).await.unwrap();
    (changes.seq, changes.functions)
}

pub async fn every_change_to_a_function_moves_the_feed(stores: &Stores) {
    let (start, none) = since(stores, 0).await;
    assert!(none.is_empty());
    deploy(stores, "f").await;
    deploy(stores, "g").await;
    let (after_deploys, changed) = since(stores, start).await;
    assert_eq!(changed, ["f", "g"]);
    stores
        .meta
        .set_alias("f", wafer_api::LIVE, wafer_api::Alias::to(1))
        .await
        .unwrap();
    let (after_rollback, changed) = since(stores, after_deploys).await;
    assert_eq!(changed, ["f"]);
    assert!(after_rollback > after_deploys);
    let variables = BTreeMap::from([("A".to_string(), "1".to_string())]);
    let secrets = BTreeMap::new();
    stores
        .state
        .set_variables("g", variables, secrets)
        .await
        .unwrap();
    let (after_variables, changed) = since(stores, after_rollback).await;
    assert_eq!(changed, ["g"]);
    stores.meta.delete_function("f").await.unwrap();
    let (after_delete, changed) = since(stores, after_variables).await;
    assert_eq!(changed, ["f"]);
    assert_eq!(
        since(stores, after_delete).await,
        (after_delete, Vec::new())
    );
    // A function changed twice is listed once, in the order of its latest change.
    let (_, all) = since(stores, start).await;
    assert_eq!(all, ["g", "f"]);
}

pub async fn nodes_beat_and_leave(stores: &Stores) {
    let beat = |id: &str, applied| NodeBeat {
        id: id.into(),
        address: format!("{id}.local:8080"),
        version: "0.1.0".into(),
        applied,
        lagging: BTreeMap::from([("big".to_string(), 1)]),
    };
    stores.cluster.heartbeat(&beat("n2", 1)).await.unwrap();
    stores.cluster.heartbeat(&beat("n1", 1)).await.unwrap();
    stores.cluster.heartbeat(&beat("n1", 7)).await.unwrap();
    let nodes = stores.cluster.nodes(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.beat.id.as_str(), n.beat.applied))
            .collect::<Vec<_>>(),
        [("n1", 7), ("n2", 1)]
    );
    assert_eq!(nodes[0].beat, beat("n1", 7));
    assert!(nodes[0].silent_for < Duration::from_secs(60));
    // Windows wide enough that a loaded machine's pause between the beat and the read stays inside.
    tokio::time::sleep(Duration::from_millis(600)).await;
    stores.cluster.heartbeat(&beat("n2", 2)).await.unwrap();
    let recent = stores
        .cluster
        .nodes(Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(recent.len(), 1, "a silent node drops out: {recent:?}");
    stores.cluster.leave("n2").await.unwrap();
    let left = stores.cluster.nodes(Duration::from_secs(60)).await.unwrap();
    assert_eq!(left.len(), 1);
}
