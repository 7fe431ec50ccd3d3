//! What a function reaches beyond its own instance: key-value stores and other functions. The server
//! provides it ([`Platform`]); the engine checks every use against the calling function's grants first.

use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// Why a platform operation failed, in words the function's log can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The function was not granted this store or callee.
    #[error("{0}")]
    Denied(String),
    /// The store, key or function does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request was refused: a full store, a value that is not a number.
    #[error("{0}")]
    Refused(String),
    /// The call would make a chain of function calls deeper than [`MAX_CALL_DEPTH`].
    #[error("{0}")]
    TooDeep(String),
    /// The platform failed.
    #[error("{0}")]
    Failed(String),
}

/// The services behind a function's capabilities. Grants are checked by the engine before these are
/// called; store size caps and callee limits are the platform's to enforce.
#[async_trait]
pub trait Platform: Send + Sync {
    /// The value of `key` in `store`.
    async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, PlatformError>;
    /// Sets keys in `store`, all or none.
    async fn kv_set(
        &self,
        store: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), PlatformError>;
    /// Deletes keys from `store`.
    async fn kv_delete(&self, store: &str, keys: Vec<String>) -> Result<(), PlatformError>;
    /// Whether `key` is in `store`.
    async fn kv_exists(&self, store: &str, key: &str) -> Result<bool, PlatformError>;
    /// A page of `store`'s keys after `cursor`, with the cursor of the next page.
    async fn kv_keys(
        &self,
        store: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), PlatformError>;
    /// Adds `delta` to the integer at `key` and returns the sum.
    async fn kv_increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, PlatformError>;
    /// Sets `key` to `value` only if it still holds `expected` (`None`: only if absent); whether it did.
    async fn kv_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, PlatformError>;
    /// The file of the SQLite database labelled `label` (created on first use), which every function
    /// granted the label shares.
    fn sqlite_file(&self, label: &str) -> Result<std::path::PathBuf, PlatformError>;
    /// Calls the function mounted at `request`'s path (a Spin application's `http://self/…`), on
    /// behalf of `caller`, as a call `depth` deep.
    async fn call_route(
        &self,
        caller: &str,
        request: http::Request<Bytes>,
        depth: u32,
    ) -> Result<http::Response<Bytes>, PlatformError>;
    /// Calls the function named (or, for proxy-wasm functions, identified) `target` with `request`, on
    /// behalf of `caller`, as a call `depth` deep (1 for a call made by a function reached from outside).
    async fn call(
        &self,
        caller: &str,
        target: &str,
        request: http::Request<Bytes>,
        depth: u32,
    ) -> Result<http::Response<Bytes>, PlatformError>;
}

/// A function's handle on the platform, when the engine runs inside a server.
#[derive(Clone, Default)]
pub struct PlatformHandle(pub Option<Arc<dyn Platform>>);

impl fmt::Debug for PlatformHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Platform"
        } else {
            "NoPlatform"
        })
    }
}

impl PlatformHandle {
    /// The platform, or why there is none.
    pub(crate) fn get(&self) -> Result<&Arc<dyn Platform>, PlatformError> {
        self.0.as_ref().ok_or_else(|| {
            PlatformError::Failed("no platform services are available to this function".into())
        })
    }
}

/// How deep in a chain of function-to-function calls a request is: absent (0) for a request from outside.
/// Set by the platform as a request extension, never from anything a guest sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallDepth(pub u32);

/// The deepest chain of function-to-function calls allowed; a call past it is refused, so a cycle of
/// functions calling each other ends instead of running away.
pub const MAX_CALL_DEPTH: u32 = 8;

/// The reserved host suffix through which an http function calls another: `http://{name}.fn.internal/`.
pub const INTERNAL_SUFFIX: &str = ".fn.internal";

/// The capabilities a function is granted beyond computing: stores, callees, and its configuration.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// The key-value stores it may open.
    pub kv_stores: Arc<[String]>,
    /// The functions (names or proxy-wasm ids) it may call; `*` allows any.
    pub functions: Arc<[String]>,
    /// The SQLite databases it may open, by label.
    pub sqlite_databases: Arc<[String]>,
}

