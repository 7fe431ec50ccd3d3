//! `wafer deploy FILE --name N …` (a Spin application's manifest goes to `spin.rs`), and the parsers of
//! its size and duration flags.

use crate::cli::{DeployArgs, FunctionFlags};
use crate::client::Client;
use crate::output;
use crate::progress::Step;
use anyhow::Context;
use std::process::ExitCode;
use wafer_api::{ConfigUpdate, Destination, FunctionConfig, Kind};

pub async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    if let Some(manifest) = super::spin::manifest_of(&args.file) {
        return super::spin::deploy(args, manifest).await;
    }
    let Some(name) = args.name.clone() else {
        anyhow::bail!(
            "--name is required (it is optional only for a Spin application's spin.toml)"
        );
    };
    let container = args.function.kind == Some(Kind::Container);
    let (module, config) = match args.file.strip_prefix("oci://") {
        // The server pulls a container's image itself, through its own registry settings.
        Some(_) if container => {
            let mut config = args.function.config();
            config.image = Some(args.file.clone());
            (Vec::new(), config)
        }
        Some(reference) => {
            let (module, base) = super::registry::fetch(reference, args.plain_http).await?;
            (module, overlay(base, args.function.config()))
        }
        None => {
            let module = tokio::fs::read(&args.file)
                .await
                .with_context(|| format!("cannot read {}", args.file))?;
            (module, args.function.config())
        }
    };
    let variables = ConfigUpdate {
        variables: args.vars.into_iter().collect(),
        secrets: args
            .secrets
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect(),
    };
    let files = match &args.files {
        Some(dir) => {
            let mut bundle = super::files::Bundle::new(dir, &[])?;
            bundle.add_dir(dir, std::path::Path::new(""))?;
            let files = bundle.finish()?;
            if files.is_none() {
                eprintln!("note: {} holds no files", dir.display());
            }
            files
        }
        None => None,
    };
    let client = Client::new(&args.client);
    let size = module.len() + files.as_ref().map_or(0, Vec::len);
    let step = Step::upload(&format!("uploading {}", args.file), size as u64);
    let version = client
        .deploy(
            &name,
            module,
            files,
            &config,
            &variables,
            !args.no_promote,
            &step,
        )
        .await?;
    drop(step);
    let mut text = match version.live {
        true => format!(
            "deployed {} version {} ({})\n  {}/fn/{}",
            version.function,
            version.version,
            version.kind,
            client.base(),
            version.function
        ),
        false => format!(
            "deployed {} version {} ({}) as a candidate: the live version stays\n  {}/fn/{}:{}",
            version.function,
            version.version,
            version.kind,
            client.base(),
            version.function,
            version.version
        ),
    };
    for route in &version.config.routes {
        text.push_str(&format!("\n  {}{route}", client.base()));
    }
    output::message(args.client.output, &version, &text)?;
    Ok(ExitCode::SUCCESS)
}

impl FunctionFlags {
    /// The configuration these flags describe.
    pub fn config(self) -> FunctionConfig {
        FunctionConfig {
            kind: self.kind,
            routes: self.routes,
            env: self.env.into_iter().collect(),
            memory_mb: self.memory,
            timeout_ms: self.timeout,
            fuel: self.fuel,
            max_request_bytes: self.max_body,
            max_response_bytes: self.max_response,
            allowed_outbound_hosts: self.allow_outbound,
            max_concurrency: self.concurrency,
            private: self.private,
            max_attempts: self.max_attempts,
            retry_backoff_ms: self.retry_backoff,
            max_event_age_ms: self.max_event_age,
            max_queued: self.max_queued,
            on_success: self.on_success,
            on_failure: self.on_failure,
            schedule: self.schedule,
            reuse: self.reuse,
            key_value_stores: self.kv,
            sqlite_databases: self.sqlite,
            allowed_functions: self.call,
            max_outbound: self.max_outbound,
            outbound_timeout_ms: self.outbound_timeout,
            args: self.args,
            cgi: self.cgi,
            cpu: self.cpu,
            pids: self.pids,
            user: self.user,
            min_warm: self.min_warm,
            port: self.port,
            max_replicas: self.max_replicas,
            idle_timeout_ms: self.idle_timeout,
            ..FunctionConfig::default()
        }
    }
}

/// `base` with every setting `flags` gives replacing its own (`env` entries are merged).
pub(super) fn overlay(base: FunctionConfig, flags: FunctionConfig) -> FunctionConfig {
    let list = |given: Vec<String>, base: Vec<String>| if given.is_empty() { base } else { given };
    let mut env = base.env;
    env.extend(flags.env);
    FunctionConfig {
        kind: flags.kind.or(base.kind),
        routes: list(flags.routes, base.routes),
        env,
        memory_mb: flags.memory_mb.or(base.memory_mb),
        timeout_ms: flags.timeout_ms.or(base.timeout_ms),
        fuel: flags.fuel.or(base.fuel),
        max_request_bytes: flags.max_request_bytes.or(base.max_request_bytes),
        max_response_bytes: flags.max_response_bytes.or(base.max_response_bytes),
        allowed_outbound_hosts: list(flags.allowed_outbound_hosts, base.allowed_outbound_hosts),
        max_concurrency: flags.max_concurrency.or(base.max_concurrency),
        private: flags.private || base.private,
        max_attempts: flags.max_attempts.or(base.max_attempts),
        retry_backoff_ms: flags.retry_backoff_ms.or(base.retry_backoff_ms),
        max_event_age_ms: flags.max_event_age_ms.or(base.max_event_age_ms),
        max_queued: flags.max_queued.or(base.max_queued),
        on_success: flags.on_success.or(base.on_success),
        on_failure: flags.on_failure.or(base.on_failure),
        schedule: flags.schedule.or(base.schedule),
        reuse: flags.reuse.or(base.reuse),
        key_value_stores: list(flags.key_value_stores, base.key_value_stores),
        sqlite_databases: list(flags.sqlite_databases, base.sqlite_databases),
        allowed_functions: list(flags.allowed_functions, base.allowed_functions),
        max_outbound: flags.max_outbound.or(base.max_outbound),
        outbound_timeout_ms: flags.outbound_timeout_ms.or(base.outbound_timeout_ms),
        image: flags.image.or(base.image),
        args: list(flags.args, base.args),
        cgi: flags.cgi || base.cgi,
        port: flags.port.or(base.port),
        cpu: flags.cpu.or(base.cpu),
        pids: flags.pids.or(base.pids),
        user: flags.user.or(base.user),
        max_replicas: flags.max_replicas.or(base.max_replicas),
        idle_timeout_ms: flags.idle_timeout_ms.or(base.idle_timeout_ms),
        min_warm: flags.min_warm.or(base.min_warm),
    }
}

/// Parses a destination: an `http://` or `https://` URL, or a function's name.
pub fn parse_destination(s: &str) -> Result<Destination, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(Destination::Url(s.to_string()));
    }
    let name = s.strip_prefix("function:").unwrap_or(s);
    if name.is_empty() || name.contains(['/', ':']) {
        return Err(format!(
            "expected a function's name or an http:// or https:// URL, not {s:?}"
        ));
    }
    Ok(Destination::Function(name.to_string()))
}

/// Parses `KEY=VALUE`.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub use wafer_api::units::{parse_bytes, parse_memory_mb, parse_timeout_ms};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs_parse() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
    }
}
