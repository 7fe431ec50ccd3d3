//! The settings of a container function, checked at deploy: those only containers have, and the wasm
//! settings a container cannot have.

use super::outbound::PROXY_PORT;
use crate::error::Error;
use wafer_api::FunctionConfig;
use wafer_container::containerd::parse_user;

/// The most CPU a container may ask for, in millicores.
const MAX_CPU: u32 = 64_000;
/// The highest pids limit a container may ask for.
const MAX_PIDS: u32 = 32_768;
/// The most containers kept warm per function.
const MAX_WARM: u32 = 64;
/// The most instances of a container serving HTTP.
const MAX_REPLICAS: u32 = 256;
/// The shortest idle timeout of a container serving HTTP, in milliseconds.
const MIN_IDLE_MS: u64 = 100;

/// The first container-only setting `config` gives, if any.
pub fn only_fields(config: &FunctionConfig) -> Option<&'static str> {
    [
        ("image", config.image.is_some()),
        ("args", !config.args.is_empty()),
        ("cgi", config.cgi),
        ("port", config.port.is_some()),
        ("cpu", config.cpu.is_some()),
        ("pids", config.pids.is_some()),
        ("user", config.user.is_some()),
        ("max_replicas", config.max_replicas.is_some()),
        ("idle_timeout_ms", config.idle_timeout_ms.is_some()),
        ("min_warm", config.min_warm.is_some()),
    ]
    .into_iter()
    .find_map(|(field, given)| given.then_some(field))
}

/// Checks a container function's settings.
pub fn check(config: &FunctionConfig) -> Result<(), Error> {
    let invalid = |message: String| Err(Error::InvalidConfig(message));
    for (field, given) in [
        ("fuel", config.fuel.is_some()),
        ("reuse", config.reuse.is_some_and(|n| n > 1)),
        ("key_value_stores", !config.key_value_stores.is_empty()),
        ("sqlite_databases", !config.sqlite_databases.is_empty()),
        ("allowed_functions", !config.allowed_functions.is_empty()),
    ] {
        if given {
            return invalid(format!(
                "`{field}` applies to wasm functions only, not to a container"
            ));
        }
    }
    if let Some(port) = config.port {
        if port < 1024 {
            return invalid(format!(
                "port {port}: a container runs without capabilities, so its server must listen \
                 on a port of 1024 or above"
            ));
        }
        if port == PROXY_PORT && !config.allowed_outbound_hosts.is_empty() {
            return invalid(format!(
                "port {PROXY_PORT} is where a container that may reach out finds wafer's proxy; \
                 listen on another"
            ));
        }
        if config.cgi {
            return invalid(
                "`cgi` is for jobs; a container serving HTTP (`port`) answers HTTP itself".into(),
            );
        }
    } else {
        for (field, given) in [
            ("max_replicas", config.max_replicas.is_some()),
            ("idle_timeout_ms", config.idle_timeout_ms.is_some()),
        ] {
            if given {
                return invalid(format!(
                    "`{field}` applies to containers serving HTTP: give the `port` it listens on"
                ));
            }
        }
    }
    if config
        .max_replicas
        .is_some_and(|n| n == 0 || n > MAX_REPLICAS)
    {
        return invalid(format!("max_replicas must be between 1 and {MAX_REPLICAS}"));
    }
    if config.idle_timeout_ms.is_some_and(|ms| ms < MIN_IDLE_MS) {
        return invalid(format!("idle_timeout_ms must be at least {MIN_IDLE_MS}"));
    }
    if config.port.is_some() {
        let replicas = config.max_replicas.unwrap_or(super::http::DEFAULT_REPLICAS);
        if config.min_warm.is_some_and(|n| n > replicas) {
            return invalid(format!(
                "min_warm ({}) keeps more instances running than max_replicas ({replicas}) allows",
                config.min_warm.unwrap_or_default()
            ));
        }
    }
    if let Some(image) = &config.image {
        if !image.starts_with("oci://") && !image.starts_with("sha256:") {
            return invalid(format!(
                "image {image:?} must be oci://REGISTRY/REPOSITORY[:TAG][@DIGEST] (or the sha256: \
                 digest of an uploaded tarball)"
            ));
        }
    }
    if let Some(user) = &config.user {
        if parse_user(user).is_none() {
            return invalid(format!("user {user:?} must be UID or UID:GID, as numbers"));
        }
    }
    for (field, value, max) in [
        ("cpu", config.cpu, MAX_CPU),
        ("pids", config.pids, MAX_PIDS),
    ] {
        if value.is_some_and(|v| v == 0 || v > max) {
            return invalid(format!("{field} must be between 1 and {max}"));
        }
    }
    if config.min_warm.is_some_and(|n| n > MAX_WARM) {
        return invalid(format!("min_warm must be at most {MAX_WARM}"));
    }
    if config.cpu.is_some_and(|millis| millis < 10) {
        return invalid("cpu is in millicores and must be at least 10".into());
    }
    if config.args.iter().any(|arg| arg.contains('\0')) {
        return invalid("args may not contain NUL".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_settings_belong_to_containers_and_wasm_ones_to_wasm() {
        let config = FunctionConfig {
            min_warm: Some(2),
            ..FunctionConfig::default()
        };
        assert_eq!(only_fields(&config), Some("min_warm"));
        assert!(check(&config).is_ok());
        let config = FunctionConfig {
            key_value_stores: vec!["a".into()],
            ..FunctionConfig::default()
        };
        assert!(check(&config).is_err());
        let config = FunctionConfig {
            user: Some("root".into()),
            ..FunctionConfig::default()
        };
        assert!(check(&config).is_err());
        let config = FunctionConfig {
            cpu: Some(5),
            ..FunctionConfig::default()
        };
        assert!(check(&config).is_err());
    }

    #[test]
    fn a_server_listens_where_it_can_and_scales_within_its_bounds() {
        let server = |port, extra: fn(&mut FunctionConfig)| {
            let mut config = FunctionConfig {
                port: Some(port),
                ..FunctionConfig::default()
            };
            extra(&mut config);
            check(&config)
        };
        assert!(server(8080, |_| {}).is_ok());
        assert!(server(80, |_| {}).is_err());
        assert!(server(8080, |c| c.cgi = true).is_err());
        assert!(server(PROXY_PORT, |_| {}).is_ok());
        assert!(server(PROXY_PORT, |c| c.allowed_outbound_hosts =
            vec!["a.test".into()])
        .is_err());
        assert!(server(8080, |c| c.max_replicas = Some(0)).is_err());
        assert!(server(8080, |c| c.min_warm = Some(5)).is_err());
        assert!(server(8080, |c| {
            c.min_warm = Some(5);
            c.max_replicas = Some(5);
        })
        .is_ok());
        assert!(server(8080, |c| c.idle_timeout_ms = Some(10)).is_err());
        let job = FunctionConfig {
            idle_timeout_ms: Some(1000),
            ..FunctionConfig::default()
        };
        assert!(check(&job).is_err());
    }
}