impl Grants {
    /// Whether `store` may be opened.
    pub(crate) fn store(&self, store: &str) -> Result<(), PlatformError> {
        if self.kv_stores.iter().any(|s| s == store) {
            Ok(())
        } else {
            Err(PlatformError::Denied(format!(
                "key-value store `{store}` is not granted to this function (grant it with \
                 key_value_stores / `wafer deploy --kv {store}`)"
            )))
        }
    }

    /// Whether the SQLite database `label` may be opened.
    pub(crate) fn sqlite(&self, label: &str) -> Result<(), PlatformError> {
        if self.sqlite_databases.iter().any(|d| d == label) {
            Ok(())
        } else {
            Err(PlatformError::Denied(format!(
                "SQLite database `{label}` is not granted to this function (grant it with \
                 sqlite_databases / `wafer deploy --sqlite {label}`)"
            )))
        }
    }

    /// Whether `target` may be called.
    pub(crate) fn function(&self, target: &str) -> Result<(), PlatformError> {
        if self.functions.iter().any(|f| f == "*" || f == target) {
            Ok(())
        } else {
            Err(PlatformError::Denied(format!(
                "calling function `{target}` is not granted to this function (grant it with \
                 allowed_functions / `wafer deploy --call {target}`)"
            )))
        }
    }
}

/// The function a host call is made for: its name, its grants, the platform behind them, and how deep in
/// a chain of function calls its current request is. Every adapter reaches the platform through it, so a
/// grant is checked, and a call counted one level deeper, the same way for all of them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guest {
    pub(crate) name: String,
    pub(crate) grants: Grants,
    pub(crate) platform: PlatformHandle,
    pub(crate) depth: CallDepth,
}

impl Guest {
    /// The function `settings` describes, serving a request `depth` calls deep.
    pub(crate) fn new(settings: &crate::Settings, depth: CallDepth) -> Self {
        Self {
            name: settings.name.clone(),
            grants: settings.grants.clone(),
            platform: settings.platform.clone(),
            depth,
        }
    }

    /// The platform, for key-value store `store`, once the function is granted it.
    pub(crate) fn store(&self, store: &str) -> Result<&Arc<dyn Platform>, PlatformError> {
        self.grants.store(store)?;
        self.platform.get()
    }

    /// Calls the function mounted at `request`'s path, one level deeper (the allowlist granted `self`).
    pub(crate) async fn call_route(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, PlatformError> {
        self.platform
            .get()?
            .call_route(&self.name, request, self.depth.0 + 1)
            .await
    }

    /// The file of SQLite database `label`, once the function is granted it.
    pub(crate) fn sqlite_file(&self, label: &str) -> Result<std::path::PathBuf, PlatformError> {
        self.grants.sqlite(label)?;
        self.platform.get()?.sqlite_file(label)
    }

    /// Calls function `target` with `request`, one level deeper, once the function is granted it.
    pub(crate) async fn call(
        &self,
        target: &str,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, PlatformError> {
        self.grants.function(target)?;
        self.platform
            .get()?
            .call(&self.name, target, request, self.depth.0 + 1)
            .await
    }
}

/// A function's configuration variables and secrets, as `wasi:config/store` shows them. Its `Debug` shows
/// no values, so secrets never reach a log.
#[derive(Clone, Default)]
pub struct Variables {
    pub(crate) config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    /// The same pairs, for the interfaces wafer implements itself (Spin's variables, draft wasi:config).
    pub(crate) values: Arc<std::collections::BTreeMap<String, String>>,
}

impl Variables {
    /// The given name and value pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let values: std::collections::BTreeMap<String, String> = pairs.into_iter().collect();
        Self {
            config: Arc::new(values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            values: Arc::new(values),
        }
    }
}

impl fmt::Debug for Variables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Variables({} hidden)", self.values.len())
    }
}
