//! `wasi:keyvalue` (store, atomics, batch; 0.2.0-draft) and `wasi:logging` (0.1.0-draft) for components.
//!
//! A store opens only when the function was granted it; every operation then goes to the [`Platform`],
//! which keeps the data in wafer's database and enforces the store's size cap. A refused call is written
//! to the execution's log, so the function's owner sees why. `wasi:logging` lines go to the same log with
//! the level the guest gave.

use super::platform::{Platform, PlatformError};
use super::ComponentState;
use std::sync::Arc;
use wafer_api::LogLevel;
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wafer:host/capabilities",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
    });
}

use bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use bindings::wasi::logging::logging;

/// An open store: its name, and the key cursors handed to the guest (a wasi cursor is an index here).
pub struct Bucket {
    store: String,
    cursors: Vec<String>,
}

/// Links the capability interfaces for components.
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    bindings::Capabilities::add_to_linker::<_, HasSelf<ComponentState>>(linker, |s| s)
}

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

impl ComponentState {
    /// The platform behind the capabilities, or why there is none.
    fn platform(&self) -> Result<Arc<dyn Platform>, PlatformError> {
        self.hooks.guest.platform.get().cloned()
    }

    /// The store behind `bucket`.
    fn bucket(&self, bucket: &Resource<Bucket>) -> wasmtime::Result<String> {
        Ok(self.table.get(bucket)?.store.clone())
    }

    /// A platform operation's result as the guest gets it; a failure is logged first.
    fn answer<T>(&self, what: &str, result: Result<T, PlatformError>) -> Result<T, store::Error> {
        result.map_err(|e| {
            self.log.log(
                LogLevel::Error,
                &format!("wasi:keyvalue {what} failed: {e}"),
            );
            match e {
                PlatformError::Denied(_) => store::Error::AccessDenied,
                PlatformError::NotFound(_) => store::Error::NoSuchStore,
                other => store::Error::Other(other.to_string()),
            }
        })
    }
}

impl store::Host for ComponentState {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        let granted = self.hooks.guest.store(&identifier).map(|_| ());
        if let Err(e) = self.answer("open", granted) {
            return Ok(Err(e));
        }
        let bucket = Bucket {
            store: identifier,
            cursors: Vec::new(),
        };
        Ok(Ok(self.table.push(bucket)?))
    }
}

impl store::HostBucket for ComponentState {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_get(&store, &key).await }.await;
        Ok(self.answer("get", result))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_set(&store, vec![(key, value)]).await }.await;
        Ok(self.answer("set", result))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_delete(&store, vec![key]).await }.await;
        Ok(self.answer("delete", result))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_exists(&store, &key).await }.await;
        Ok(self.answer("exists", result))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Answer<store::KeyResponse> {
        let open = self.table.get(&bucket)?;
        let store = open.store.clone();
        let after = match cursor {
            None => None,
            Some(n) => match usize::try_from(n).ok().and_then(|i| open.cursors.get(i)) {
                Some(after) => Some(after.clone()),
                None => {
                    return Ok(Err(store::Error::Other(format!(
                        "cursor {n} was not handed out by this bucket"
                    ))))
                }
            },
        };
        let platform = self.platform();
        let result = async { platform?.kv_keys(&store, after).await }.await;
        let (keys, next) = match self.answer("list-keys", result) {
            Ok(page) => page,
            Err(e) => return Ok(Err(e)),
        };
        let cursor = match next {
            Some(next) => {
                let open = self.table.get_mut(&bucket)?;
                open.cursors.push(next);
                Some(open.cursors.len() as u64 - 1)
            }
            None => None,
        };
        Ok(Ok(store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for ComponentState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Answer<u64> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let sum = async {
            let by = i64::try_from(delta).map_err(|_| {
                PlatformError::Refused(format!("an increment of {delta} is too large"))
            })?;
            let sum = platform?.kv_increment(&store, &key, by).await?;
            u64::try_from(sum).map_err(|_| {
                PlatformError::Refused(format!("`{key}` holds {sum}, which is negative"))
            })
        }
        .await;
        Ok(self.answer("increment", sum))
    }
}

impl batch::Host for ComponentState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let values = async {
            let platform = platform?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = platform.kv_get(&store, &key).await?;
                values.push(value.map(|v| (key, v)));
            }
            Ok(values)
        }
        .await;
        Ok(self.answer("get-many", values))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_set(&store, key_values).await }.await;
        Ok(self.answer("set-many", result))
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let store = self.bucket(&bucket)?;
        let platform = self.platform();
        let result = async { platform?.kv_delete(&store, keys).await }.await;
        Ok(self.answer("delete-many", result))
    }
}

impl logging::Host for ComponentState {
    async fn log(
        &mut self,
        level: logging::Level,
        context: String,
        message: String,
    ) -> wasmtime::Result<()> {
        let level = match level {
            logging::Level::Trace => LogLevel::Trace,
            logging::Level::Debug => LogLevel::Debug,
            logging::Level::Info => LogLevel::Info,
            logging::Level::Warn => LogLevel::Warn,
            logging::Level::Error => LogLevel::Error,
            logging::Level::Critical => LogLevel::Critical,
        };
        if context.is_empty() {
            self.log.log(level, &message);
        } else {
            self.log.log(level, &format!("{context}: {message}"));
        }
        Ok(())
    }
}
