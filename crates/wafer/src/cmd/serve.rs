//! `wafer serve`: builds the server configuration from flags and environment and runs until a signal.

use crate::cli::ServeArgs;
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use wafer_server::{Defaults, ServerConfig};

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WAFER_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let fallback = Defaults::default();
    let bytes = |flag: Option<u64>, default: usize| {
        flag.map_or(default, |b| usize::try_from(b).unwrap_or(usize::MAX))
    };
    let defaults = Defaults {
        memory_mb: args.memory.unwrap_or(fallback.memory_mb),
        timeout_ms: args.timeout.unwrap_or(fallback.timeout_ms),
        max_request_bytes: bytes(args.max_body, fallback.max_request_bytes),
        max_module_bytes: bytes(args.max_module, fallback.max_module_bytes),
        max_instances: args
            .max_instances
            .map_or(fallback.max_instances, |n| n as usize),
        queue_wait_ms: args.queue_wait.unwrap_or(fallback.queue_wait_ms),
    };
    let config = ServerConfig {
        defaults,
        token: args.token.filter(|t| !t.is_empty()),
        ..ServerConfig::new(args.listen, args.data_dir)
    };
    wafer_server::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
