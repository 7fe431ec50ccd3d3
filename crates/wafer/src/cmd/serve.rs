//! `wafer serve`: builds the server configuration and runs until a signal.
//!
//! Each setting comes from the first of: its flag, its `WAFER_*` variable, the config file (`--config`, or
//! `./wafer.toml` when present), the built-in default.

use crate::cli::ServeArgs;
use crate::cmd::deploy::{parse_bytes, parse_memory_mb, parse_timeout_ms};
use anyhow::{anyhow, Context};
use serde::Deserialize;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing_subscriber::EnvFilter;
use wafer_engine::FunctionDefaults;
use wafer_server::{
    CodeBudget, ConsoleListen, ContainerSettings, Database, Defaults, ExecutionSettings,
    Registries, ServerConfig, DEFAULT_GRACE,
};
use wafer_store::KeySource;

/// The config file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG_FILE: &str = "wafer.toml";

/// The default data directory.
const DEFAULT_DATA_DIR: &str = "./wafer-data";

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let file = FileConfig::find(args.config.as_deref())?;
    let config = server_config(args, file)?;
    wafer_server::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr at the level `WAFER_LOG` sets (info by default).
pub(crate) fn init_logging() {
    let spec = std::env::var("WAFER_LOG").unwrap_or_default();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(&spec))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// The log filter `spec` (`WAFER_LOG`'s syntax) describes, or `info` when it is empty or invalid.
///
/// wasmtime-wasi opens an info-level span around every WASI preview1 call a guest makes. Opening
/// them was 7% of a WAGI request's CPU, so they stay closed unless `spec` names `wasmtime_wasi`.
fn log_filter(spec: &str) -> EnvFilter {
    let filter = EnvFilter::try_new(spec)
        .ok()
        .filter(|_| !spec.trim().is_empty())
        .unwrap_or_else(|| EnvFilter::new("info"));
    if spec.contains("wasmtime_wasi") {
        return filter;
    }
    match "wasmtime_wasi=warn".parse() {
        Ok(quiet) => filter.add_directive(quiet),
        Err(_) => filter,
    }
}

/// The settings a config file may hold; sizes and durations are written as for the flags (`"128MiB"`,
/// `"30s"`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    console_listen: Option<String>,
    data_dir: Option<PathBuf>,
    token: Option<String>,
    aws_access_key: Option<String>,
    aws_secret_key: Option<String>,
    memory: Option<String>,
    timeout: Option<String>,
    max_body: Option<String>,
    max_response: Option<String>,
    max_module: Option<String>,
    max_instances: Option<u32>,
    queue_wait: Option<String>,
    fuel: Option<bool>,
    pooling: Option<bool>,
    max_idle: Option<u32>,
    kv_store_size: Option<String>,
    code_cache_size: Option<String>,
    code_cache_modules: Option<u32>,
    compile_cache_size: Option<String>,
    baseline_compile_limit: Option<String>,
    workers: Option<u32>,
    retain: Option<u64>,
    retain_for: Option<String>,
    retain_dead: Option<u64>,
    retain_dead_for: Option<String>,
    retain_audit_for: Option<String>,
    #[serde(default)]
    callback_hosts: Vec<String>,
    queue_lease: Option<String>,
    grace: Option<String>,
    secrets_key_file: Option<PathBuf>,
    database: Option<String>,
    database_ca: Option<PathBuf>,
    node_id: Option<String>,
    advertise: Option<String>,
    containerd_socket: Option<PathBuf>,
    max_image: Option<String>,
    #[serde(default)]
    plain_http_registries: Vec<String>,
    registry_user: Option<String>,
    registry_password: Option<String>,
}

impl FileConfig {
    /// The file `config` names, else `./wafer.toml` when it exists, else no settings.
    fn find(config: Option<&Path>) -> anyhow::Result<Self> {
        match config {
            Some(path) => Self::read(path),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Self::read(Path::new(DEFAULT_CONFIG_FILE))
            }
            None => Ok(Self::default()),
        }
    }

    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }
}

