//! A container's function: how a container's image, environment and limits become what wafer runs,
//! the same whether the shim runs it in the container's own process or hands it to the node agent.
//!
//! - The function's wafer config is the image's `/wafer.json` ([`wafer_api::oci::CONFIG_PATH`], written by
//!   `wafer package`); an image without one runs as runwasi's shims run it: a WASI module is a command.
//! - Limits follow the engine's one rule ([`FunctionDefaults::settings`], as `wafer serve` applies it),
//!   with a day's timeout for a command (a job) and fuel metered only when the config bounds it.
//! - The container's memory limit caps every instance's wasm memory, so a guest that grows past it traps
//!   instead of being killed by the kernel. A function in its own process leaves room in that limit for
//!   the engine ([`ENGINE_HEADROOM`]); in the agent the engine is the node's, so it needs none.
//! - An http function listens on `WAFER_LISTEN` from the container's environment ([`DEFAULT_LISTEN`]
//!   unless it says otherwise).

use std::net::SocketAddr;
use wafer_api::{FunctionConfig, Kind};
use wafer_engine::{FunctionDefaults, InvokeError, Settings};

/// The address an HTTP function listens on unless the container sets `WAFER_LISTEN`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:80";

/// Memory a function running in its container's own process leaves to the engine out of the
/// container's limit (compiled code, buffers).
pub const ENGINE_HEADROOM: u64 = 48 << 20;

/// How long a `command` may run when its config sets no timeout (a day, in ms): jobs are expected to
/// take a while.
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// The largest `/wafer.json` read from an image.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A function's wafer config from the bytes of an image's `/wafer.json`.
pub fn parse_config(bytes: &[u8]) -> Result<FunctionConfig, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "/{} is not a valid wafer function config: {e}",
            wafer_api::oci::CONFIG_PATH
        )
    })
}

/// The kind to run `wasm` as: the packaged config's, or for an image without one, a command when it is
/// a core module (as runwasi's shims run WASI modules), and what the component exports otherwise.
pub fn kind_of(packaged: Option<&FunctionConfig>, wasm: &[u8]) -> Option<Kind> {
    match packaged {
        Some(config) => config.kind,
        None => (!wafer_engine::is_component(wasm)).then_some(Kind::Command),
    }
}

