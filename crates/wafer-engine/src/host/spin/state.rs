//! Key-value stores and variables as Spin's SDKs reach them: `fermyon:spin/key-value@2.0.0`,
//! `wasi:keyvalue@0.2.0-draft2` (store, atomics with compare-and-swap, batch),
//! `fermyon:spin/variables@2.0.0` and `wasi:config/store@0.2.0-draft-2024-09-27`.

use super::bindings::fermyon::spin::{key_value, variables};
use super::bindings::wasi::config0_2_0_draft_2024_09_27::store as config;
use super::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::host::platform::{Platform, PlatformError};
use crate::host::ComponentState;
use std::sync::Arc;
use wasmtime::component::Resource;

/// An open key-value store: the wafer store its label names.
pub struct Label(String);

/// A compare-and-swap handle: the key, and the value it held when the handle was made.
pub struct Cas {
    store: String,
    key: String,
    seen: Option<Vec<u8>>,
}

impl ComponentState {
    /// The platform behind store `label`, once the function is granted it.
    fn granted(&self, label: &str) -> Result<Arc<dyn Platform>, PlatformError> {
        self.hooks.guest.store(label).cloned()
    }

    /// The store an open label names.
    fn label(&self, label: &Resource<Label>) -> wasmtime::Result<String> {
        Ok(self.table.get(label)?.0.clone())
    }
}

/// Every key of `store`, page after page.
async fn all_keys(
    platform: Result<Arc<dyn Platform>, PlatformError>,
    store: &str,
) -> Result<Vec<String>, PlatformError> {
    let platform = platform?;
    let (mut keys, mut cursor) = platform.kv_keys(store, None).await?;
    while let Some(after) = cursor {
        let (more, next) = platform.kv_keys(store, Some(after)).await?;
        keys.extend(more);
        cursor = next;
    }
    Ok(keys)
}

type Answer<T, E> = wasmtime::Result<Result<T, E>>;

fn spin_error(e: PlatformError) -> key_value::Error {
    match e {
        PlatformError::Denied(_) => key_value::Error::AccessDenied,
        PlatformError::NotFound(_) => key_value::Error::NoSuchStore,
        other => key_value::Error::Other(other.to_string()),
    }
}

fn wasi_error(e: PlatformError) -> store::Error {
    match e {
        PlatformError::Denied(_) => store::Error::AccessDenied,
        PlatformError::NotFound(_) => store::Error::NoSuchStore,
        other => store::Error::Other(other.to_string()),
    }
}

impl ComponentState {
    /// A platform result as `fermyon:spin/key-value` answers it, logged when it failed.
    fn spin_kv<T>(
        &self,
        what: &str,
        result: Result<T, PlatformError>,
    ) -> Result<T, key_value::Error> {
        result.map_err(|e| spin_error(self.refused("fermyon:spin/key-value", what, e)))
    }

    /// A platform result as `wasi:keyvalue` answers it, logged when it failed.
    fn wasi_kv<T>(&self, what: &str, result: Result<T, PlatformError>) -> Result<T, store::Error> {
        result.map_err(|e| wasi_error(self.refused("wasi:keyvalue", what, e)))
    }
}

impl key_value::Host for ComponentState {}

