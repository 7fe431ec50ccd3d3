//! Checks on what deployers send, before anything is compiled or stored, and the paths wafer keeps for
//! itself.

use crate::error::Error;
use wafer_api::{Destination, FunctionConfig, Kind};
use wafer_store::FunctionVariables;

/// Paths wafer itself answers, or keeps for what it will answer (`/ui`, the console; `/2015-03-31`, the
/// Lambda Invoke API); no function route may claim them or anything below them.
pub const RESERVED_PREFIXES: &[&str] = &[
    "/v1",
    "/fn",
    "/api",
    "/healthz",
    "/metrics",
    "/ui",
    "/2015-03-31",
];

/// The reserved prefix `route` is or lies below, if any.
pub fn reserved(route: &str) -> Option<&'static str> {
    RESERVED_PREFIXES.iter().copied().find(|p| {
        route
            .strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The most attempts an async execution may be given.
const MAX_ATTEMPTS: u32 = 100;

/// The longest first retry wait, in milliseconds (an hour).
const MAX_RETRY_BACKOFF_MS: u64 = 3_600_000;

/// The largest memory cap a function may ask for, in MiB.
const MAX_MEMORY_MB: u64 = 4096;
/// The largest body cap a function may ask for (1 GiB).
const MAX_BODY_BYTES: u64 = 1 << 30;
/// The highest `max_concurrency` a function may ask for.
const MAX_CONCURRENCY: u32 = 100_000;
/// The longest timeout a function may ask for, in milliseconds (15 minutes).
const MAX_TIMEOUT_MS: u64 = 15 * 60 * 1000;
/// The most requests one instance may serve with `reuse`.
const MAX_REUSE: u32 = 1_000_000;

/// Checks a function name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn name(name: &str) -> Result<(), Error> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName(format!(
            "invalid function name {name:?}: use 1 to 63 lowercase letters, digits and `-`, \
             starting with a letter or digit"
        )))
    }
}

/// Checks an alias name: a name as functions have, that is not a number (a number names a version).
pub fn alias(alias: &str) -> Result<(), Error> {
    let invalid = || {
        Error::InvalidName(format!(
            "invalid alias {alias:?}: use 1 to 63 lowercase letters, digits and `-`, starting with a \
             letter or digit, and not only digits (a number names a version)"
        ))
    };
    name(alias).map_err(|_| invalid())?;
    if alias.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    Ok(())
}

