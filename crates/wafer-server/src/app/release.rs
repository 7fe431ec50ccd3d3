//! Releases: which version a call runs, and the aliases that say so.
//!
//! Every function has the alias `live`, which every unqualified call uses: a deploy moves it to the
//! new version (unless it is deployed as a candidate), a rollback moves it back, and a weight on it is a
//! canary on all traffic. Other aliases name a version, or split calls between two. A call may name its
//! target — `/fn/{name}:{alias}`, `/fn/{name}:{version}`, `?qualifier=` — and each call draws its own
//! version from the alias's weights. A version other than the live one is loaded on the first call
//! that reaches it and kept with the function's release until anything about the function changes.

use super::App;
use crate::error::Error;
use crate::registry::{Entry, Release};
use crate::validate;
use std::sync::Arc;
use wafer_api::{Alias, LIVE};
use wafer_store::StoredFunction;

/// What a call names: a function, and optionally the alias or version of it to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The function.
    pub name: &'a str,
    /// An alias or a version number; `None` is `live`.
    pub qualifier: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// `name` or `name:qualifier`, as `/fn/` paths and the CLI write it.
    pub fn parse(target: &'a str) -> Self {
        match target.split_once(':') {
            Some((name, qualifier)) => Self {
                name,
                qualifier: Some(qualifier),
            },
            None => Self {
                name: target,
                qualifier: None,
            },
        }
    }
}

impl App {
    /// The version a call of `live`'s function with `qualifier` runs: drawn from the alias's weights
    /// (`live` when there is no qualifier), or the version the qualifier numbers.
    pub async fn version_for(
        &self,
        live: Arc<Entry>,
        qualifier: Option<&str>,
    ) -> Result<Arc<Entry>, Error> {
        let name = &live.settings.name;
        let Some(release) = self.registry.release(name) else {
            return Ok(live);
        };
        if qualifier.is_none() && release.live_is_whole() {
            return Ok(live);
        }
        let version = match qualifier {
            Some(number) if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                let version = number
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| unknown_version(name, number))?;
                // A version newer than this node has heard of may have been deployed on another
                // node: the change feed says so first.
                if version > release.latest {
                    self.catch_up().await;
                    let heard = self.registry.release(name).map_or(0, |r| r.latest);
                    if version > heard {
                        return Err(unknown_version(name, number));
                    }
                    return Box::pin(self.version_for(live, qualifier)).await;
                }
                version
            }
            qualifier => {
                let alias = qualifier.unwrap_or(LIVE);
                let alias = release.aliases.get(alias).ok_or_else(|| {
                    Error::NotFound(format!("function `{name}` has no alias `{alias}`"))
                })?;
                alias.pick(fastrand::f64())
            }
        };
        if version == live.version {
            return Ok(live);
        }
        if let Some(entry) = release.version(version) {
            return Ok(entry);
        }
        self.load_version(&live, &release, version).await
    }

    /// Version `version` of `live`'s function, read from the store and kept in its release.
    async fn load_version(
        &self,
        live: &Entry,
        release: &Release,
        version: u32,
    ) -> Result<Arc<Entry>, Error> {
        let name = &live.settings.name;
        let stored = self
            .meta
            .list_versions(name)
            .await?
            .into_iter()
            .find(|v| v.version == version)
            .ok_or_else(|| unknown_version(name, &version.to_string()))?;
        // Only the live version has a schedule: the instant it counts from does not matter here.
        let entry = self.entry(&stored, "", None, live.variables.clone(), None);
        Ok(release.keep(entry))
    }

    /// Points alias `alias` of `name` at `target`. Moving `live` is a rollback (or a roll forward):
    /// its version is loaded before it is made live, so the first call finds it ready.
    pub async fn set_alias(
        &self,
        name: &str,
        alias: &str,
        target: Alias,
    ) -> Result<StoredFunction, Error> {
        validate::name(name)?;
        validate::alias(alias)?;
        target.check().map_err(Error::InvalidRequest)?;
        let _changes = self.changes.lock().await;
        let current = self
            .meta
            .get_function(name)
            .await?
            .ok_or_else(|| Error::unknown_function(name))?;
        let variables = self.state.variables(name).await?;
        let moves_live = alias == LIVE && target.version != current.live.version;
        let prepared = if moves_live {
            let stored = self
                .meta
                .list_versions(name)
                .await?
                .into_iter()
                .find(|v| v.version == target.version)
                .ok_or_else(|| unknown_version(name, &target.version.to_string()))?;
            let settings = self.version_settings(&stored, variables.clone());
            self.prepare(
                &stored.digest,
                stored.files.as_deref(),
                stored.kind,
                &stored.config,
                &settings,
            )
            .await?
        } else {
            self.registry
                .get(name)
                .and_then(|entry| entry.container.get().cloned())
        };
        let proxy_id = match moves_live {
            true => None,
            false => self.registry.known_proxy_id(name),
        };
        let function = self.meta.set_alias(name, alias, target).await?;
        self.install_with(&function, prepared, variables, proxy_id);
        tracing::info!(
            function = name,
            alias,
            version = function.live.version,
            "alias set"
        );
        Ok(function)
    }

    /// Removes alias `alias` of `name`; `live` cannot be removed.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<StoredFunction, Error> {
        validate::name(name)?;
        validate::alias(alias)?;
        if alias == LIVE {
            return Err(Error::InvalidRequest(
                "the alias `live` cannot be removed: every unqualified call uses it".into(),
            ));
        }
        let _changes = self.changes.lock().await;
        let variables = self.state.variables(name).await?;
        let (prepared, proxy_id) = match self.registry.get(name) {
            Some(entry) => (
                entry.container.get().cloned(),
                entry.proxy_id.get().cloned(),
            ),
            None => (None, None),
        };
        let function = match self.meta.delete_alias(name, alias).await {
            Err(wafer_store::StoreError::NotFound(_))
                if self.meta.get_function(name).await?.is_none() =>
            {
                return Err(Error::unknown_function(name))
            }
            other => other?,
        };
        self.install_with(&function, prepared, variables, proxy_id);
        tracing::info!(function = name, alias, "alias removed");
        Ok(function)
    }

    /// Makes an earlier (or later) stored version of `name` live again, without weights.
    pub async fn rollback(&self, name: &str, version: u32) -> Result<StoredFunction, Error> {
        self.set_alias(name, LIVE, Alias::to(version)).await
    }
}

/// The error of a qualifier that names no version of `name`.
fn unknown_version(name: &str, version: &str) -> Error {
    Error::NotFound(format!("function `{name}` has no version {version}"))
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn a_target_may_name_an_alias_or_a_version() {
        assert_eq!(
            Target::parse("hello"),
            Target {
                name: "hello",
                qualifier: None
            }
        );
        assert_eq!(
            Target::parse("hello:beta"),
            Target {
                name: "hello",
                qualifier: Some("beta")
            }
        );
        assert_eq!(Target::parse("hello:3").qualifier, Some("3"));
    }
}