/// The container's `KEY=VALUE` environment as pairs; entries without `=` are ignored.
pub fn container_env(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the engine meters fuel for this function: only when its config bounds it, since metering
/// slows every guest.
pub fn meters_fuel(config: &FunctionConfig) -> bool {
    config.fuel.is_some()
}

/// What a container's function gets for what its config leaves unset: the server's defaults, but a
/// day's timeout for a `command` (a job), and fuel only when the config sets it.
pub fn defaults(kind: Kind, config: &FunctionConfig) -> FunctionDefaults {
    let standard = FunctionDefaults::default();
    FunctionDefaults {
        timeout_ms: match kind {
            Kind::Command => DEFAULT_JOB_TIMEOUT_MS,
            _ => standard.timeout_ms,
        },
        fuel: meters_fuel(config),
        ..standard
    }
}

/// What each invocation gets: the engine's rule over the container's environment, under `defaults`,
/// with the memory cap kept within the container's memory less `headroom` (never below half of it).
pub fn settings(
    name: &str,
    defaults: &FunctionDefaults,
    config: &FunctionConfig,
    container_env: &[(String, String)],
    container_memory: Option<u64>,
    headroom: u64,
) -> Result<Settings, String> {
    let mut settings = defaults
        .settings(name, config, container_env.iter().cloned())
        .map_err(|e| format!("allowed_outbound_hosts: {e}"))?;
    if let Some(limit) = container_memory {
        let room = limit.saturating_sub(headroom).max(limit / 2);
        settings.limits.memory_bytes = settings.limits.memory_bytes.min(room);
    }
    Ok(settings)
}

/// Where an http function listens: `WAFER_LISTEN` from the container's environment, or
/// [`DEFAULT_LISTEN`].
pub fn listen_address(container_env: &[(String, String)]) -> Result<SocketAddr, String> {
    let listen = container_env
        .iter()
        .find(|(k, _)| k == "WAFER_LISTEN")
        .map_or(DEFAULT_LISTEN, |(_, v)| v.as_str());
    listen
        .parse()
        .map_err(|_| format!("WAFER_LISTEN `{listen}` is not an address:port"))
}

/// Whether a function of `kind` serves HTTP (rather than running once).
pub fn serves_http(kind: Kind) -> bool {
    matches!(kind, Kind::Http | Kind::Wagi | Kind::ProxyWasm)
}

/// The task's exit code for a failed run: 137 for memory (as for a container the kernel killed), 124
/// for a timeout (as `timeout(1)`), 1 otherwise.
pub fn exit_code(error: &InvokeError) -> i32 {
    match error {
        InvokeError::MemoryLimit(_) => 137,
        InvokeError::Timeout(_) => 124,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_config_env_wins_and_memory_fits_the_container() {
        let config: FunctionConfig =
            serde_json::from_str(r#"{"env": {"A": "config"}, "memory_mb": 512}"#).unwrap();
        let env = container_env(&["A=container".into(), "B=container".into(), "bad".into()]);
        let settings = |kind, memory, headroom| {
            settings(
                "f",
                &defaults(kind, &config),
                &config,
                &env,
                memory,
                headroom,
            )
            .unwrap()
        };
        let job = settings(Kind::Command, Some(256 << 20), ENGINE_HEADROOM);
        assert_eq!(
            job.env,
            [
                ("B".to_string(), "container".to_string()),
                ("A".to_string(), "config".to_string())
            ]
        );
        assert_eq!(job.limits.memory_bytes, (256 - 48) << 20);
        assert_eq!(
            job.limits.timeout,
            Duration::from_millis(DEFAULT_JOB_TIMEOUT_MS)
        );
        assert_eq!(job.limits.fuel, None);
        let small = settings(Kind::Http, Some(64 << 20), ENGINE_HEADROOM);
        assert_eq!(small.limits.memory_bytes, 32 << 20);
        assert_eq!(
            small.limits.timeout,
            wafer_engine::Limits::default().timeout
        );
        let in_the_agent = settings(Kind::Http, Some(64 << 20), 0);
        assert_eq!(in_the_agent.limits.memory_bytes, 64 << 20);
        let unlimited = settings(Kind::Http, None, ENGINE_HEADROOM);
        assert_eq!(unlimited.limits.memory_bytes, 512 << 20);
        let metered: FunctionConfig = serde_json::from_str(r#"{"fuel": 1000}"#).unwrap();
        let limits = defaults(Kind::Command, &metered).limits(&metered);
        assert_eq!(limits.fuel, Some(1000), "as `wafer serve --fuel` meters it");
    }

    #[test]
    fn a_bad_config_is_refused_and_the_listen_address_is_checked() {
        assert!(parse_config(br#"{"no_such_field": 1}"#).is_err());
        assert_eq!(parse_config(b"{}").unwrap(), FunctionConfig::default());
        assert_eq!(
            listen_address(&[]).unwrap(),
            DEFAULT_LISTEN.parse::<SocketAddr>().unwrap()
        );
        let env = container_env(&["WAFER_LISTEN=127.0.0.1:8080".into()]);
        assert_eq!(listen_address(&env).unwrap().port(), 8080);
        let env = container_env(&["WAFER_LISTEN=nowhere".into()]);
        assert!(listen_address(&env).unwrap_err().contains("nowhere"));
    }

    #[test]
    fn an_image_without_a_config_runs_a_module_as_a_command() {
        let module = wat::parse_str("(module)").unwrap();
        assert_eq!(kind_of(None, &module), Some(Kind::Command));
        let config = FunctionConfig {
            kind: Some(Kind::Wagi),
            ..FunctionConfig::default()
        };
        assert_eq!(kind_of(Some(&config), &module), Some(Kind::Wagi));
    }
}
