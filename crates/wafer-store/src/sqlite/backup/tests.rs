use super::*;
use crate::{FilesBundle, MetaStore, NewVersion, SqliteStore, StateStore};
use bytes::Bytes;
use wafer_api::oci::sha256_hex;
use wafer_api::{FunctionConfig, Kind};

/// A data directory holding function `f` (a module, a files bundle, a secret, a key-value entry) and a
/// database granted to functions; with its open store.
async fn populated() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (module, files) = (
        Bytes::from_static(b"\0asm-f"),
        Bytes::from_static(b"tar-bytes"),
    );
    let new = NewVersion {
        name: "f".into(),
        kind: Kind::Wagi,
        config: FunctionConfig::default(),
        digest: sha256_hex(&module),
        size: module.len() as u64,
        variables: crate::FunctionVariables {
            secrets: [("token".to_string(), "s3cret-value".to_string())].into(),
            ..Default::default()
        },
        files: Some(FilesBundle {
            digest: sha256_hex(&files),
            bytes: files,
        }),
    };
    store.insert_version(new, module, true).await.unwrap();
    store
        .kv_set("kv", "k", b"v".to_vec(), 1 << 20)
        .await
        .unwrap();
    fs::create_dir_all(dir.path().join(FUNCTION_DATABASES)).unwrap();
    let granted = Connection::open(dir.path().join(FUNCTION_DATABASES).join("app.db")).unwrap();
    granted
        .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (42);")
        .unwrap();
    fs::write(dir.path().join(NODE_ID_FILE), "node-a\n").unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_live_directory_backs_up_and_restores_whole() {
    let (dir, store) = populated().await;
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("backup");
    let summary = backup(dir.path(), &into).unwrap();
    assert_eq!(
        (summary.functions, summary.versions, summary.modules),
        (1, 1, 2)
    );
    assert_eq!(summary.function_databases, 1);
    assert!(summary.secrets_key);
    assert_eq!(summary.secrets_key_id.as_deref(), Some(store.secrets.id()));
    let copied = fs::read(into.join("wafer.db")).unwrap();
    assert!(!copied.windows(12).any(|w| w == b"s3cret-value"), "sealed");
    drop(store);

    let restored = tempfile::tempdir().unwrap();
    assert_eq!(restore(&into, restored.path()).unwrap(), summary);
    let store = SqliteStore::open(restored.path()).unwrap();
    let f = store.get_function("f").await.unwrap().unwrap();
    assert_eq!(store.module(&f.live.digest).await.unwrap(), b"\0asm-f");
    assert_eq!(
        store.variables("f").await.unwrap().secrets["token"],
        "s3cret-value"
    );
    assert_eq!(store.kv_get("kv", "k").await.unwrap().unwrap(), b"v");
    let granted =
        Connection::open(restored.path().join(FUNCTION_DATABASES).join("app.db")).unwrap();
    let x: i64 = granted
        .query_row("SELECT x FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(x, 42);
    assert_eq!(
        fs::read_to_string(restored.path().join(NODE_ID_FILE)).unwrap(),
        "node-a\n"
    );
}

#[tokio::test]
async fn nothing_is_written_over_and_a_damaged_backup_is_refused() {
    let (dir, _store) = populated().await;
    let target = tempfile::tempdir().unwrap();
    fs::write(target.path().join("other"), "x").unwrap();
    let refused = backup(dir.path(), target.path()).unwrap_err();
    assert!(refused.to_string().contains("not empty"), "{refused}");
    let into = target.path().join("backup");
    backup(dir.path(), &into).unwrap();

    let occupied = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(occupied.path()).unwrap());
    let refused = restore(&into, occupied.path()).unwrap_err();
    assert!(refused.to_string().contains("already holds"), "{refused}");

    let module = fs::read_dir(blob_dir(&into))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    fs::write(module.path(), b"tampered").unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let refused = restore(&into, fresh.path()).unwrap_err();
    assert!(refused.to_string().contains("does not hash"), "{refused}");
    assert!(
        !fresh.path().join("wafer.db").exists(),
        "nothing half restored"
    );
    assert!(restore(fresh.path(), tempfile::tempdir().unwrap().path()).is_err());
}

#[tokio::test]
async fn a_module_gone_under_every_snapshot_fails_the_backup_and_leaves_nothing() {
    let (dir, store) = populated().await;
    let f = store.get_function("f").await.unwrap().unwrap();
    fs::remove_file(blob_dir(dir.path()).join(&f.live.digest)).unwrap();
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("backup");
    let failed = backup(dir.path(), &into).unwrap_err();
    assert!(matches!(failed, StoreError::Unavailable(_)), "{failed}");
    assert_eq!(fs::read_dir(target.path()).unwrap().count(), 0);
}
