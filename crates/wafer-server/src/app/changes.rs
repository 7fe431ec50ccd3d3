//! The operations that change what is deployed: deploy, rollback, delete, and a function's
//! configuration.
//!
//! Each change is persisted first (module bytes durable, the database committed) and only then made live
//! in the registry. Changes are serialised by one lock so the registry always matches the database;
//! compiling, the slow part of a deploy, happens before the lock is taken.

use super::live::Kept;
use super::App;
use crate::containers::{self, ContainerFunction};
use crate::error::Error;
use crate::validate;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use wafer_api::oci::sha256_hex;
use wafer_api::{FunctionConfig, Kind};
use wafer_engine::Function;
use wafer_store::{FunctionVariables, NewVersion, StoredFunction};

/// A version checked and compiled, not yet stored.
struct Prepared {
    new: NewVersion,
    module: Bytes,
    /// A wasm version's code and its size, for the code cache once the version is stored.
    code: Option<(Function, u64)>,
    /// A container version's function.
    container: Option<Arc<ContainerFunction>>,
    /// What its compile left, to keep once the version is stored.
    kept: Kept,
    proxy_id: Option<Option<String>>,
    /// The function's variables once this deploy's are merged in.
    current: FunctionVariables,
}

/// What a deploy brings for one function: its module (or image), its read-only files, its config and
/// the variables merged into its configuration.
pub struct Upload {
    /// The function's name.
    pub name: String,
    /// Its wasm module, or a container's image tarball (empty when its config names an image).
    pub module: Bytes,
    /// A tar of read-only files its instances see as `/` ([`wafer_store::files`]).
    pub files: Option<Bytes>,
    /// The configuration the version is deployed with.
    pub config: FunctionConfig,
    /// Variables and secrets merged into the function's, in the version's transaction.
    pub variables: FunctionVariables,
}

impl App {
    /// Validates, compiles and stores a new version of `name`, and makes it live — unless `promote`
    /// is false and the function has a live version already, which stays live: the new one is a
    /// candidate for an alias or a weight. Its variables are merged in the same transaction.
    ///
    /// Nothing is stored unless the module compiles and fits its kind. Bytes deployed before (under any
    /// name) are not compiled again. Returns the function and the new version's number.
    pub async fn deploy(
        &self,
        upload: Upload,
        promote: bool,
    ) -> Result<(StoredFunction, u32), Error> {
        let prepared = self.check_version(upload).await?;
        self.commit(vec![prepared], promote)
            .await?
            .pop()
            .ok_or_else(|| Error::Internal("a deploy stored nothing".into()))
    }

    /// Deploys several functions as one: each is checked and compiled first, then all are stored in
    /// one transaction and made live, or none is (a taken route, a name given twice, a module that
    /// does not compile refuses them all).
    pub async fn deploy_app(
        &self,
        functions: Vec<Upload>,
    ) -> Result<Vec<(StoredFunction, u32)>, Error> {
        let mut names = std::collections::BTreeSet::new();
        if let Some(twice) = functions.iter().find(|f| !names.insert(f.name.as_str())) {
            return Err(Error::InvalidConfig(format!(
                "function `{}` is named twice in the application",
                twice.name
            )));
        }
        let mut prepared = Vec::with_capacity(functions.len());
        for f in functions {
            let name = f.name.clone();
            let version = self.check_version(f).await.map_err(|e| e.within(&name))?;
            prepared.push(version);
        }
        self.commit(prepared, true).await
    }

