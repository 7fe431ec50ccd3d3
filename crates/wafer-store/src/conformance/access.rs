//! API keys and the audit log.

use super::Stores;
use crate::{key_hash, new_key_material, NewAudit, NewKey};

fn new_key(name: &str, expires_in_ms: Option<i64>) -> NewKey {
    let (id, secret) = new_key_material().expect("key material");
    NewKey {
        id,
        name: name.into(),
        secret,
        scopes: vec!["deploy:hello-*".into(), "invoke:*".into()],
        rate_limit: Some(5),
        expires_in_ms,
        created_by: "token".into(),
    }
}

/// A key is stored with the hash of its secret, read back with its secret opened, listed oldest
/// first, and revoked once: a second revocation keeps the first time.
pub async fn keys_are_stored_hashed_listed_and_revoked_once(s: &Stores) {
    let first = new_key("ci", Some(60_000));
    let created = s.access.create_key(first.clone()).await.unwrap();
    assert_eq!(created.id, first.id);
    assert_eq!(created.hash, key_hash(&first.secret));
    assert_eq!(created.secret, first.secret);
    assert_eq!(created.scopes, first.scopes);
    assert_eq!(created.rate_limit, Some(5));
    assert_eq!(created.expires_ms, Some(created.created_ms + 60_000));
    assert_eq!(created.revoked_ms, None);
    // Keys list by creation time (then id): the second is made a moment later.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = s.access.create_key(new_key("forever", None)).await.unwrap();
    assert_eq!(second.expires_ms, None);

    let listed = s.access.keys().await.unwrap();
    assert_eq!(listed, vec![created.clone(), second.clone()]);

    let revoked = s.access.revoke_key(&first.id).await.unwrap().unwrap();
    let at = revoked.revoked_ms.expect("revoked");
    assert!(at >= created.created_ms);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let again = s.access.revoke_key(&first.id).await.unwrap().unwrap();
    assert_eq!(again.revoked_ms, Some(at));
    assert!(s.access.revoke_key("wk0000").await.unwrap().is_none());
    let listed = s.access.keys().await.unwrap();
    assert_eq!(listed[0].revoked_ms, Some(at));
    assert_eq!(listed[1].revoked_ms, None);
}

/// The audit log keeps every action in order, pages newest first, and forgets what aged out.
pub async fn the_audit_log_pages_newest_first(s: &Stores) {
    assert!(s.access.audit_log(None, 10).await.unwrap().is_empty());
    for n in 0..5u16 {
        let action = NewAudit {
            actor: format!("key:wk{n}"),
            action: "POST /v1/functions/{name}/versions".into(),
            target: (n % 2 == 0).then(|| format!("f{n}")),
            status: 200 + n,
            client: Some("127.0.0.1:1".into()),
        };
        s.access.record_action(action).await.unwrap();
    }
    let page = s.access.audit_log(None, 2).await.unwrap();
    let statuses: Vec<u16> = page.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [204, 203]);
    assert_eq!(page[0].entry.target.as_deref(), Some("f4"));
    assert_eq!(page[1].entry.target, None);
    assert!(page[0].seq > page[1].seq && page[0].at_ms >= page[1].at_ms);
    let rest = s.access.audit_log(Some(page[1].seq), 10).await.unwrap();
    let statuses: Vec<u16> = rest.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [202, 201, 200]);
    assert_eq!(rest[2].entry.actor, "key:wk0");
    // Entries age out.
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(s.access.prune_audit(hour).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        s.access
            .prune_audit(std::time::Duration::ZERO)
            .await
            .unwrap(),
        5
    );
    assert!(s.access.audit_log(None, 10).await.unwrap().is_empty());
}
