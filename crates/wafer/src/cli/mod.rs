//! The command line, declared with clap. Flags fall back to `WAFER_*` environment variables.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod server;
pub use server::{BackupArgs, NodeArgs, RestoreArgs, ServeArgs};

/// wafer — a WebAssembly Function-as-a-Service platform.
#[derive(Debug, Parser)]
#[command(name = "wafer", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: management API under /v1, functions under /fn/{name} and their routes.
    Serve(ServeArgs),
    /// Deploy a wasm file as a new version of a function; the new version goes live at once (unless
    /// --no-promote).
    Deploy(DeployArgs),
    /// Package a wasm file and its configuration as an OCI image (an image layout tarball) for
    /// containerd, Kubernetes and registries.
    Package(PackageArgs),
    /// Push a function (a .wasm file or a `wafer package` tarball) to an OCI registry.
    Push(PushArgs),
    /// Pull a function from an OCI registry: its wasm and its config.
    Pull(PullArgs),
    /// Call a function through the management API, synchronously or (--async) through the queue.
    Invoke(InvokeArgs),
    /// List deployed functions.
    Ls(ClientArgs),
    /// List the versions of a function.
    Versions(NameArgs),
    /// Make an earlier version of a function live again (the `live` alias, without weights).
    Rollback(RollbackArgs),
    /// Name versions of a function with aliases, and split calls between two versions: alias set, ls,
    /// rm. Calls name an alias as NAME:ALIAS (/fn/NAME:ALIAS, --qualifier).
    Alias(AliasArgs),
    /// Delete a function with all its versions.
    Rm(NameArgs),
    /// Show one execution: status, timings, what it used, its output and its logs.
    Execution(ExecutionArgs),
    /// List a function's executions, newest first.
    Executions(ExecutionsArgs),
    /// Run a dead or expired execution again: further attempts of it, with its original request.
    Retry(ExecutionArgs),
    /// Run every dead or expired execution of a function again.
    Redrive(RedriveArgs),
    /// Show a function's log lines, or follow them with -f.
    Logs(LogsArgs),
    /// Summarise a function's executions: counts, duration, CPU time and memory; with --since, its
    /// traffic over that window too.
    Stats(StatsArgs),
    /// Read and write key-value stores: kv set STORE KEY VALUE, kv get STORE KEY, kv ls STORE, kv rm.
    Kv(KvArgs),
    /// Show a function's configuration, or change it with --var, --secret and --unset.
    Config(ConfigArgs),
    /// List the nodes sharing the server's database, with how far each has caught up.
    Nodes(ClientArgs),
    /// Copy a node's data directory (database, modules, granted databases, secrets key) into a new
    /// directory, while its server runs; a cluster's database is backed up with pg_dump instead.
    Backup(BackupArgs),
    /// Restore a backup into a new or empty data directory, for a server to start on.
    Restore(RestoreArgs),
    /// Manage API keys: keys create --scope deploy:hello-* --scope invoke:* --expires 30d, keys ls,
    /// keys revoke ID. Scopes are read, deploy or invoke on a function-name pattern, or admin.
    Keys(KeysArgs),
    /// Show the audit log of management actions, newest first: who, what, to what, when.
    Audit(AuditArgs),
    /// Run the node agent: one process per Kubernetes node that runs the functions of every container
    /// the containerd shim (`containerd-shim-wafer-v1` with `node_agent` set) hands it.
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub struct AliasArgs {
    #[command(subcommand)]
    pub command: AliasCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Point ALIAS of function NAME at a version, optionally sending a share of calls to another
    /// (`live` is the alias unqualified calls use: a weight on it is a canary on all traffic).
    Set {
        name: String,
        alias: String,
        /// The version that takes the calls no weight claims.
        #[arg(long)]
        version: u32,
        /// VERSION=SHARE: send that share of calls to another version, as 10% or 0.1.
        #[arg(long, value_parser = crate::cmd::alias::parse_weight)]
        weight: Option<(u32, f64)>,
    },
    /// List the aliases of function NAME.
    Ls { name: String },
    /// Remove ALIAS of function NAME (never `live`).
    Rm { name: String, alias: String },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its token is shown this once.
    Create {
        /// What the key may do, as PERMISSION:PATTERN (read, deploy or invoke, on the functions whose
        /// names match; `*` matches anything) or `admin`. Repeat for several.
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// What the key is for.
        #[arg(long)]
        name: Option<String>,
        /// How long it is valid (`90m`, `12h`, `30d`); forever without.
        #[arg(long)]
        expires: Option<String>,
        /// Requests a second it may make on each node.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// List every key, revoked ones too.
    Ls,
    /// Revoke a key: every node refuses it within seconds.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// How many actions to show.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Only actions before this one (a SEQ), for the next page.
    #[arg(long)]
    pub before: Option<i64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The function's name.
    pub name: String,
    /// Only executions that ended this long ago or later (`30m`, `6h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct KvArgs {
    #[command(subcommand)]
    pub command: KvCommand,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set KEY in STORE to VALUE (a string, @FILE to read a file, or @- for stdin).
    Set {
        store: String,
        key: String,
        value: String,
    },
    /// Print the value of KEY in STORE.
    Get { store: String, key: String },
    /// List the keys of STORE.
    Ls { store: String },
    /// Delete KEY from STORE.
    Rm { store: String, key: String },
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The function's name.
    pub name: String,
    /// Set a variable, KEY=VALUE (repeatable).
    #[arg(long = "var", value_parser = crate::cmd::deploy::parse_env)]
    pub vars: Vec<(String, String)>,
    /// Set a secret, KEY=VALUE (repeatable); functions read it, the API never shows it.
    #[arg(long = "secret", value_parser = crate::cmd::deploy::parse_env)]
    pub secrets: Vec<(String, String)>,
    /// Remove a variable or secret (repeatable).
    #[arg(long = "unset")]
    pub unset: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ExecutionArgs {
    /// The execution's id.
    pub id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ExecutionsArgs {
    /// The function's name.
    pub name: String,
    /// Only executions in this status: queued, running, succeeded, failed, dead or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// Only executions older than this id (the `next` of an earlier page).
    #[arg(long)]
    pub before: Option<String>,
    /// How many to show (1–1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The function's name.
    pub name: String,
    /// Keep printing new lines as executions finish.
    #[arg(long, short)]
    pub follow: bool,
    /// How many of the latest lines to show first (1–1000).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub limit: u32,
    /// Only lines at this level or above (trace, debug, info, warn, error, critical).
    #[arg(long, short)]
    pub level: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// How client subcommands reach the server and print results.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The wafer server's base URL.
    #[arg(long, env = "WAFER_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The server's API token, if it has one.
    #[arg(long, env = "WAFER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print for people (text) or for scripts (json).
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The function's name.
    pub name: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The function's name.
    pub name: String,
    /// Also count every attempt that ended this long ago or later (`15m`, `1h`, `24h`; up to 48h).
    #[arg(long)]
    pub since: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The function's name.
    pub name: String,
    /// The version to make live.
    pub version: u32,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The .wasm file (a component or a WASI module), oci://REF for an image in a registry (its
    /// config is the base; flags given here override it), or a Spin application: its spin.toml, or
    /// the directory holding one (every component deploys as a function APP-COMPONENT, all or none).
    pub file: String,
    /// The function's name: 1 to 63 of a-z, 0-9 and `-` (required unless FILE is a Spin application).
    #[arg(long)]
    pub name: Option<String>,
    /// A Spin application's name, which prefixes its functions' (default: the manifest's).
    #[arg(long)]
    pub app: Option<String>,
    /// Keep the live version: the new one is a candidate, called as NAME:VERSION or through an alias
    /// or a weight.
    #[arg(long)]
    pub no_promote: bool,
    #[command(flatten)]
    pub function: FunctionFlags,
    /// A directory whose files the function reads, read-only, as `/` (sent as a tar; a wasm
    /// function's only). A Spin application lists its files in the manifest instead.
    #[arg(long)]
    pub files: Option<PathBuf>,
    /// Speak plain HTTP to the registry of an oci:// image (always so for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
    /// A configuration variable, KEY=VALUE (repeatable); added to the function's configuration. For a
    /// Spin application, a value of one of its [variables] (as SPIN_VARIABLE_KEY also gives).
    #[arg(long = "var", value_parser = crate::cmd::deploy::parse_env)]
    pub vars: Vec<(String, String)>,
    /// A secret, KEY=VALUE (repeatable); the function reads it, the API never shows it.
    #[arg(long = "secret", value_parser = crate::cmd::deploy::parse_env)]
    pub secrets: Vec<(String, String)>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct PackageArgs {
    /// The .wasm file (a component or a WASI module).
    pub file: PathBuf,
    /// Where to write the OCI image layout tarball.
    #[arg(long, short)]
    pub output: PathBuf,
    /// The image's name and tag, NAME[:TAG] (default: the file's name, tag `latest`).
    #[arg(long)]
    pub tag: Option<String>,
    #[command(flatten)]
    pub function: FunctionFlags,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// A .wasm file (packaged with the flags below) or an image layout tarball from `wafer package`.
    pub file: PathBuf,
    /// Where to push: REGISTRY/REPOSITORY[:TAG], e.g. ghcr.io/me/hello:v1.
    pub reference: String,
    /// Speak plain HTTP to the registry (always so for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
    #[command(flatten)]
    pub function: FunctionFlags,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: REGISTRY/REPOSITORY[:TAG|@DIGEST].
    pub reference: String,
    /// Where to write the wasm (default: REPOSITORY.wasm); its config goes beside it as .json.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Speak plain HTTP to the registry (always so for localhost and 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
}

/// A function's configuration, as flags: for `wafer deploy`, `wafer package` and `wafer push`.
#[derive(Debug, Args)]
pub struct FunctionFlags {
    /// Force the kind instead of detecting it: http, wagi, command or proxy-wasm.
    #[arg(long)]
    pub kind: Option<wafer_api::Kind>,
    /// An extra path to mount the function at (repeatable).
    #[arg(long = "route")]
    pub routes: Vec<String>,
    /// An environment variable for the guest, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = crate::cmd::deploy::parse_env)]
    pub env: Vec<(String, String)>,
    /// Memory cap of one invocation, e.g. 64MiB.
    #[arg(long, value_parser = crate::cmd::deploy::parse_memory_mb)]
    pub memory: Option<u64>,
    /// Timeout of one invocation, e.g. 10s or 500ms.
    #[arg(long, value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub timeout: Option<u64>,
    /// Fuel (roughly, instructions) one invocation may use; the server must run with --fuel.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Largest request body handed to this function, e.g. 1MiB.
    #[arg(long, value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_body: Option<u64>,
    /// Largest answer this function may give, e.g. 1MiB.
    #[arg(long, value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_response: Option<u64>,
    /// A host outbound HTTP may reach: host, host:port or *.domain (repeatable).
    #[arg(long = "allow-outbound")]
    pub allow_outbound: Vec<String>,
    /// The most invocations that run at once; further calls wait briefly, then get 429. For a
    /// container serving HTTP: the requests one instance takes at once (default 16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,
    /// Require the server's token to call the function under /fn and its routes too.
    #[arg(long)]
    pub private: bool,
    /// Attempts an async or cron execution gets before it is marked dead (default 3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry of a failed async execution, doubling after, e.g. 500ms.
    #[arg(long, value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub retry_backoff: Option<u64>,
    /// How long an async execution may wait in the queue before it ends `expired` unrun, e.g. 6h.
    #[arg(long, value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub max_event_age: Option<u64>,
    /// The most async executions that may wait in the queue; further submissions get 429.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued: Option<u64>,
    /// Where an async or cron execution's record goes when it succeeds: a function's name or a URL.
    #[arg(long, value_parser = crate::cmd::deploy::parse_destination)]
    pub on_success: Option<wafer_api::Destination>,
    /// Where it goes when it ends dead or expired: a function's name or a URL.
    #[arg(long, value_parser = crate::cmd::deploy::parse_destination)]
    pub on_failure: Option<wafer_api::Destination>,
    /// Run the function on this cron schedule (UTC), e.g. "*/5 * * * *" or, with seconds, "*/10 * * * * *".
    #[arg(long)]
    pub schedule: Option<String>,
    /// Let one instance of an http component serve up to N requests in turn (default 1: a fresh instance
    /// per request). Speeds up interpreters (Python, JavaScript); guest state then outlives a request.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub reuse: Option<u32>,
    /// A key-value store the function may open (repeatable).
    #[arg(long = "kv")]
    pub kv: Vec<String>,
    /// A SQLite database (by label) the function may open through Spin's sqlite interface (repeatable).
    #[arg(long = "sqlite")]
    pub sqlite: Vec<String>,
    /// A function (name or proxy-wasm id, or `*`) this one may call inside the server (repeatable).
    #[arg(long = "call")]
    pub call: Vec<String>,
    /// The most outbound HTTP requests in flight at once (default 16).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_outbound: Option<u32>,
    /// The timeout of each outbound request's connect and response waits, e.g. 5s (default 30s).
    #[arg(long, value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub outbound_timeout: Option<u64>,
    /// A container's argument, replacing the image's Cmd (repeat for each).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// A container job's stdout is a CGI response (headers, a blank line, the body).
    #[arg(long)]
    pub cgi: bool,
    /// A container's CPU in millicores (1000 = one core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..))]
    pub cpu: Option<u32>,
    /// The most processes a container may have at once (default 128).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Option<u32>,
    /// The user a container runs as, UID or UID:GID (default 65534).
    #[arg(long)]
    pub user: Option<String>,
    /// A container job: containers kept created and not started, so a call only starts one. A
    /// container serving HTTP: instances kept running however idle.
    #[arg(long)]
    pub min_warm: Option<u32>,
    /// The port a container's server listens on (it is told it in $PORT): the container serves
    /// HTTP, and wafer proxies requests to it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The most instances of a container serving HTTP at once (default 4).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_replicas: Option<u32>,
    /// How long a container serving HTTP may go without a request before it is stopped, e.g. 30s
    /// (default 60s).
    #[arg(long, value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub idle_timeout: Option<u64>,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function's name.
    pub name: String,
    /// The request body: a string, @FILE to read a file, or @- for stdin.
    #[arg(long, short)]
    pub data: Option<String>,
    /// Queue the invocation and print its execution id instead of waiting for the result.
    #[arg(long = "async")]
    pub run_async: bool,
    /// With --async: where the server posts the finished execution.
    #[arg(long, requires = "run_async")]
    pub callback: Option<String>,
    /// Call this alias or version instead of `live`.
    #[arg(long)]
    pub qualifier: Option<String>,
    /// With --async: a key that makes a repeated submission (within a day) the same execution.
    #[arg(long, requires = "run_async")]
    pub idempotency_key: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}
