//! Who may use the management API besides the server's token: API keys with scopes, and the audit log
//! of what was done with them.
//!
//! A key is an id and a secret. The store keeps the SHA-256 of the secret, which a bearer is checked
//! against, and a copy of the secret sealed like every other secret (`secrets.rs`), which a SigV4
//! signature is checked with (a signature is an HMAC under the secret, so its hash cannot verify it).
//! A revoked key stays listed, with when it was revoked, so the audit log keeps naming it.
//!
//! The audit log is append-only, one row per management action, until its entries age out
//! (`prune_audit`).

use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use ring::rand::{SecureRandom, SystemRandom};

/// The slot sealed key secrets are bound to (in place of a function's name, which cannot start with
/// `@`), so a sealed key cannot be passed off as a function's secret, nor the other way round.
pub(crate) const KEY_SLOT: &str = "@api-key";

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key's id, public: it names the key in lists, the audit log and SigV4 credentials.
    pub id: String,
    /// What the key is for, as its creator put it.
    pub name: String,
    /// The secret, which only the creator is shown.
    pub secret: String,
    /// What the key may do (`kind:pattern`, as the server reads them).
    pub scopes: Vec<String>,
    /// Requests per second the key may make, if limited.
    pub rate_limit: Option<u32>,
    /// How long the key is valid, from its creation (in the store's clock), if it expires.
    pub expires_in_ms: Option<i64>,
    /// Who created it, as the audit log names them.
    pub created_by: String,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The SHA-256 of its secret, in hex ([`key_hash`]).
    pub hash: String,
    /// The secret, opened from its sealed copy.
    pub secret: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Requests per second, if limited.
    pub rate_limit: Option<u32>,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
    /// When it stops being valid, if it does.
    pub expires_ms: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
    /// Who created it.
    pub created_by: String,
}

/// A management action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// Who: `token`, `local` (a loopback client of a server without a token) or `key:ID`.
    pub actor: String,
    /// What: the method and the route (`POST /v1/functions/{name}/versions`).
    pub action: String,
    /// What it was done to: a function, a store, a key or an execution, when the route names one.
    pub target: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The client's address, when known.
    pub client: Option<String>,
}

/// A recorded management action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position in the log, increasing.
    pub seq: i64,
    /// When (ms since the epoch, in the store's clock).
    pub at_ms: i64,
    /// What was recorded.
    pub entry: NewAudit,
}

/// API keys and the audit log. Every method is atomic.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new key (its id is random: [`new_key_material`]) and returns it as stored.
    async fn create_key(&self, key: NewKey) -> Result<StoredKey, StoreError>;

    /// Every key, revoked ones too, oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>, StoreError>;

    /// Revokes key `id` (from now, unless it already was) and returns it; `None` if there is no such key.
    async fn revoke_key(&self, id: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Appends an action to the audit log.
    async fn record_action(&self, action: NewAudit) -> Result<(), StoreError>;

    /// Deletes the actions recorded more than `older_than` ago (in the store's clock); how many.
    async fn prune_audit(&self, older_than: std::time::Duration) -> Result<u64, StoreError>;

    /// Up to `limit` actions before `before` (a `seq`; the newest without it), newest first.
    async fn audit_log(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
}

/// The SHA-256 of a key's secret, in hex: what a presented bearer is compared with.
pub fn key_hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh key's id (`wk` and 16 hex digits) and secret (43 characters of URL-safe base64, 256 bits),
/// from the system's random source.
pub fn new_key_material() -> Result<(String, String), StoreError> {
    let random = SystemRandom::new();
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    random
        .fill(&mut id)
        .and_then(|()| random.fill(&mut secret))
        .map_err(|_| StoreError::SecretsKey("the system's random source failed".into()))?;
    use base64::Engine as _;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Ok((
        format!("wk{id}"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    ))
}

/// The columns of `api_keys`, in the order [`KeyRow`] reads them.
pub(crate) const KEY_COLUMNS: &str =
    "id, name, hash, secret, scopes, rate_limit, created_ms, expires_ms, revoked_ms, created_by";

/// The columns of `audit`, in the order [`AuditRow`] reads them.
pub(crate) const AUDIT_COLUMNS: &str = "seq, at_ms, actor, action, target, status, client";

/// What a store writes for a new key: the hash of its secret, the secret sealed, and its scopes as a
/// JSON array.
pub(crate) fn key_columns(
    seal: &SecretsKey,
    key: &NewKey,
) -> Result<(String, String, String), StoreError> {
    let scopes = serde_json::to_string(&key.scopes)
        .map_err(|e| StoreError::Database(format!("cannot write scopes: {e}")))?;
    Ok((
        key_hash(&key.secret),
        seal.seal(KEY_SLOT, &key.id, &key.secret)?,
        scopes,
    ))
}

/// A row of `api_keys` as read, its secret still sealed.
pub(crate) struct KeyRow {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub sealed: String,
    pub scopes: String,
    pub rate_limit: Option<i64>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub created_by: String,
}

impl KeyRow {
    /// The key, its secret opened with `key`.
    pub(crate) fn open(self, key: &SecretsKey) -> Result<StoredKey, StoreError> {
        let scopes = serde_json::from_str(&self.scopes).map_err(|e| {
            StoreError::Corrupt(format!("the scopes of key {} are not a list: {e}", self.id))
        })?;
        Ok(StoredKey {
            secret: key.open(KEY_SLOT, &self.id, &self.sealed)?,
            scopes,
            rate_limit: self.rate_limit.and_then(|r| u32::try_from(r).ok()),
            id: self.id,
            name: self.name,
            hash: self.hash,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            revoked_ms: self.revoked_ms,
            created_by: self.created_by,
        })
    }
}

/// A row of `audit` as read.
pub(crate) type AuditRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
);

/// An audit row as an entry.
pub(crate) fn audit_entry(
    (seq, at_ms, actor, action, target, status, client): AuditRow,
) -> AuditEntry {
    AuditEntry {
        seq,
        at_ms,
        entry: NewAudit {
            actor,
            action,
            target,
            status: u16::try_from(status).unwrap_or_default(),
            client,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_is_fresh_and_well_formed() {
        let (id, secret) = new_key_material().unwrap();
        let (id2, secret2) = new_key_material().unwrap();
        assert_ne!(id, id2);
        assert_ne!(secret, secret2);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("wk"));
        assert_eq!(secret.len(), 43);
        assert_eq!(key_hash(&secret).len(), 64);
        assert_eq!(key_hash("abc"), key_hash("abc"));
        assert_ne!(key_hash("abc"), key_hash("abd"));
    }
}
