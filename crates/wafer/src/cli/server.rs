//! The arguments of the commands that run on the node itself rather than through the API: the server,
//! the node agent, and backups of a node's data.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The Unix socket shims connect to; made root's alone (mode 0600).
    #[arg(long, env = "WAFER_NODE_SOCKET", default_value = wafer_node::protocol::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Where compiled modules are kept, so a restarted agent loads them instead of compiling.
    #[arg(long, env = "WAFER_NODE_CACHE", default_value = wafer_node::agent::DEFAULT_CACHE)]
    pub cache: PathBuf,
    /// Allocate every instance on its own instead of from the pooling allocator's reserved slots.
    #[arg(long, env = "WAFER_NO_POOLING")]
    pub no_pooling: bool,
    /// Instance slots of the pooling allocator, shared by every container on the node (default 1000).
    #[arg(long, env = "WAFER_POOL", value_parser = clap::value_parser!(u32).range(1..))]
    pub pool: Option<u32>,
    /// The most instances kept idle for functions that set `reuse`, over all containers (default 64).
    #[arg(long, env = "WAFER_MAX_IDLE")]
    pub max_idle: Option<u32>,
    /// Largest wasm binary a container may hand the agent, e.g. 256MiB.
    #[arg(long, env = "WAFER_MAX_MODULE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_module: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML file of server settings (the names of these flags, in snake_case); flags and WAFER_*
    /// variables override it. Defaults to ./wafer.toml when that exists.
    #[arg(long, env = "WAFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port) [default: 127.0.0.1:8080].
    #[arg(long, env = "WAFER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the web console listens, or `off` [default: the port after --listen's, or a free one].
    /// It has a listener of its own so that no function's page shares its origin.
    #[arg(long, env = "WAFER_CONSOLE_LISTEN")]
    pub console_listen: Option<wafer_server::ConsoleListen>,
    /// Directory for the database and module blobs [default: ./wafer-data].
    #[arg(long, env = "WAFER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Default memory cap of an invocation, e.g. 128MiB.
    #[arg(long, env = "WAFER_MEMORY", value_parser = crate::cmd::deploy::parse_memory_mb)]
    pub memory: Option<u64>,
    /// Default timeout of an invocation, e.g. 30s.
    #[arg(long, env = "WAFER_TIMEOUT", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub timeout: Option<u64>,
    /// Largest request body handed to a function, e.g. 16MiB.
    #[arg(long, env = "WAFER_MAX_BODY", value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_body: Option<u64>,
    /// Largest answer a function may give (WAGI response, http body, command stdout), e.g. 16MiB.
    #[arg(long, env = "WAFER_MAX_RESPONSE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_response: Option<u64>,
    /// The most instances running at once over all functions; further calls get 503.
    #[arg(long, env = "WAFER_MAX_INSTANCES", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instances: Option<u32>,
    /// How long a call waits for a function at its concurrency limit before 429, e.g. 1s.
    #[arg(long, env = "WAFER_QUEUE_WAIT", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub queue_wait: Option<u64>,
    /// Meter fuel so functions may set `fuel` (costs every guest some speed).
    #[arg(long, env = "WAFER_FUEL")]
    pub fuel: bool,
    /// Allocate every instance on its own instead of from the pooling allocator's reserved slots.
    #[arg(long, env = "WAFER_NO_POOLING")]
    pub no_pooling: bool,
    /// The most instances kept idle for functions that set `reuse`, over all functions (default 64).
    #[arg(long, env = "WAFER_MAX_IDLE")]
    pub max_idle: Option<u32>,
    /// The most a key-value store may hold (keys plus values), e.g. 64MiB.
    #[arg(long, env = "WAFER_KV_STORE_SIZE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub kv_store_size: Option<u64>,
    /// The most compiled code kept in memory, e.g. 512MiB (default 1GiB); past it, the modules called
    /// least recently are dropped and loaded from disk again on their next call.
    #[arg(long, env = "WAFER_CODE_CACHE_SIZE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub code_cache_size: Option<u64>,
    /// The most modules whose compiled code is kept in memory (default 10000); each takes a few of the
    /// process's memory maps, which the kernel caps (`vm.max_map_count`).
    #[arg(long, env = "WAFER_CODE_CACHE_MODULES", value_parser = clap::value_parser!(u32).range(1..))]
    pub code_cache_modules: Option<u32>,
    /// The most the compile cache may hold on disk, e.g. 256MiB (default 1GiB; 0 turns it off): the
    /// machine code of single wasm functions, so a deploy compiles only functions no earlier deploy had.
    #[arg(long, env = "WAFER_COMPILE_CACHE_SIZE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub compile_cache_size: Option<u64>,
    /// The largest module first compiled by the baseline compiler, e.g. 1MiB (default 4MiB; 0 turns
    /// it off): such a module answers within milliseconds of its deploy, with slower code, until the
    /// optimizing compile that follows in the background takes over.
    #[arg(long, env = "WAFER_BASELINE_COMPILE_LIMIT", value_parser = crate::cmd::deploy::parse_bytes)]
    pub baseline_compile_limit: Option<u64>,
    /// Require `Authorization: Bearer TOKEN` (or an API key) on the management API and on private
    /// functions. Without it, clients on the server's own host may do everything, and clients on other
    /// hosts need an API key (`wafer keys create`).
    #[arg(long, env = "WAFER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Largest module a deploy accepts, e.g. 256MiB.
    #[arg(long, env = "WAFER_MAX_MODULE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_module: Option<u64>,
    /// The access key AWS clients sign Lambda API calls (/2015-03-31) with; needs --aws-secret-key.
    #[arg(long, env = "WAFER_AWS_ACCESS_KEY")]
    pub aws_access_key: Option<String>,
    /// The secret key of --aws-access-key (best given in the environment).
    #[arg(long, env = "WAFER_AWS_SECRET_KEY", hide_env_values = true)]
    pub aws_secret_key: Option<String>,
    /// Queue workers: the most async and cron executions running at once (default 8).
    #[arg(long, env = "WAFER_WORKERS", value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: Option<u32>,
    /// Finished executions kept per function, newest first (default 1000).
    #[arg(long, env = "WAFER_RETAIN")]
    pub retain: Option<u64>,
    /// How long finished executions are kept, e.g. 7d or 12h (default 7d).
    #[arg(long, env = "WAFER_RETAIN_FOR", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub retain_for: Option<u64>,
    /// Dead or expired executions kept per function, with their requests for a retry (default 10000).
    #[arg(long, env = "WAFER_RETAIN_DEAD")]
    pub retain_dead: Option<u64>,
    /// How long dead or expired executions are kept, e.g. 14d (default 14d).
    #[arg(long, env = "WAFER_RETAIN_DEAD_FOR", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub retain_dead_for: Option<u64>,
    /// How long the audit log keeps its entries, e.g. 365d (default 90d).
    #[arg(long, env = "WAFER_RETAIN_AUDIT_FOR", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub retain_audit_for: Option<u64>,
    /// How long a node's claim on a running async execution holds without renewal, e.g. 30s: after a
    /// node dies, another runs its executions again this long after its last renewal.
    #[arg(long, env = "WAFER_QUEUE_LEASE", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub queue_lease: Option<u64>,
    /// How long a stop (SIGTERM, Ctrl-C) waits for requests in flight and running async attempts, e.g.
    /// 30s (the default); attempts still running then go back to the queue without counting.
    #[arg(long, env = "WAFER_GRACE", value_parser = crate::cmd::deploy::parse_timeout_ms)]
    pub grace: Option<u64>,
    /// A file holding the key secrets are sealed with in the store: 32 bytes as 64 hex digits or base64
    /// (`openssl rand -hex 32`). WAFER_SECRETS_KEY may hold the key itself instead. Every node of a
    /// cluster needs the same key [default: generated once and kept in the data directory as
    /// secrets.key].
    #[arg(long, env = "WAFER_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// The key secrets are sealed with, itself (see --secrets-key-file); best given in the environment.
    #[arg(long, env = "WAFER_SECRETS_KEY", hide = true, hide_env_values = true)]
    pub secrets_key: Option<String>,
    /// Run as a node of a cluster on this PostgreSQL database (postgres://USER:PASSWORD@HOST/DB; add
    /// ?sslmode=require for TLS) instead of the embedded SQLite database in the data directory.
    #[arg(long, env = "WAFER_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// A PEM file of CA certificates to trust for the database's TLS certificate, besides the system's.
    #[arg(long, env = "WAFER_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// This node's id in the cluster [default: generated once and kept in the data directory].
    #[arg(long, env = "WAFER_NODE_ID")]
    pub node_id: Option<String>,
    /// The address other nodes and operators reach this node at, host:port, as `wafer nodes` lists it
    /// [default: the listen address].
    #[arg(long, env = "WAFER_ADVERTISE")]
    pub advertise: Option<String>,
    /// A host async callbacks may be posted to, besides each function's own outbound hosts (repeatable).
    #[arg(
        long = "callback-host",
        env = "WAFER_CALLBACK_HOSTS",
        value_delimiter = ','
    )]
    pub callback_hosts: Vec<String>,
    /// containerd's socket, for container functions [default: /run/containerd/containerd.sock].
    #[arg(long, env = "WAFER_CONTAINERD")]
    pub containerd_socket: Option<PathBuf>,
    /// Largest container image a deploy uploads or pulls, e.g. 1GiB (default 1GiB).
    #[arg(long, env = "WAFER_MAX_IMAGE", value_parser = crate::cmd::deploy::parse_bytes)]
    pub max_image: Option<u64>,
    /// A registry reached over plain HTTP for oci:// container images, host[:port] (repeatable;
    /// localhost and 127.0.0.1 always are).
    #[arg(
        long = "plain-http-registry",
        env = "WAFER_PLAIN_HTTP_REGISTRIES",
        value_delimiter = ','
    )]
    pub plain_http_registries: Vec<String>,
    /// The user name wafer logs in to registries with when it pulls container images.
    #[arg(long, env = "WAFER_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// The password for --registry-user (best given in the environment).
    #[arg(long, env = "WAFER_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The directory to write the backup to; it must not exist yet, or be empty.
    pub dir: PathBuf,
    /// The server's config file, for its data directory [default: ./wafer.toml when that exists].
    #[arg(long, env = "WAFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory to back up; its server may be running [default: ./wafer-data].
    #[arg(long, env = "WAFER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// A cluster's database: its state is backed up with PostgreSQL's own tools (this says how).
    #[arg(long, env = "WAFER_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (a directory `wafer backup` wrote).
    pub dir: PathBuf,
    /// The server's config file, for its data directory [default: ./wafer.toml when that exists].
    #[arg(long, env = "WAFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory to restore into: new, or empty, and no server running on it
    /// [default: ./wafer-data].
    #[arg(long, env = "WAFER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}