impl key_value::HostStore for ComponentState {
    async fn open(&mut self, label: String) -> Answer<Resource<Label>, key_value::Error> {
        match self.spin_kv("open", self.granted(&label).map(drop)) {
            Ok(()) => Ok(Ok(self.table.push(Label(label))?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn get(
        &mut self,
        s: Resource<Label>,
        key: String,
    ) -> Answer<Option<Vec<u8>>, key_value::Error> {
        let store = self.label(&s)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_get(&store, &key).await }.await;
        Ok(self.spin_kv("get", result))
    }

    async fn set(
        &mut self,
        s: Resource<Label>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<(), key_value::Error> {
        let store = self.label(&s)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_set(&store, vec![(key, value)]).await }.await;
        Ok(self.spin_kv("set", result))
    }

    async fn delete(&mut self, s: Resource<Label>, key: String) -> Answer<(), key_value::Error> {
        let store = self.label(&s)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_delete(&store, vec![key]).await }.await;
        Ok(self.spin_kv("delete", result))
    }

    async fn exists(&mut self, s: Resource<Label>, key: String) -> Answer<bool, key_value::Error> {
        let store = self.label(&s)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_exists(&store, &key).await }.await;
        Ok(self.spin_kv("exists", result))
    }

    async fn get_keys(&mut self, s: Resource<Label>) -> Answer<Vec<String>, key_value::Error> {
        let store = self.label(&s)?;
        let result = all_keys(self.granted(&store), &store).await;
        Ok(self.spin_kv("get-keys", result))
    }

    async fn drop(&mut self, s: Resource<Label>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        Ok(())
    }
}

impl store::Host for ComponentState {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Label>, store::Error> {
        match self.wasi_kv("open", self.granted(&identifier).map(drop)) {
            Ok(()) => Ok(Ok(self.table.push(Label(identifier))?)),
            Err(e) => Ok(Err(e)),
        }
    }
}

impl store::HostBucket for ComponentState {
    async fn get(
        &mut self,
        b: Resource<Label>,
        key: String,
    ) -> Answer<Option<Vec<u8>>, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_get(&store, &key).await }.await;
        Ok(self.wasi_kv("get", result))
    }

    async fn set(
        &mut self,
        b: Resource<Label>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<(), store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_set(&store, vec![(key, value)]).await }.await;
        Ok(self.wasi_kv("set", result))
    }

    async fn delete(&mut self, b: Resource<Label>, key: String) -> Answer<(), store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_delete(&store, vec![key]).await }.await;
        Ok(self.wasi_kv("delete", result))
    }

    async fn exists(&mut self, b: Resource<Label>, key: String) -> Answer<bool, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_exists(&store, &key).await }.await;
        Ok(self.wasi_kv("exists", result))
    }

    async fn list_keys(
        &mut self,
        b: Resource<Label>,
        cursor: Option<String>,
    ) -> Answer<store::KeyResponse, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_keys(&store, cursor).await }.await;
        Ok(self
            .wasi_kv("list-keys", result)
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor }))
    }

    async fn drop(&mut self, b: Resource<Label>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for ComponentState {
    async fn increment(
        &mut self,
        b: Resource<Label>,
        key: String,
        delta: i64,
    ) -> Answer<i64, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_increment(&store, &key, delta).await }.await;
        Ok(self.wasi_kv("increment", result))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Answer<(), atomics::CasError> {
        let Cas { store, key, seen } = self.table.get(&cas)?;
        let (store, key, seen) = (store.clone(), key.clone(), seen.clone());
        let platform = self.granted(&store);
        let result = async { platform?.kv_swap(&store, &key, seen, value).await }.await;
        match self.wasi_kv("swap", result) {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            // The handle goes back to the guest, to read the value that won and try again.
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(e) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(e)))
            }
        }
    }
}

impl atomics::HostCas for ComponentState {
    async fn new(
        &mut self,
        b: Resource<Label>,
        key: String,
    ) -> Answer<Resource<Cas>, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_get(&store, &key).await }.await;
        match self.wasi_kv("cas", result) {
            Ok(seen) => Ok(Ok(self.table.push(Cas { store, key, seen })?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>, store::Error> {
        let Cas { store, key, .. } = self.table.get(&cas)?;
        let (store, key) = (store.clone(), key.clone());
        let platform = self.granted(&store);
        let result = async { platform?.kv_get(&store, &key).await }.await;
        let current = self.wasi_kv("cas current", result);
        // Reading the current value re-arms the handle, so a retried swap compares against it.
        if let Ok(value) = &current {
            self.table.get_mut(&cas)?.seen = value.clone();
        }
        Ok(current)
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for ComponentState {
    async fn get_many(
        &mut self,
        b: Resource<Label>,
        keys: Vec<String>,
    ) -> Answer<Vec<(String, Option<Vec<u8>>)>, store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async {
            let platform = platform?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let value = platform.kv_get(&store, &key).await?;
                values.push((key, value));
            }
            Ok(values)
        }
        .await;
        Ok(self.wasi_kv("get-many", result))
    }

    async fn set_many(
        &mut self,
        b: Resource<Label>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<(), store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_set(&store, key_values).await }.await;
        Ok(self.wasi_kv("set-many", result))
    }

    async fn delete_many(
        &mut self,
        b: Resource<Label>,
        keys: Vec<String>,
    ) -> Answer<(), store::Error> {
        let store = self.label(&b)?;
        let platform = self.granted(&store);
        let result = async { platform?.kv_delete(&store, keys).await }.await;
        Ok(self.wasi_kv("delete-many", result))
    }
}

/// Whether `name` is a Spin variable name: lowercase letters, digits and `_`, starting with a letter.
fn spin_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl variables::Host for ComponentState {
    async fn get(&mut self, name: String) -> Answer<String, variables::Error> {
        if !spin_variable_name(&name) {
            let e = variables::Error::InvalidName(format!(
                "`{name}` is not a variable name: use lowercase letters, digits and `_`, starting with a letter"
            ));
            return Ok(Err(e));
        }
        Ok(match self.variables.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(variables::Error::Undefined(format!(
                "no variable `{name}` is set for this function"
            ))),
        })
    }
}

impl config::Host for ComponentState {
    async fn get(&mut self, key: String) -> Answer<Option<String>, config::Error> {
        Ok(Ok(self.variables.get(&key).cloned()))
    }

    async fn get_all(&mut self) -> Answer<Vec<(String, String)>, config::Error> {
        Ok(Ok(self
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()))
    }
}