    /// Checks and compiles a version of `upload.name`, and unpacks its files.
    async fn check_version(&self, upload: Upload) -> Result<Prepared, Error> {
        let Upload {
            name,
            module,
            files,
            config,
            variables,
        } = upload;
        let name = name.as_str();
        validate::name(name)?;
        let mut config = validate::config(config, self.config.defaults.function.fuel)?;
        validate::variables(&variables)?;
        self.check_destinations(&config).await?;
        let mut current = self.state.variables(name).await?;
        current.variables.extend(variables.variables.clone());
        current.secrets.extend(variables.secrets.clone());
        let container = config.kind == Some(Kind::Container)
            || (config.kind.is_none() && containers::is_tarball(&module));
        let files = match files {
            Some(_) if container => {
                return Err(Error::InvalidRequest(
                    "files are for wasm functions: a container brings its own in its image".into(),
                ))
            }
            Some(bundle) => Some(self.check_files(bundle).await?),
            None => None,
        };
        let (code, container, kept, proxy_id, module, digest) = if container {
            config.kind = Some(Kind::Container);
            validate::fits(&config, Kind::Container)?;
            let module = self.image_tarball(module, &config).await?;
            let settings = self.settings(name, Kind::Container, &config, current.clone());
            let function =
                ContainerFunction::load(&self.containers, module.clone(), &config, &settings)
                    .await?;
            config.image = Some(containers::resolved(
                config.image.as_deref(),
                function.digest(),
            )?);
            // An image may be a gigabyte: hashing it is CPU work, off the async threads.
            let bytes = module.clone();
            let digest = tokio::task::spawn_blocking(move || sha256_hex(&bytes))
                .await
                .map_err(|e| Error::Internal(format!("hashing the image failed: {e}")))?;
            (None, Some(function), Kept::Nothing, None, module, digest)
        } else {
            let digest = sha256_hex(&module);
            let (function, bytes, kept) = self
                .load_or_compile(&digest, Some(module.clone()), config.kind)
                .await?;
            validate::fits(&config, function.kind())?;
            let proxy_id = function
                .proxy_id(&self.settings(name, function.kind(), &config, current.clone()))
                .await
                .map_err(|e| {
                    Error::UnsupportedModule(format!("the module's proxy_get_id failed: {e}"))
                })?;
            if let Some((id, owner)) = proxy_id
                .as_deref()
                .and_then(|id| Some((id, self.registry.id_owner(id, name)?)))
            {
                return Err(Error::IdTaken(format!(
                    "proxy-wasm id `{id}` is already used by function `{owner}`"
                )));
            }
            (
                Some((function, bytes)),
                None,
                kept,
                Some(proxy_id),
                module,
                digest,
            )
        };
        let new = NewVersion {
            name: name.to_string(),
            kind: code
                .as_ref()
                .map_or(Kind::Container, |(function, _)| function.kind()),
            config,
            digest,
            size: module.len() as u64,
            variables,
            files,
        };
        Ok(Prepared {
            new,
            module,
            code,
            container,
            kept,
            proxy_id,
            current,
        })
    }

    /// Stores prepared versions in one transaction and makes them live (or candidates, when not
    /// `promote` and a live version exists).
    async fn commit(
        &self,
        prepared: Vec<Prepared>,
        promote: bool,
    ) -> Result<Vec<(StoredFunction, u32)>, Error> {
        let _changes = self.changes.lock().await;
        let versions = prepared
            .iter()
            .map(|p| (p.new.clone(), p.module.clone()))
            .collect();
        let stored = self.meta.insert_versions(versions, promote).await?;
        let mut deployed = Vec::with_capacity(stored.len());
        for (p, stored) in prepared.into_iter().zip(stored) {
            let (name, kind, digest) = (p.new.name.as_str(), p.new.kind, &p.new.digest);
            // The artifact is this node's cache: without it the next load compiles again.
            if let Err(e) = self.keep(digest, kind, p.kept).await {
                tracing::warn!(%digest, "cannot keep the compiled artifact: {e}");
            }
            if let Some((code, bytes)) = p.code {
                self.code.insert(digest, code, bytes);
            }
            let version = stored.latest_version;
            if stored.live.version == version {
                self.install_with(&stored, p.container, p.current, p.proxy_id);
            } else {
                // A candidate: the live version and everything else about the function stay; its new
                // configuration variables reach the live version too (a container's settings are in
                // its template: it is made again with them).
                let proxy_id = self.registry.known_proxy_id(name);
                self.install_with(&stored, None, p.current, proxy_id);
            }
            tracing::info!(
                function = name,
                version,
                live = stored.live.version,
                %kind,
                "deployed"
            );
            deployed.push((stored, version));
        }
        Ok(deployed)
    }

