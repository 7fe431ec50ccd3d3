//! The state functions keep and are given: key-value stores, and each function's configuration
//! variables and secrets.
//!
//! Key-value data lives in named stores shared by the functions granted them; operators reach it through
//! the management API too. Each store has a size cap (keys plus values, in bytes), checked in the same
//! transaction as the write that would pass it. Configuration belongs to a function, not to one of its
//! versions, so a change applies to the next call without a deploy.

use crate::{SecretsKey, StoreError};
use async_trait::async_trait;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What a store writes for the value of variable `name` of `function`: the value itself, or sealed
/// with `seal` when it is a secret.
pub(crate) fn stored_value<'a>(
    seal: Option<&SecretsKey>,
    function: &str,
    name: &str,
    value: &'a str,
) -> Result<Cow<'a, str>, StoreError> {
    Ok(match seal {
        Some(key) => Cow::Owned(key.seal(function, name, value)?),
        None => Cow::Borrowed(value),
    })
}

/// Files a stored `(name, value, secret)` row of `function` into `into`, opening a secret with `key`.
/// A secret that is not sealed was written by a wafer from before secrets were (a node of an earlier
/// version, during a rolling upgrade of a cluster): it is taken as it is, and sealed at the next start.
pub(crate) fn file_variable(
    into: &mut FunctionVariables,
    key: &SecretsKey,
    function: &str,
    (name, value, secret): (String, String, bool),
) -> Result<(), StoreError> {
    if secret {
        let value = match SecretsKey::is_sealed(&value) {
            true => key.open(function, &name, &value)?,
            false => value,
        };
        into.secrets.insert(name, value);
    } else {
        into.variables.insert(name, value);
    }
    Ok(())
}

/// What an entry counts against its store's cap: its key's and its value's bytes.
pub(crate) fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

/// The decimal integer stored at `key` (`None`: absent, 0) plus `delta`; [`StoreError::NotANumber`] when
/// the value is not one or the sum overflows.
pub(crate) fn incremented(
    key: &str,
    current: Option<&[u8]>,
    delta: i64,
) -> Result<i64, StoreError> {
    let not_a_number = || StoreError::NotANumber(key.to_string());
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .ok_or_else(not_a_number)?,
    };
    current.checked_add(delta).ok_or_else(not_a_number)
}

/// One page of a store's keys, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// The key to continue after, when there are more.
    pub cursor: Option<String>,
}

/// A function's configuration: plain variables, and secrets (whose values only functions read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionVariables {
    /// Variables by name.
    pub variables: BTreeMap<String, String>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, String>,
}

/// Key-value stores and function configuration. Every method is atomic.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// The value of `key` in `store`.
    async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `key` in `store`, refusing with [`StoreError::Full`] when the store would pass `max_bytes`.
    async fn kv_set(
        &self,
        store: &str,
        key: &str,
        value: Vec<u8>,
        max_bytes: u64,
    ) -> Result<(), StoreError>;

    /// Sets several keys at once, all or none.
    async fn kv_set_many(
        &self,
        store: &str,
        entries: Vec<(String, Vec<u8>)>,
        max_bytes: u64,
    ) -> Result<(), StoreError>;

    /// Deletes keys; returns how many existed.
    async fn kv_delete(&self, store: &str, keys: Vec<String>) -> Result<u64, StoreError>;

    /// Whether `key` is in `store`.
    async fn kv_exists(&self, store: &str, key: &str) -> Result<bool, StoreError>;

    /// Up to `limit` keys of `store` after `cursor`, in order.
    async fn kv_keys(
        &self,
        store: &str,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, StoreError>;

    /// Adds `delta` to the decimal integer at `key` (0 when absent) and returns the sum. Fails with
    /// [`StoreError::NotANumber`] when the value is not one.
    async fn kv_increment(
        &self,
        store: &str,
        key: &str,
        delta: i64,
        max_bytes: u64,
    ) -> Result<i64, StoreError>;

    /// Sets `key` to `value` only if it still holds `expected` (`None`: only if absent); whether it did.
    async fn kv_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        max_bytes: u64,
    ) -> Result<bool, StoreError>;

    /// The bytes (keys plus values) `store` holds.
    async fn kv_size(&self, store: &str) -> Result<u64, StoreError>;

    /// The configuration of `function`.
    async fn variables(&self, function: &str) -> Result<FunctionVariables, StoreError>;

    /// The configuration of every function that has some.
    async fn all_variables(
        &self,
    ) -> Result<std::collections::HashMap<String, FunctionVariables>, StoreError>;

    /// Replaces the variables of `function`, and sets (`Some`) or removes (`None`) the named secrets.
    async fn set_variables(
        &self,
        function: &str,
        variables: BTreeMap<String, String>,
        secrets: BTreeMap<String, Option<String>>,
    ) -> Result<(), StoreError>;

    /// Adds to (or overwrites in) the configuration of `function`, keeping what is not named.
    async fn merge_variables(
        &self,
        function: &str,
        update: FunctionVariables,
    ) -> Result<(), StoreError>;

    /// Forgets the configuration of a deleted function.
    async fn forget_variables(&self, function: &str) -> Result<(), StoreError>;
}
