//! The store conformance suite against PostgreSQL, each case on a fresh database of one throwaway
//! server (skipped with a printed reason when PostgreSQL is not installed, except under `CI=true`), and
//! what only a shared database has: migrations racing, a schema from the future, nodes hearing each
//! other, and a database that goes away and comes back.

use std::sync::Arc;
use std::time::Duration;
use wafer_store::conformance::postgres::TestPostgres;
use wafer_store::conformance::{test_secrets_key, Stores};
use wafer_store::{
    ClusterStore, ExecutionStore, KeySource, MetaStore, PgOptions, PgStore, StateStore, StoreError,
};

/// A node on `url`, with the key every test node shares.
async fn open_at(url: &str) -> (PgStore, tempfile::TempDir) {
    let cache = tempfile::tempdir().expect("temp dir");
    let options = PgOptions {
        secrets: test_secrets_key(),
        ..PgOptions::new(url)
    };
    let store = PgStore::connect(&options, cache.path())
        .await
        .expect("connect to the test database");
    (store, cache)
}

async fn postgres() -> Option<Stores> {
    let server = TestPostgres::shared()?;
    let (store, cache) = open_at(&server.create_database().await).await;
    Some(Stores {
        meta: Arc::new(store.clone()),
        executions: Arc::new(store.clone()),
        state: Arc::new(store.clone()),
        cluster: Arc::new(store.clone()),
        access: Arc::new(store),
        keep: Box::new(cache),
    })
}

wafer_store::conformance!(postgres);

/// A new version of `name` with `module` as its bytes.
fn version(name: &str, module: &[u8]) -> wafer_store::NewVersion {
    wafer_store::NewVersion {
        name: name.into(),
        kind: wafer_api::Kind::Wagi,
        config: Default::default(),
        digest: wafer_api::oci::sha256_hex(module),
        size: module.len() as u64,
        variables: Default::default(),
        files: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once_and_share_everything() {
    let Some(server) = TestPostgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    let opened = futures_util::future::join_all((0..4).map(|_| open_at(&url))).await;
    let (first, _) = &opened[0];
    let module = bytes::Bytes::from_static(b"\0asm shared");
    first
        .insert_version(version("f", &module), module.clone(), true)
        .await
        .unwrap();
    for (node, _) in &opened {
        let f = node
            .get_function("f")
            .await
            .unwrap()
            .expect("every node sees it");
        assert_eq!(node.module(&f.live.digest).await.unwrap(), module.as_ref());
        assert!(node.module_in_use(&f.live.digest).await.unwrap());
    }
    // Deleted through one node, the module is in use on none, though each may keep its local copy.
    let digest = wafer_api::oci::sha256_hex(&module);
    first.delete_function("f").await.unwrap();
    for (node, _) in &opened {
        assert!(!node.module_in_use(&digest).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hears_another_nodes_changes_and_queued_work() {
    let Some(server) = TestPostgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    let ((one, _one), (two, _two)) = (open_at(&url).await, open_at(&url).await);
    let events = two.events();
    let module = bytes::Bytes::from_static(b"\0asm heard");
    one.insert_version(version("f", &module), module, true)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), events.wait_changes())
        .await
        .expect("the change is heard");
    let new = wafer_store::NewExecution::queued(
        "e1".into(),
        "f".into(),
        1,
        wafer_api::Trigger::Async,
        1,
        0,
    );
    one.write(vec![wafer_store::Write::Insert(new)].into(), None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), events.wait_queue())
        .await
        .expect("the queued work is heard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_wafer_is_refused() {
    let Some(server) = TestPostgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    drop(open_at(&url).await);
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("UPDATE wafer_schema SET version = version + 1")
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let refused = PgStore::connect(&PgOptions::new(&url), cache.path()).await;
    assert!(
        matches!(refused, Err(StoreError::NewerSchema { .. })),
        "{:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_database_is_unavailable_then_serves_again() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let url = server.create_database().await;
    let (store, _cache) = open_at(&url).await;
    let events = store.events();
    let mut resyncs = events.resyncs();
    server.pg_ctl("stop");
    match store.list_functions().await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a stopped database is unavailable, not {other:?}"),
    }
    server.pg_ctl("start");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.list_functions().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the pool reconnects");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), resyncs.changed())
        .await
        .expect("the listener reconnects and says notifications may have been missed")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verifies_the_server_against_the_given_ca() {
    let Some((server, ca)) = TestPostgres::start_tls() else {
        return;
    };
    let url = format!("{}?sslmode=require", server.create_database().await);
    let cache = tempfile::tempdir().unwrap();
    let untrusted = PgStore::connect(&PgOptions::new(&url), cache.path()).await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA is refused"
    );
    let options = PgOptions {
        ca_file: Some(ca),
        ..PgOptions::new(&url)
    };
    let store = PgStore::connect(&options, cache.path())
        .await
        .expect("TLS with the CA trusted");
    assert!(store.list_functions().await.unwrap().is_empty());
    let (client, connection) =
        tokio_postgres::connect(&server.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let encrypted: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.application_name = 'wafer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted > 0, "wafer's connections use TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_in_the_database_and_a_node_with_another_key_is_refused() {
    let Some(server) = TestPostgres::shared() else {
        return;
    };
    let url = server.create_database().await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let (store, _cache) = open_at(&url).await;
    let secrets = [("token".to_string(), Some("plain-text-secret".to_string()))];
    store
        .set_variables("f", Default::default(), secrets.into_iter().collect())
        .await
        .unwrap();
    // A secret written by a node of a wafer from before secrets were sealed.
    client
        .execute(
            "INSERT INTO variables (function, name, value, secret) VALUES ('g', 'old', 'older-secret', TRUE)",
            &[],
        )
        .await
        .unwrap();
    let stored: Vec<String> = client
        .query("SELECT value FROM variables WHERE function = 'f'", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(stored[0].starts_with("sealed:v1:"), "{stored:?}");
    assert!(!stored[0].contains("plain-text-secret"));
    // A running node reads it as it is (an older node wrote it during a rolling upgrade).
    assert_eq!(
        store.variables("g").await.unwrap().secrets["old"],
        "older-secret"
    );

    let (reopened, _again) = open_at(&url).await;
    let all = reopened.all_variables().await.unwrap();
    assert_eq!(all["f"].secrets["token"], "plain-text-secret");
    assert_eq!(all["g"].secrets["old"], "older-secret");
    let old: String = client
        .query_one("SELECT value FROM variables WHERE function = 'g'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(old.starts_with("sealed:v1:"), "sealed at start: {old}");

    let other = PgOptions {
        secrets: KeySource::Value("ab".repeat(32)),
        ..PgOptions::new(&url)
    };
    let cache = tempfile::tempdir().unwrap();
    match PgStore::connect(&other, cache.path()).await {
        Err(StoreError::SecretsKey(message)) => assert!(message.contains("same key"), "{message}"),
        other => panic!("a node with another key is refused, not {:?}", other.err()),
    }
}