    /// Replaces the configuration variables of `name` and sets or removes the named secrets; the next
    /// call sees them. Returns the new configuration.
    pub async fn set_variables(
        &self,
        name: &str,
        variables: BTreeMap<String, String>,
        secrets: BTreeMap<String, Option<String>>,
    ) -> Result<FunctionVariables, Error> {
        validate::name(name)?;
        validate::variables(&FunctionVariables {
            variables: variables.clone(),
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect(),
        })?;
        let _changes = self.changes.lock().await;
        let function = self
            .meta
            .get_function(name)
            .await?
            .ok_or_else(|| Error::unknown_function(name))?;
        self.state.set_variables(name, variables, secrets).await?;
        let current = self.state.variables(name).await?;
        // A container's settings are in its template: it is made again with the new ones.
        let proxy_id = self.registry.known_proxy_id(name);
        self.install_with(&function, None, current.clone(), proxy_id);
        tracing::info!(function = name, "configuration changed");
        Ok(current)
    }

    /// Deletes `name` with every version, the modules no other function uses, and their compiled
    /// artifacts.
    pub async fn delete(&self, name: &str) -> Result<(), Error> {
        validate::name(name)?;
        let _changes = self.changes.lock().await;
        let images = containers::images(&self.meta.list_versions(name).await?);
        let orphaned = self.meta.delete_function(name).await?;
        let _ = self.registry.remove(name);
        self.release_images(images).await;
        if let Err(e) = self.state.forget_variables(name).await {
            tracing::warn!(
                function = name,
                "cannot forget the configuration of a deleted function: {e}"
            );
        }
        for digest in orphaned {
            self.code.remove(&digest);
            if let Err(e) = self.artifacts.remove(&digest) {
                tracing::warn!(%digest, "cannot remove the artifacts of a deleted function: {e}");
            }
            if let Err(e) = self.files.remove(&digest) {
                tracing::warn!(%digest, "cannot remove the files of a deleted function: {e}");
            }
        }
        tracing::info!(function = name, "deleted");
        Ok(())
    }
}

impl App {
    /// A deploy's files bundle, checked (a tar of regular files and directories under relative paths)
    /// and unpacked on this node, so the version answers from its first call.
    async fn check_files(&self, bundle: Bytes) -> Result<wafer_store::FilesBundle, Error> {
        let checked = bundle.clone();
        let digest = tokio::task::spawn_blocking(move || {
            wafer_store::files::check(&checked).map(|_| sha256_hex(&checked))
        })
        .await
        .map_err(|e| Error::Internal(format!("checking the files failed: {e}")))?
        .map_err(Error::InvalidRequest)?;
        self.unpack_files(&digest, bundle.clone()).await?;
        Ok(wafer_store::FilesBundle {
            digest,
            bytes: bundle,
        })
    }

    /// Refuses a destination URL whose host neither the server's callback hosts nor the function's
    /// own `allowed_outbound_hosts` allow.
    async fn check_destinations(&self, config: &FunctionConfig) -> Result<(), Error> {
        let outbound = wafer_engine::OutboundPolicy::parse(&config.allowed_outbound_hosts)
            .map_err(Error::InvalidConfig)?;
        for (field, destination) in [
            ("on_success", &config.on_success),
            ("on_failure", &config.on_failure),
        ] {
            if let Some(wafer_api::Destination::Url(url)) = destination {
                crate::queue::check_url(self, &outbound, url, field)
                    .await
                    .map_err(Error::InvalidConfig)?;
            }
        }
        Ok(())
    }

    /// A container deploy's image tarball: the one uploaded, or the image its `oci://` reference names,
    /// pulled.
    async fn image_tarball(&self, module: Bytes, config: &FunctionConfig) -> Result<Bytes, Error> {
        if !module.is_empty() {
            return Ok(module);
        }
        match config.image.as_deref() {
            Some(reference) => self.containers.pull(reference).await,
            None => Err(Error::InvalidRequest(
                "a container function needs an image: upload a tarball (the `image` part) or give \
                 an oci:// reference in the config's `image`"
                    .into(),
            )),
        }
    }

    /// Releases the images of `digests` that no stored version uses any more.
    async fn release_images(&self, digests: Vec<String>) {
        if digests.is_empty() {
            return;
        }
        let mut in_use = Vec::new();
        match self.meta.list_functions().await {
            Ok(functions) => {
                for function in functions {
                    match self.meta.list_versions(&function.live.name).await {
                        Ok(versions) => in_use.extend(containers::images(&versions)),
                        Err(e) => {
                            tracing::warn!("images kept: cannot list versions: {e}");
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("images kept: cannot list functions: {e}");
                return;
            }
        }
        for digest in digests {
            if !in_use.contains(&digest) {
                self.containers.release(&digest).await;
            }
        }
    }
}