/// Checks a deploy configuration and normalises its routes (no trailing `/`, no duplicates). `fuel` says
/// whether the server meters fuel.
pub fn config(mut config: FunctionConfig, fuel: bool) -> Result<FunctionConfig, Error> {
    let invalid = Error::InvalidConfig;
    let mut routes = Vec::with_capacity(config.routes.len());
    for raw in &config.routes {
        // `/` alone is the root catch-all: it takes every path no longer route and no reserved
        // prefix claims.
        let route = match raw.trim_end_matches('/') {
            "" if raw == "/" => "/".to_string(),
            trimmed => trimmed.to_string(),
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~/".contains(c);
        if !raw.starts_with('/')
            || route.is_empty()
            || !route.chars().all(allowed)
            || route
                .split('/')
                .skip(1)
                .any(|seg| (seg.is_empty() && route != "/") || seg == "." || seg == "..")
        {
            return Err(invalid(format!(
                "invalid route {raw:?}: a route is an absolute path below `/` such as `/hello` or \
                 `/api/v2`, of letters, digits and `-._~`"
            )));
        }
        if reserved(&route).is_some() {
            return Err(invalid(format!(
                "route {raw:?} is reserved by wafer (reserved: {})",
                RESERVED_PREFIXES.join(", ")
            )));
        }
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    config.routes = routes;
    for key in config.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(format!(
                "invalid environment variable name {key:?}"
            )));
        }
    }
    if config.env.values().any(|v| v.contains('\0')) {
        return Err(invalid("environment values may not contain NUL".into()));
    }
    in_range("memory_mb", config.memory_mb, MAX_MEMORY_MB)?;
    wafer_engine::OutboundPolicy::parse(&config.allowed_outbound_hosts).map_err(invalid)?;
    for (field, value) in [
        ("max_request_bytes", config.max_request_bytes),
        ("max_response_bytes", config.max_response_bytes),
    ] {
        if value.is_some_and(|v| v == 0 || v > MAX_BODY_BYTES) {
            return Err(invalid(format!(
                "{field} must be between 1 and {MAX_BODY_BYTES}"
            )));
        }
    }
    match config.fuel {
        Some(_) if !fuel => {
            return Err(invalid(
                "this server does not meter fuel; start it with --fuel to use `fuel`".into(),
            ))
        }
        Some(0) => return Err(invalid("fuel must be at least 1".into())),
        _ => {}
    }
    in_range("max_concurrency", config.max_concurrency, MAX_CONCURRENCY)?;
    in_range("timeout_ms", config.timeout_ms, MAX_TIMEOUT_MS)?;
    in_range("max_attempts", config.max_attempts, MAX_ATTEMPTS)?;
    if let Some(ms) = config.retry_backoff_ms {
        if ms > MAX_RETRY_BACKOFF_MS {
            return Err(invalid(format!(
                "retry_backoff_ms must be at most {MAX_RETRY_BACKOFF_MS}, not {ms}"
            )));
        }
    }
    if let Some(expr) = &config.schedule {
        wafer_formats::cron::parse(expr).map_err(invalid)?;
    }
    in_range(
        "max_event_age_ms",
        config.max_event_age_ms,
        MAX_EVENT_AGE_MS,
    )?;
    in_range("max_queued", config.max_queued, MAX_QUEUED)?;
    for (field, destination) in [
        ("on_success", &config.on_success),
        ("on_failure", &config.on_failure),
    ] {
        match destination {
            Some(Destination::Function(target)) => name(target).map_err(|_| {
                invalid(format!(
                    "{field} names {target:?}, which is no function name"
                ))
            })?,
            Some(Destination::Url(url)) => {
                http_url(url).map_err(|e| invalid(format!("{field}: {e}")))?;
            }
            None => {}
        }
    }
    in_range("reuse", config.reuse, MAX_REUSE)?;
    in_range("max_outbound", config.max_outbound, MAX_OUTBOUND)?;
    in_range(
        "outbound_timeout_ms",
        config.outbound_timeout_ms,
        MAX_TIMEOUT_MS,
    )?;
    for store in &config.key_value_stores {
        store_name(store)?;
    }
    for label in &config.sqlite_databases {
        if !valid_label(label) {
            return Err(invalid(format!(
                "invalid sqlite_databases label {label:?}: use 1-{MAX_NAME_BYTES} letters, digits, `-` or `_`"
            )));
        }
    }
    for target in &config.allowed_functions {
        if target != "*" && !valid_target(target) {
            return Err(invalid(format!(
                "allowed_functions entry {target:?} is neither a function name, a proxy-wasm id nor `*`"
            )));
        }
    }
    if let Some(kind) = config.kind {
        fits(&config, kind)?;
    }
    Ok(config)
}

/// The longest a queued execution may be allowed to wait: a week.
const MAX_EVENT_AGE_MS: u64 = 7 * 24 * 3_600_000;

/// The highest `max_queued`.
const MAX_QUEUED: u64 = 100_000_000;

/// An absolute `http://` or `https://` URL with a host (a callback's or a destination's).
pub fn http_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{url:?} must be an absolute http:// or https:// URL"
        ));
    }
    Ok(uri)
}

/// The most outbound requests one function may have in flight.
const MAX_OUTBOUND: u32 = 10_000;

/// The longest name of a key-value store, a variable, or a proxy-wasm id.
const MAX_NAME_BYTES: usize = 255;

/// The largest configuration value.
const MAX_VARIABLE_BYTES: usize = 64 * 1024;

/// Whether `target` can name a function or a proxy-wasm id: printable ASCII without spaces or `/`.
fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= MAX_NAME_BYTES
        && target.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Whether `label` names a SQLite database: it becomes a file name, so no dots.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_NAME_BYTES
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Checks a key-value store's name: 1–255 characters of letters, digits, `-`, `_` and `.`.
pub fn store_name(store: &str) -> Result<(), Error> {
    let valid = !store.is_empty()
        && store.len() <= MAX_NAME_BYTES
        && store
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidStore(format!(
            "invalid key-value store name {store:?}: use 1-{MAX_NAME_BYTES} letters, digits, `-`, `_` or `.`"
        )))
    }
}

