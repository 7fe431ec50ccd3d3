//! The API keys a node knows: read from the store, and read again every [`REFRESH`] (and when a
//! request names a key the node has not seen, at most every [`MISS_REFRESH`]), so a key created on
//! one node of a cluster works on every other at once, and one revoked is refused everywhere within
//! seconds. Each key carries its own rate limiter (GCRA: one timestamp per key), kept across reads
//! while the key is unchanged; the limit is per node.

use super::scope::{Permission, Scope};
use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use wafer_store::{AccessStore, NewAudit, NewKey, StoreError, StoredKey};

/// How often a node reads the keys again.
const REFRESH: Duration = Duration::from_secs(2);
/// How soon after a read a request naming an unknown key may make the node read the keys again.
const MISS_REFRESH: Duration = Duration::from_millis(250);

/// A key as a node holds it: the stored key, its scopes read, and its rate limiter.
#[derive(Debug)]
pub struct ActiveKey {
    /// The key as stored.
    pub stored: StoredKey,
    /// Its scopes.
    scopes: Vec<Scope>,
    /// The rate limiter's theoretical arrival time (GCRA): when the next request would be on schedule.
    next: Mutex<Option<Instant>>,
}

impl ActiveKey {
    fn new(stored: StoredKey) -> Self {
        // Stored scopes were checked when the key was created; one that no longer reads grants nothing.
        let scopes = stored
            .scopes
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        Self {
            stored,
            scopes,
            next: Mutex::new(None),
        }
    }

    /// Whether the key allows `permission` on `name` (`None`: on every function).
    pub fn allows(&self, permission: Permission, name: Option<&str>) -> bool {
        self.scopes.iter().any(|s| s.allows(permission, name))
    }

    /// Refuses a key that is revoked or past its expiry (`now_ms`, the node's clock).
    pub fn check_valid(&self, now_ms: i64) -> Result<(), Error> {
        let id = &self.stored.id;
        if self.stored.revoked_ms.is_some() {
            return Err(Error::Unauthorized(format!("API key {id} was revoked")));
        }
        match self.stored.expires_ms {
            Some(at) if at <= now_ms => Err(Error::Unauthorized(format!(
                "API key {id} expired at {}",
                wafer_store::rfc3339(at)
            ))),
            _ => Ok(()),
        }
    }

    /// Takes one request from the key's rate limit: `rate_limit` a second, in bursts of up to as many.
    pub fn admit(&self, now: Instant) -> Result<(), Error> {
        let Some(rate) = self.stored.rate_limit.filter(|r| *r > 0) else {
            return Ok(());
        };
        let interval = Duration::from_secs(1) / rate;
        let burst = interval * (rate - 1);
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let due = next.map_or(now, |at| at.max(now));
        if due.duration_since(now) > burst {
            return Err(Error::RateLimited(format!(
                "API key {} is over its limit of {rate} requests a second",
                self.stored.id
            )));
        }
        *next = Some(due + interval);
        Ok(())
    }
}

/// The keys this node knows, and the store they live in.
pub struct Keys {
    store: Arc<dyn AccessStore>,
    known: RwLock<Arc<HashMap<String, Arc<ActiveKey>>>>,
    /// When the last read of the keys began.
    read_at: Mutex<Instant>,
    /// Held by a request reading the keys for a key this node does not know.
    reading: tokio::sync::Mutex<()>,
}

impl Keys {
    /// Reads the keys of `store`.
    pub async fn open(store: Arc<dyn AccessStore>) -> Result<Self, StoreError> {
        let keys = Self {
            store,
            known: RwLock::default(),
            read_at: Mutex::new(Instant::now()),
            reading: tokio::sync::Mutex::new(()),
        };
        keys.read().await?;
        Ok(keys)
    }

