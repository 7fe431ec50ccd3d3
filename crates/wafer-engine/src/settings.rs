//! What every invocation of a function gets besides its input ([`Settings`]), and the one rule that
//! derives it from the function's deploy config: [`FunctionDefaults::settings`].
//!
//! `wafer serve` and the containerd shim both run functions from a [`FunctionConfig`]; they differ only in
//! the defaults they pass (the server's flags, or a container's) and in the environment a function starts
//! from (its configuration variables, or the container's environment). Everything else — which limit a
//! config sets and what an unset one becomes, how fuel is metered, the outbound allowlist and its limits,
//! instance reuse and grants — is decided here, once.

use crate::host::outbound::{OutboundLimits, OutboundPolicy};
use crate::host::platform::{Grants, PlatformHandle, Variables};
use crate::limits::Limits;
use std::time::Duration;
use wafer_api::{EffectiveLimits, FunctionConfig};

/// Outbound requests a function may have in flight unless it sets `max_outbound`.
pub const DEFAULT_MAX_OUTBOUND: u32 = 16;

/// The outbound timeout unless a function sets `outbound_timeout_ms`.
pub const DEFAULT_OUTBOUND_TIMEOUT_MS: u64 = 30_000;

/// The most a guest may write to stderr in one invocation; what follows is dropped.
const STDERR_BYTES: usize = 1024 * 1024;

/// What one invocation gets besides its input: the function's name (argv[0]), its environment, limits,
/// grants and configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The function's name, passed as argv[0].
    pub name: String,
    /// Environment variables, as configured; nothing of the host's.
    pub env: Vec<(String, String)>,
    /// Memory, time and output limits.
    pub limits: Limits,
    /// The hosts outbound HTTP may reach, and how much of it may be in flight.
    pub outbound: OutboundPolicy,
    /// How many requests one instance of an `http` function may serve, one after another; 0 or 1 gives
    /// every request a fresh instance.
    pub reuse: u32,
    /// The stores and functions it may use.
    pub grants: Grants,
    /// Its configuration variables and secrets, as `wasi:config/store` shows them.
    pub variables: Variables,
    /// The server's services behind the grants (none inside a container).
    pub platform: PlatformHandle,
    /// The directory of its read-only files, which its instances see as `/`; none unless it was
    /// deployed with files.
    pub files: Option<std::path::PathBuf>,
}

/// The limits a function gets for what its config leaves unset: the server's flags (`wafer serve
/// --memory`, …) or, inside a container, the shim's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionDefaults {
    /// Memory cap of an invocation, in MiB.
    pub memory_mb: u64,
    /// Timeout of an invocation, in milliseconds.
    pub timeout_ms: u64,
    /// The largest request body a function is handed.
    pub max_request_bytes: u64,
    /// The largest answer a function may give.
    pub max_response_bytes: u64,
    /// Whether the engine meters fuel. Then a function's `fuel` bounds it, and one that sets none runs
    /// unbounded; without metering there is no fuel at all.
    pub fuel: bool,
}

impl Default for FunctionDefaults {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            timeout_ms: 30_000,
            max_request_bytes: 16 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            fuel: false,
        }
    }
}

impl FunctionDefaults {
    /// The limits of a function as the API shows them: its own settings where it has them, these
    /// defaults for the rest.
    pub fn effective(&self, config: &FunctionConfig) -> EffectiveLimits {
        EffectiveLimits {
            memory_mb: config.memory_mb.unwrap_or(self.memory_mb),
            timeout_ms: config.timeout_ms.unwrap_or(self.timeout_ms),
            max_request_bytes: config.max_request_bytes.unwrap_or(self.max_request_bytes),
            max_response_bytes: config.max_response_bytes.unwrap_or(self.max_response_bytes),
            max_concurrency: config.max_concurrency,
        }
    }

    /// The engine's limits for one invocation of a function.
    pub fn limits(&self, config: &FunctionConfig) -> Limits {
        let effective = self.effective(config);
        Limits {
            memory_bytes: effective.memory_mb.saturating_mul(1024 * 1024),
            timeout: Duration::from_millis(effective.timeout_ms),
            response_bytes: usize::try_from(effective.max_response_bytes).unwrap_or(usize::MAX),
            stderr_bytes: STDERR_BYTES,
            fuel: self.fuel.then(|| config.fuel.unwrap_or(u64::MAX)),
        }
    }