/// Where `serve` would keep its state: its data directory, and the cluster's database URL when it is
/// given one. Flags (`data_dir`, `database`) win over the config file (`config`, or `./wafer.toml`).
pub(crate) fn state_place(
    config: Option<&Path>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    let file = FileConfig::find(config)?;
    let data_dir = data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    Ok((
        data_dir,
        database.or(file.database).filter(|d| !d.is_empty()),
    ))
}

/// Merges flags (already merged with `WAFER_*` by clap) over the file over the defaults.
fn server_config(args: ServeArgs, file: FileConfig) -> anyhow::Result<ServerConfig> {
    let fallback = Defaults::default();
    let from_file = |name: &str, value: Option<String>, parse: fn(&str) -> Result<u64, String>| {
        value
            .map(|v| parse(&v).map_err(|e| anyhow!("config file: {name}: {e}")))
            .transpose()
    };
    let max_instances = args.max_instances.or(file.max_instances);
    if max_instances == Some(0) {
        return Err(anyhow!("config file: max_instances must be at least 1"));
    }
    if file.code_cache_modules == Some(0) {
        return Err(anyhow!(
            "config file: code_cache_modules must be at least 1"
        ));
    }
    let function = FunctionDefaults {
        memory_mb: args
            .memory
            .or(from_file("memory", file.memory, parse_memory_mb)?)
            .unwrap_or(fallback.function.memory_mb),
        timeout_ms: args
            .timeout
            .or(from_file("timeout", file.timeout, parse_timeout_ms)?)
            .unwrap_or(fallback.function.timeout_ms),
        max_request_bytes: args
            .max_body
            .or(from_file("max_body", file.max_body, parse_bytes)?)
            .unwrap_or(fallback.function.max_request_bytes),
        max_response_bytes: args
            .max_response
            .or(from_file("max_response", file.max_response, parse_bytes)?)
            .unwrap_or(fallback.function.max_response_bytes),
        fuel: args.fuel || file.fuel.unwrap_or(false),
    };
    let defaults = Defaults {
        function,
        max_module_bytes: args
            .max_module
            .or(from_file("max_module", file.max_module, parse_bytes)?)
            .map_or(fallback.max_module_bytes, |b| {
                usize::try_from(b).unwrap_or(usize::MAX)
            }),
        max_instances: max_instances.map_or(fallback.max_instances, |n| n as usize),
        queue_wait_ms: args
            .queue_wait
            .or(from_file("queue_wait", file.queue_wait, parse_timeout_ms)?)
            .unwrap_or(fallback.queue_wait_ms),
        pooling: !args.no_pooling && file.pooling.unwrap_or(fallback.pooling),
        max_idle: args
            .max_idle
            .or(file.max_idle)
            .map_or(fallback.max_idle, |n| n as usize),
        kv_store_bytes: args
            .kv_store_size
            .or(from_file("kv_store_size", file.kv_store_size, parse_bytes)?)
            .unwrap_or(fallback.kv_store_bytes),
        code: CodeBudget {
            bytes: args
                .code_cache_size
                .or(from_file(
                    "code_cache_size",
                    file.code_cache_size,
                    parse_bytes,
                )?)
                .unwrap_or(fallback.code.bytes),
            modules: args
                .code_cache_modules
                .or(file.code_cache_modules)
                .map_or(fallback.code.modules, |n| n as usize),
        },
        compile_cache_bytes: args
            .compile_cache_size
            .or(from_file(
                "compile_cache_size",
                file.compile_cache_size,
                parse_bytes,
            )?)
            .unwrap_or(fallback.compile_cache_bytes),
        baseline_limit: args
            .baseline_compile_limit
            .or(from_file(
                "baseline_compile_limit",
                file.baseline_compile_limit,
                parse_bytes,
            )?)
            .map_or(fallback.baseline_limit, |n| {
                usize::try_from(n).unwrap_or(usize::MAX)
            }),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let fallback = ExecutionSettings::default();
    let workers = args.workers.or(file.workers);
    if workers == Some(0) {
        return Err(anyhow!("config file: workers must be at least 1"));
    }
    let executions = ExecutionSettings {
        workers: workers.map_or(fallback.workers, |n| n as usize),
        retain_per_function: args
            .retain
            .or(file.retain)
            .unwrap_or(fallback.retain_per_function),
        retain: args
            .retain_for
            .or(from_file("retain_for", file.retain_for, parse_timeout_ms)?)
            .map_or(fallback.retain, Duration::from_millis),
        retain_dead_per_function: args
            .retain_dead
            .or(file.retain_dead)
            .unwrap_or(fallback.retain_dead_per_function),
        retain_dead: args
            .retain_dead_for
            .or(from_file(
                "retain_dead_for",
                file.retain_dead_for,
                parse_timeout_ms,
            )?)
            .map_or(fallback.retain_dead, Duration::from_millis),
        retain_audit: args
            .retain_audit_for
            .or(from_file(
                "retain_audit_for",
                file.retain_audit_for,
                parse_timeout_ms,
            )?)
            .map_or(fallback.retain_audit, Duration::from_millis),
        lease: args
            .queue_lease
            .or(from_file(
                "queue_lease",
                file.queue_lease,
                parse_timeout_ms,
            )?)
            .map_or(fallback.lease, Duration::from_millis)
            .max(Duration::from_millis(300)),
        callback_hosts: if args.callback_hosts.is_empty() {
            file.callback_hosts
        } else {
            args.callback_hosts
        },
        ..fallback
    };
    let database = args
        .database
        .or(file.database)
        .filter(|url| !url.is_empty())
        .map(|url| Database {
            url,
            ca_file: args.database_ca.or(file.database_ca),
        });
    let fallback = ContainerSettings::default();
    let user = args.registry_user.or(file.registry_user);
    let password = args.registry_password.or(file.registry_password);
    if user.is_some() != password.is_some() {
        anyhow::bail!("--registry-user and --registry-password go together");
    }
    let containers = ContainerSettings {
        socket: args
            .containerd_socket
            .or(file.containerd_socket)
            .unwrap_or(fallback.socket),
        max_image_bytes: args
            .max_image
            .or(from_file("max_image", file.max_image, parse_bytes)?)
            .map_or(fallback.max_image_bytes, |b| {
                usize::try_from(b).unwrap_or(usize::MAX)
            }),
        registries: Registries {
            plain_http: if args.plain_http_registries.is_empty() {
                file.plain_http_registries
            } else {
                args.plain_http_registries
            },
            credentials: user.zip(password),
        },
    };
    let aws_keys = match (
        args.aws_access_key.or(file.aws_access_key),
        args.aws_secret_key.or(file.aws_secret_key),
    ) {
        (Some(access), Some(secret)) if !access.is_empty() && !secret.is_empty() => {
            Some((access, secret))
        }
        (None, None) => None,
        _ => {
            anyhow::bail!("--aws-access-key and --aws-secret-key go together: give both or neither")
        }
    };
    let secrets = match (
        args.secrets_key_file.or(file.secrets_key_file),
        args.secrets_key.filter(|key| !key.is_empty()),
    ) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--secrets-key-file and WAFER_SECRETS_KEY both give the secrets key: give one"
        ),
        (Some(path), None) => KeySource::File(path),
        (None, Some(key)) => KeySource::Value(key),
        (None, None) => KeySource::DataDir,
    };
    Ok(ServerConfig {
        defaults,
        secrets,
        token: args.token.or(file.token).filter(|t| !t.is_empty()),
        aws_keys,
        executions,
        database,
        node_id: args.node_id.or(file.node_id),
        advertise: args.advertise.or(file.advertise),
        containers,
        grace: args
            .grace
            .or(from_file("grace", file.grace, parse_timeout_ms)?)
            .map_or(DEFAULT_GRACE, Duration::from_millis),
        console: match args.console_listen {
            Some(console) => console,
            None => match file.console_listen {
                Some(text) => text
                    .parse()
                    .map_err(|e| anyhow!("config file: console_listen: {e}"))?,
                None => ConsoleListen::Beside,
            },
        },
        ..ServerConfig::new(listen, data_dir)
    })
}