    /// Reads the keys again every [`REFRESH`] for as long as `keys` is held elsewhere.
    pub fn keep_reading(keys: &Arc<Self>) {
        let keys: Weak<Self> = Arc::downgrade(keys);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Some(keys) = keys.upgrade() else {
                    return;
                };
                if let Err(e) = keys.read().await {
                    tracing::warn!("cannot read the API keys: {e}");
                }
            }
        });
    }

    /// Deletes audit entries older than `retain`, every [`crate::journal::PRUNE_EVERY`], for as long as
    /// `keys` is held elsewhere.
    pub fn start_audit_retention(keys: &Arc<Self>, retain: Duration) {
        let store = keys.store.clone();
        let keys: Weak<Self> = Arc::downgrade(keys);
        tokio::spawn(async move {
            while keys.strong_count() > 0 {
                match store.prune_audit(retain).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(entries = n, "old audit entries deleted"),
                    Err(e) => tracing::error!("cannot delete old audit entries: {e}"),
                }
                tokio::time::sleep(crate::journal::PRUNE_EVERY).await;
            }
        });
    }

    /// Reads every key from the store, keeping the limiter of each that has not changed.
    async fn read(&self) -> Result<(), StoreError> {
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let stored = self.store.keys().await?;
        let old = self.snapshot();
        let known = stored
            .into_iter()
            .map(|key| match old.get(&key.id) {
                Some(held) if held.stored == key => (key.id.clone(), held.clone()),
                _ => (key.id.clone(), Arc::new(ActiveKey::new(key))),
            })
            .collect();
        *self.known.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(known);
        Ok(())
    }

    fn snapshot(&self) -> Arc<HashMap<String, Arc<ActiveKey>>> {
        self.known.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Key `id`. One this node does not know may have been created on another node since its last
    /// read: unless a read has begun since the request asked, the keys are read again — one read at
    /// a time, at most every [`MISS_REFRESH`], however many requests name unknown keys.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<ActiveKey>>, Error> {
        if let Some(key) = self.snapshot().get(id) {
            return Ok(Some(key.clone()));
        }
        let asked = Instant::now();
        let _one_read = self.reading.lock().await;
        let last = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if last < asked {
            tokio::time::sleep(MISS_REFRESH.saturating_sub(last.elapsed())).await;
            self.read().await?;
        }
        Ok(self.snapshot().get(id).cloned())
    }

    /// Whether any key is valid now: the first one turns authentication on for clients of a
    /// tokenless server that are not on loopback.
    pub fn any_valid(&self) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        self.snapshot()
            .values()
            .any(|key| key.check_valid(now).is_ok())
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Vec<Arc<ActiveKey>> {
        let mut keys: Vec<_> = self.snapshot().values().cloned().collect();
        keys.sort_by(|a, b| {
            (a.stored.created_ms, &a.stored.id).cmp(&(b.stored.created_ms, &b.stored.id))
        });
        keys
    }

    /// Stores a new key and knows it at once.
    pub async fn create(&self, key: NewKey) -> Result<StoredKey, Error> {
        let stored = self.store.create_key(key).await?;
        self.read().await?;
        Ok(stored)
    }

    /// Revokes key `id` and knows it at once; `None` if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<Option<StoredKey>, Error> {
        let revoked = self.store.revoke_key(id).await?;
        self.read().await?;
        Ok(revoked)
    }

    /// Writes `action` to the audit log; a failure is logged, as the action has happened.
    pub async fn record(&self, action: NewAudit) {
        if let Err(e) = self.store.record_action(action).await {
            tracing::error!("cannot write to the audit log: {e}");
        }
    }

    /// The audit log, newest first.
    pub async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<wafer_store::AuditEntry>, Error> {
        Ok(self.store.audit_log(before, limit).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rate_limit: Option<u32>, expires_ms: Option<i64>, revoked_ms: Option<i64>) -> ActiveKey {
        ActiveKey::new(StoredKey {
            id: "wk1".into(),
            name: "test".into(),
            hash: String::new(),
            secret: String::new(),
            scopes: vec!["read:a-*".into(), "not a scope".into()],
            rate_limit,
            created_ms: 0,
            expires_ms,
            revoked_ms,
            created_by: "token".into(),
        })
    }

    #[test]
    fn a_limited_key_takes_its_rate_in_bursts_and_no_more() {
        let key = key(Some(4), None, None);
        let start = Instant::now();
        for _ in 0..4 {
            key.admit(start).unwrap();
        }
        let refused = key.admit(start).unwrap_err();
        assert_eq!(refused.status(), 429);
        // A quarter of a second later, one more is on schedule.
        key.admit(start + Duration::from_millis(250)).unwrap();
        assert!(key.admit(start + Duration::from_millis(260)).is_err());
        // After a quiet second the whole burst is back.
        let later = start + Duration::from_secs(2);
        for _ in 0..4 {
            key.admit(later).unwrap();
        }
        let unlimited = self::key(None, None, None);
        for _ in 0..1000 {
            unlimited.admit(start).unwrap();
        }
    }

    #[test]
    fn revoked_and_expired_keys_are_refused_and_bad_scopes_grant_nothing() {
        assert!(key(None, Some(1_000), None).check_valid(999).is_ok());
        assert_eq!(
            key(None, Some(1_000), None)
                .check_valid(1_000)
                .unwrap_err()
                .status(),
            401
        );
        assert!(key(None, None, Some(5)).check_valid(0).is_err());
        let k = key(None, None, None);
        assert!(k.allows(Permission::Read, Some("a-b")));
        assert!(!k.allows(Permission::Read, Some("b")));
        assert_eq!(k.scopes.len(), 1);
    }
}