    /// The settings every invocation of function `name` gets: `base_env` (what it starts from) under the
    /// config's own `env`, these defaults under the config's limits, its outbound allowlist with its
    /// limits, its reuse and its grants. Fails when the allowlist does not parse.
    ///
    /// Its variables and the platform are the caller's to add: only a server has them.
    pub fn settings(
        &self,
        name: &str,
        config: &FunctionConfig,
        base_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, String> {
        let mut env: Vec<(String, String)> = base_env
            .into_iter()
            .filter(|(k, _)| !config.env.contains_key(k))
            .collect();
        env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let outbound_limits = OutboundLimits::new(
            Duration::from_millis(
                config
                    .outbound_timeout_ms
                    .unwrap_or(DEFAULT_OUTBOUND_TIMEOUT_MS),
            ),
            config.max_outbound.unwrap_or(DEFAULT_MAX_OUTBOUND),
        );
        Ok(Settings {
            name: name.to_string(),
            env,
            limits: self.limits(config),
            outbound: OutboundPolicy::parse(&config.allowed_outbound_hosts)?
                .with_limits(outbound_limits),
            reuse: config.reuse.unwrap_or(1),
            grants: Grants {
                kv_stores: config.key_value_stores.clone().into(),
                functions: config.allowed_functions.clone().into(),
                sqlite_databases: config.sqlite_databases.clone().into(),
            },
            variables: Variables::default(),
            platform: PlatformHandle::default(),
            files: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(json: &str) -> FunctionConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_config_sets_what_it_names_and_the_defaults_fill_the_rest() {
        let defaults = FunctionDefaults {
            memory_mb: 64,
            ..FunctionDefaults::default()
        };
        let limits = defaults.limits(&config(r#"{"timeout_ms": 500, "max_response_bytes": 10}"#));
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(limits.timeout, Duration::from_millis(500));
        assert_eq!(limits.response_bytes, 10);
        assert_eq!(limits.stderr_bytes, STDERR_BYTES);
        let effective = defaults.effective(&config(r#"{"max_concurrency": 3}"#));
        assert_eq!(
            (effective.memory_mb, effective.max_concurrency),
            (64, Some(3))
        );
        assert_eq!(
            Limits::default(),
            FunctionDefaults::default().limits(&FunctionConfig::default())
        );
    }

    #[test]
    fn fuel_is_metered_only_when_the_engine_meters_it() {
        let metered = FunctionDefaults {
            fuel: true,
            ..FunctionDefaults::default()
        };
        assert_eq!(metered.limits(&config(r#"{"fuel": 7}"#)).fuel, Some(7));
        assert_eq!(metered.limits(&config("{}")).fuel, Some(u64::MAX));
        let unmetered = FunctionDefaults::default();
        assert_eq!(unmetered.limits(&config(r#"{"fuel": 7}"#)).fuel, None);
    }

    #[test]
    fn the_config_env_wins_over_the_base_and_grants_come_from_the_config() {
        let config = FunctionConfig {
            env: BTreeMap::from([("A".into(), "config".into())]),
            key_value_stores: vec!["books".into()],
            reuse: Some(4),
            ..FunctionConfig::default()
        };
        let base = [("A", "base"), ("B", "base")].map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = FunctionDefaults::default()
            .settings("f", &config, base)
            .unwrap();
        assert_eq!(
            settings.env,
            [
                ("B".to_string(), "base".to_string()),
                ("A".to_string(), "config".to_string())
            ]
        );
        assert_eq!((settings.name.as_str(), settings.reuse), ("f", 4));
        assert_eq!(&*settings.grants.kv_stores, ["books".to_string()]);
        let bad = FunctionConfig {
            allowed_outbound_hosts: vec!["ftp://x".into()],
            ..FunctionConfig::default()
        };
        assert!(FunctionDefaults::default().settings("f", &bad, []).is_err());
    }
}
