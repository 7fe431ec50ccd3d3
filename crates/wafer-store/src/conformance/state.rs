//! [`crate::StateStore`]: key-value stores with their size caps, atomic increments, and function
//! variables and secrets.

use super::Stores;
use crate::{FunctionVariables, StoreError};
use std::collections::BTreeMap;

pub async fn values_round_trip_per_store(stores: &Stores) {
    let s = &stores.state;
    s.kv_set("a", "k", b"1".to_vec(), 1000).await.unwrap();
    s.kv_set("b", "k", b"2".to_vec(), 1000).await.unwrap();
    assert_eq!(s.kv_get("a", "k").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(s.kv_get("b", "k").await.unwrap(), Some(b"2".to_vec()));
    assert!(s.kv_exists("a", "k").await.unwrap());
    assert!(!s.kv_exists("a", "x").await.unwrap());
    assert_eq!(
        s.kv_delete("a", vec!["k".into(), "x".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.kv_get("a", "k").await.unwrap(), None);
    assert_eq!(s.kv_size("a").await.unwrap(), 0);
    assert_eq!(s.kv_size("b").await.unwrap(), 2);
}

pub async fn a_store_refuses_writes_past_its_cap_and_keeps_its_data(stores: &Stores) {
    let s = &stores.state;
    s.kv_set("a", "k", vec![0; 8], 10).await.unwrap();
    // Overwriting counts the new size only.
    s.kv_set("a", "k", vec![1; 9], 10).await.unwrap();
    let err = s.kv_set("a", "k2", vec![0; 5], 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Full { would: 17, .. }), "{err}");
    let batch = vec![("x".to_string(), vec![0]), ("y".to_string(), vec![0; 20])];
    assert!(s.kv_set_many("a", batch, 10).await.is_err());
    assert_eq!(s.kv_get("a", "x").await.unwrap(), None);
    assert_eq!(s.kv_size("a").await.unwrap(), 10);
}

pub async fn keys_page_in_order_and_increments_count_in_decimal(stores: &Stores) {
    let s = &stores.state;
    for k in ["c", "a", "b"] {
        s.kv_set("s", k, vec![], 100).await.unwrap();
    }
    let page = s.kv_keys("s", None, 2).await.unwrap();
    assert_eq!(page.keys, ["a", "b"]);
    let rest = s.kv_keys("s", page.cursor, 2).await.unwrap();
    assert_eq!((rest.keys, rest.cursor), (vec!["c".to_string()], None));
    assert_eq!(s.kv_increment("s", "n", 5, 100).await.unwrap(), 5);
    assert_eq!(s.kv_increment("s", "n", -7, 100).await.unwrap(), -2);
    assert_eq!(s.kv_get("s", "n").await.unwrap(), Some(b"-2".to_vec()));
    s.kv_set("s", "t", b"text".to_vec(), 100).await.unwrap();
    assert!(matches!(
        s.kv_increment("s", "t", 1, 100).await,
        Err(StoreError::NotANumber(_))
    ));
    // A swap takes only when the key still holds what the caller saw (absent counts).
    assert!(!s.kv_swap("s", "t", None, b"x".to_vec(), 100).await.unwrap());
    assert!(!s
        .kv_swap("s", "t", Some(b"old".to_vec()), b"x".to_vec(), 100)
        .await
        .unwrap());
    assert!(s
        .kv_swap("s", "t", Some(b"text".to_vec()), b"new".to_vec(), 100)
        .await
        .unwrap());
    assert!(s
        .kv_swap("s", "fresh", None, b"1".to_vec(), 100)
        .await
        .unwrap());
    assert_eq!(s.kv_get("s", "t").await.unwrap(), Some(b"new".to_vec()));
    assert_eq!(s.kv_get("s", "fresh").await.unwrap(), Some(b"1".to_vec()));
}

pub async fn variables_replace_or_merge_and_keep_secrets_apart(stores: &Stores) {
    let s = &stores.state;
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    let secret = |name: &str, value: Option<&str>| {
        BTreeMap::from([(name.to_string(), value.map(str::to_string))])
    };
    s.set_variables("f", map(&[("a", "1")]), secret("s", Some("x")))
        .await
        .unwrap();
    s.set_variables("f", map(&[("b", "2")]), secret("gone", Some("y")))
        .await
        .unwrap();
    s.set_variables("f", map(&[("b", "2")]), secret("gone", None))
        .await
        .unwrap();
    let got = s.variables("f").await.unwrap();
    assert_eq!(got.variables, map(&[("b", "2")]));
    assert_eq!(got.secrets, map(&[("s", "x")]));
    s.merge_variables(
        "f",
        FunctionVariables {
            variables: map(&[("c", "3")]),
            secrets: map(&[("b", "hidden")]),
        },
    )
    .await
    .unwrap();
    let got = s.variables("f").await.unwrap();
    assert_eq!(got.variables, map(&[("c", "3")]));
    assert_eq!(got.secrets, map(&[("b", "hidden"), ("s", "x")]));
    assert_eq!(s.all_variables().await.unwrap()["f"], got);
    s.forget_variables("f").await.unwrap();
    assert_eq!(
        s.variables("f").await.unwrap(),
        FunctionVariables::default()
    );
}

pub async fn concurrent_increments_all_count(stores: &Stores) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let state = stores.state.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    state.kv_increment("s", "n", 1, 1000).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        stores.state.kv_get("s", "n").await.unwrap(),
        Some(b"200".to_vec())
    );
    assert_eq!(stores.state.kv_size("s").await.unwrap(), 4);
}
