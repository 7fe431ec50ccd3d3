//! The settings of a container function, checked at deploy: those only containers have, and the wasm
//! settings a container cannot have.

use crate::error::Error;
use wafer_api::FunctionConfig;
use wafer_container::containerd::parse_user;

/// The most CPU a container may ask for, in millicores.
const MAX_CPU: u32 = 64_000;
/// The highest pids limit a container may ask for.
const MAX_PIDS: u32 = 32_768;
/// The most containers kept warm per function.
const MAX_WARM: u32 = 64;

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
        ("allowed_functions", !config.allowed_functions.is_empty()),
    ] {
        if given {
            return invalid(format!(
                "`{field}` applies to wasm functions only, not to a container"
            ));
        }
    }
    if !config.allowed_outbound_hosts.is_empty() {
        return invalid(
            "a container has no network: `allowed_outbound_hosts` is not available for containers"
                .into(),
        );
    }
    if config.port.is_some() {
        return invalid(
            "`port` (a container serving HTTP) is not available: container functions run as jobs"
                .into(),
        );
    }
    for (field, given) in [
        ("max_replicas", config.max_replicas.is_some()),
        ("idle_timeout_ms", config.idle_timeout_ms.is_some()),
    ] {
        if given {
            return invalid(format!(
                "`{field}` applies to containers serving HTTP (`port`), which are not available"
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
}