/// Resolves on Ctrl-C or SIGTERM. A second one while the server drains ends the process at once
/// (exit 1), as an operator who presses Ctrl-C again expects.
pub(crate) async fn shutdown_signal() {
    // Listening from the start, so a second signal is caught however soon it follows the first.
    let mut signals = StopSignals::listen();
    signals.next().await;
    tracing::info!("shutting down (a second Ctrl-C or SIGTERM stops at once)");
    tokio::spawn(async move {
        signals.next().await;
        tracing::warn!("a second stop signal: exiting now, without finishing the drain");
        std::process::exit(1);
    });
}

/// Ctrl-C (SIGINT) and SIGTERM, each caught from when it is listened for.
struct StopSignals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl StopSignals {
    fn listen() -> Self {
        let listen = |kind| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {kind:?}: {e}");
                None
            }
        };
        Self {
            interrupt: listen(SignalKind::interrupt()),
            terminate: listen(SignalKind::terminate()),
        }
    }

    /// Resolves on the next signal of either kind.
    async fn next(&mut self) {
        async fn one(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.interrupt) => {},
            _ = one(&mut self.terminate) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> ServeArgs {
        let cli = crate::cli::Cli::parse_from(["wafer", "serve"].iter().chain(flags));
        match cli.command {
            crate::cli::Command::Serve(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:9000"
            memory = "64MiB"
            timeout = "5s"
            max_instances = 7
            grace = "5s"
            "#,
        )
        .unwrap();
        let config = server_config(args(&["--timeout", "2s"]), file).unwrap();
        assert_eq!(config.grace, Duration::from_secs(5));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.defaults.function.memory_mb, 64);
        assert_eq!(config.defaults.function.timeout_ms, 2000);
        assert_eq!(config.defaults.max_instances, 7);
        assert_eq!(
            config.defaults.queue_wait_ms,
            Defaults::default().queue_wait_ms
        );
        assert_eq!(config.data_dir, PathBuf::from("./wafer-data"));
        let config = server_config(args(&[]), FileConfig::default()).unwrap();
        assert_eq!(config.grace, DEFAULT_GRACE);
    }

    #[test]
    fn a_bad_file_is_refused_with_its_reason() {
        assert!(toml::from_str::<FileConfig>("memroy = \"1MiB\"").is_err());
        let file: FileConfig = toml::from_str("memory = \"lots\"").unwrap();
        let err = server_config(args(&[]), file).unwrap_err().to_string();
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn wasi_call_spans_stay_closed_unless_the_filter_names_them() {
        use tracing::Level;
        use tracing_subscriber::layer::SubscriberExt;
        let enabled = |spec: &str| {
            let subscriber = tracing_subscriber::registry().with(log_filter(spec));
            tracing::subscriber::with_default(subscriber, || {
                (
                    tracing::enabled!(target: "wasmtime_wasi::p1", Level::INFO),
                    tracing::enabled!(target: "wasmtime_wasi::p1", Level::WARN),
                    tracing::enabled!(target: "wafer_server::queue", Level::INFO),
                    tracing::enabled!(target: "wafer_server::queue", Level::DEBUG),
                )
            })
        };
        assert_eq!(enabled(""), (false, true, true, false));
        assert_eq!(enabled("not a filter=="), (false, true, true, false));
        assert_eq!(enabled("debug"), (false, true, true, true));
        assert_eq!(
            enabled("info,wasmtime_wasi=info"),
            (true, true, true, false)
        );
    }
}
