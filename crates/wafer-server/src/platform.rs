//! The platform behind functions' capabilities: key-value stores kept in wafer's database, and calls
//! from one function to another that never leave the process.
//!
//! The engine checks a function's grants before it gets here; this side enforces store size caps and
//! runs a call through the invocation core like any other request to the callee (its admission, body
//! cap, auth and execution record apply), except that it is marked as `call`, one level deeper.

use crate::app::App;
use crate::invoke::{self, Invocation};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use wafer_api::Trigger;
use wafer_engine::{CallDepth, Mount, Platform, PlatformError, MAX_CALL_DEPTH};
use wafer_store::{StateStore, StoreError};

/// The most bytes of a callee's response handed back to its caller.
const MAX_CALL_RESPONSE: usize = 64 << 20;

/// Keys listed per page of `list-keys`.
pub const KEYS_PER_PAGE: u32 = 1000;

/// wafer's [`Platform`].
pub struct ServerPlatform {
    state: Arc<dyn StateStore>,
    store_bytes: u64,
    /// Where SQLite databases granted by label live: `{data}/sqlite/{label}.db`.
    sqlite_dir: PathBuf,
    app: OnceLock<Weak<App>>,
}

impl ServerPlatform {
    pub(crate) fn new(state: Arc<dyn StateStore>, store_bytes: u64, data_dir: &Path) -> Self {
        Self {
            state,
            store_bytes,
            sqlite_dir: data_dir.join(wafer_store::FUNCTION_DATABASES),
            app: OnceLock::new(),
        }
    }

    /// Connects the platform to the server it calls functions through, once that exists.
    pub(crate) fn attach(&self, app: &Arc<App>) {
        let _ = self.app.set(Arc::downgrade(app));
    }

    fn app(&self) -> Result<Arc<App>, PlatformError> {
        self.app
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| PlatformError::Failed("the server is shutting down".into()))
    }
}

/// Maps a store failure to what a function is told.
fn store_error(e: StoreError) -> PlatformError {
    match e {
        StoreError::Full { .. } | StoreError::NotANumber(_) => {
            PlatformError::Refused(e.to_string())
        }
        other => {
            tracing::error!("key-value store failed: {other}");
            PlatformError::Failed("the key-value store failed".into())
        }
    }
}

#[async_trait]
impl Platform for ServerPlatform {
    async fn kv_get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, PlatformError> {
        self.state.kv_get(store, key).await.map_err(store_error)
    }

    async fn kv_set(
        &self,
        store: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), PlatformError> {
        self.state
            .kv_set_many(store, entries, self.store_bytes)
            .await
            .map_err(store_error)
    }

    async fn kv_delete(&self, store: &str, keys: Vec<String>) -> Result<(), PlatformError> {
        self.state
            .kv_delete(store, keys)
            .await
            .map(|_| ())
            .map_err(store_error)
    }

    async fn kv_exists(&self, store: &str, key: &str) -> Result<bool, PlatformError> {
        self.state.kv_exists(store, key).await.map_err(store_error)
    }

    async fn kv_keys(
        &self,
        store: &str,
        cursor: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), PlatformError> {
        let page = self
            .state
            .kv_keys(store, cursor, KEYS_PER_PAGE)
            .await
            .map_err(store_error)?;
        Ok((page.keys, page.cursor))
    }

    async fn kv_increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, PlatformError> {
        self.state
            .kv_increment(store, key, delta, self.store_bytes)
            .await
            .map_err(store_error)
    }

    async fn kv_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, PlatformError> {
        self.state
            .kv_swap(store, key, expected, value, self.store_bytes)
            .await
            .map_err(store_error)
    }

    fn sqlite_file(&self, label: &str) -> Result<PathBuf, PlatformError> {
        std::fs::create_dir_all(&self.sqlite_dir).map_err(|e| {
            tracing::error!(dir = %self.sqlite_dir.display(), "cannot create the SQLite directory: {e}");
            PlatformError::Failed("the SQLite database cannot be created".into())
        })?;
        Ok(self.sqlite_dir.join(format!("{label}.db")))
    }

    async fn call_route(
        &self,
        caller: &str,
        request: http::Request<Bytes>,
        depth: u32,
    ) -> Result<http::Response<Bytes>, PlatformError> {
        let path = request.uri().path().to_string();
        let app = self.app()?;
        check_depth(caller, &path, depth)?;
        let (route, live) = app
            .routed(&path)
            .await
            .ok_or_else(|| PlatformError::NotFound(format!("no function is mounted at {path}")))?;
        let mount = Mount {
            prefix: route,
            strip_prefix: false,
            client: None,
        };
        run_call(&app, caller, &path, live, mount, request, depth).await
    }

    async fn call(
        &self,
        caller: &str,
        target: &str,
        request: http::Request<Bytes>,
        depth: u32,
    ) -> Result<http::Response<Bytes>, PlatformError> {
        check_depth(caller, target, depth)?;
        let app = self.app()?;
        let live = app.resolve(target).await.ok_or_else(|| {
            PlatformError::NotFound(format!("no function `{target}` is deployed"))
        })?;
        let mount = Mount {
            prefix: String::new(),
            strip_prefix: true,
            client: None,
        };
        run_call(&app, caller, target, live, mount, request, depth).await
    }
}

/// Refuses a call that would make a chain of function calls too deep.
fn check_depth(caller: &str, target: &str, depth: u32) -> Result<(), PlatformError> {
    if depth > MAX_CALL_DEPTH {
        return Err(PlatformError::TooDeep(format!(
            "the call from `{caller}` to `{target}` is too deep: more than {MAX_CALL_DEPTH} \
             function calls in a chain"
        )));
    }
    Ok(())
}

/// Runs `request` through the invocation core as a `call` of function `live` (reached as `target`),
/// `depth` deep, and reads its whole answer.
async fn run_call(
    app: &Arc<App>,
    caller: &str,
    target: &str,
    live: Arc<crate::registry::Entry>,
    mount: Mount,
    request: http::Request<Bytes>,
    depth: u32,
) -> Result<http::Response<Bytes>, PlatformError> {
    let entry = app
        .version_for(live, None)
        .await
        .map_err(|e| PlatformError::Failed(format!("cannot load `{target}`: {}", e.describe())))?;
    let version = entry.version;
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(CallDepth(depth));
    let invocation = Invocation::new(entry, parts, body, mount, Trigger::Call);
    let (id, answer) = invoke::call(app, invocation).await;
    let (parts, body) = invoke::respond(&id, version, answer).into_parts();
    let body = invoke::read_response(body, MAX_CALL_RESPONSE)
        .await
        .map_err(|e| {
            PlatformError::Failed(format!("cannot read the response of `{target}`: {e}"))
        })?;
    tracing::debug!(caller, target, status = %parts.status, depth, "function call");
    Ok(http::Response::from_parts(parts, body))
}