/// Checks configuration variables and secrets: names like environment variables (letters, digits,
/// `_`, `.`, `-`), values of at most 64 KiB, and no name both plain and secret.
pub fn variables(update: &FunctionVariables) -> Result<(), Error> {
    let invalid = Error::InvalidConfig;
    for (name, value) in update.variables.iter().chain(&update.secrets) {
        let valid_name = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid_name {
            return Err(invalid(format!(
                "invalid variable name {name:?}: use letters, digits, `_`, `.` or `-`"
            )));
        }
        if value.len() > MAX_VARIABLE_BYTES {
            return Err(invalid(format!(
                "the value of `{name}` is longer than {MAX_VARIABLE_BYTES} bytes"
            )));
        }
    }
    if let Some(both) = update
        .variables
        .keys()
        .find(|k| update.secrets.contains_key(*k))
    {
        return Err(invalid(format!(
            "`{both}` is given both as a variable and as a secret"
        )));
    }
    Ok(())
}

/// Checks that a setting, when given, lies between 1 and `max`.
fn in_range<N>(field: &str, value: Option<N>, max: N) -> Result<(), Error>
where
    N: Copy + PartialOrd + From<u8> + std::fmt::Display,
{
    match value {
        Some(n) if n < N::from(1) || n > max => Err(Error::InvalidConfig(format!(
            "{field} must be between 1 and {max}, not {n}"
        ))),
        _ => Ok(()),
    }
}

/// Checks the settings that only some kinds have against the kind a module turned out to be.
pub fn fits(config: &FunctionConfig, kind: Kind) -> Result<(), Error> {
    if kind == Kind::Container {
        return crate::containers::check(config);
    }
    if let Some(field) = crate::containers::only_fields(config) {
        return Err(Error::InvalidConfig(format!(
            "`{field}` applies to container functions only"
        )));
    }
    if config.reuse.is_some_and(|n| n > 1) && kind != Kind::Http {
        return Err(Error::InvalidConfig(format!(
            "reuse applies to http components only; a {kind} module runs its entry point once \
             per instance"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["a", "hello-world", "0x", &"a".repeat(63)] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "../x", "a/b", "a.b", &"a".repeat(64)] {
            assert!(name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numeric_settings_must_lie_between_one_and_their_cap() {
        let message = |c: FunctionConfig| match config(c, false) {
            Err(e) => e.describe(),
            Ok(_) => String::new(),
        };
        assert!(message(FunctionConfig {
            memory_mb: Some(0),
            ..Default::default()
        })
        .contains("memory_mb must be between 1 and 4096, not 0"));
        assert!(message(FunctionConfig {
            max_attempts: Some(101),
            ..Default::default()
        })
        .contains("max_attempts must be between 1 and 100, not 101"));
        assert!(message(FunctionConfig {
            timeout_ms: Some(MAX_TIMEOUT_MS),
            reuse: Some(MAX_REUSE),
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn routes_are_normalised_and_checked() {
        let c = config(
            FunctionConfig {
                routes: vec!["/hello/".into(), "/hello".into(), "/a/b".into()],
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(c.routes, vec!["/hello", "/a/b"]);
        let root = config(
            FunctionConfig {
                routes: vec!["/".into()],
                ..FunctionConfig::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(root.routes, vec!["/"]);
        assert_eq!(
            reserved("/uix"),
            None,
            "only the path and below it are reserved"
        );
        for bad in [
            "hello",
            "//",
            "/a//b",
            "/a/../b",
            "/v1",
            "/fn/x",
            "/metrics",
            "/a b",
            "/ui",
            "/ui/x",
            "/2015-03-31/functions",
        ] {
            let c = FunctionConfig {
                routes: vec![bad.into()],
                ..Default::default()
            };
            assert!(config(c, false).is_err(), "{bad}");
        }
    }
}
