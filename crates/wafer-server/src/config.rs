//! Server configuration, built once at start-up by the binary and passed down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wafer_api::{EffectiveLimits, FunctionConfig};
use wafer_engine::{EngineOptions, FunctionDefaults};

/// Everything `wafer serve` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the database and module blobs live.
    pub data_dir: PathBuf,
    /// Limits for functions that do not set their own, and body caps.
    pub defaults: Defaults,
    /// The bearer token the management API (and private functions) require; `None` leaves them open,
    /// which is only allowed on a loopback address.
    pub token: Option<String>,
    /// The access key and secret key Lambda clients sign requests to `/2015-03-31` with (SigV4).
    pub aws_keys: Option<(String, String)>,
    /// The async queue, execution records and their retention.
    pub executions: ExecutionSettings,
    /// The shared database of a cluster; `None` keeps everything in the data directory's SQLite.
    pub database: Option<Database>,
    /// This node's id; `None` uses the one kept in the data directory (generated the first time).
    pub node_id: Option<String>,
    /// Where other nodes and operators reach this node (`host:port`); `None` is the listen address.
    pub advertise: Option<String>,
    /// How container functions reach containerd, and the largest image a deploy may upload.
    pub containers: crate::containers::ContainerSettings,
    /// Where the web console listens.
    pub console: ConsoleListen,
    /// How long a stop waits for requests in flight and running async attempts.
    pub grace: Duration,
    /// Where the key that seals secrets in the store comes from.
    pub secrets: wafer_store::KeySource,
}

/// How long a stop waits for requests in flight and running async attempts by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Where the web console (`/ui`) listens: on a listener of its own, never the one that serves
/// functions, so no function's page shares an origin with it (a page of the same origin could read
/// the token the console keeps, or call the API with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleListen {
    /// On the next port after the main listener's (a free one if that is taken, or when the main
    /// port is 0), at the same address.
    #[default]
    Beside,
    /// At this address.
    At(SocketAddr),
    /// Nowhere: `/ui` answers 404.
    Off,
}

impl std::str::FromStr for ConsoleListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            _ => s.parse().map(Self::At).map_err(|_| {
                format!("expected an address such as 127.0.0.1:8081, or `off`; got {s:?}")
            }),
        }
    }
}

/// A cluster's shared PostgreSQL database.
#[derive(Clone)]
pub struct Database {
    /// Its URL, password included: never logged or shown (see [`wafer_store::redact_url`]).
    pub url: String,
    /// CA certificates to trust for its TLS certificate, besides the system's.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &wafer_store::redact_url(&self.url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// How async executions run, and how long execution records (and the audit log) are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionSettings {
    /// Queue workers: the most async and cron executions running at once.
    pub workers: usize,
    /// Finished executions kept per function (the newest).
    pub retain_per_function: u64,
    /// Finished executions are deleted after this long.
    pub retain: Duration,
    /// Dead letters (executions that ended `dead` or `expired`, kept with their request so they can
    /// be retried) kept per function.
    pub retain_dead_per_function: u64,
    /// Dead letters are deleted after this long.
    pub retain_dead: Duration,
    /// Entries of the audit log are deleted after this long.
    pub retain_audit: Duration,
    /// Bytes of guest log kept per execution.
    pub max_log_bytes: usize,
    /// Bytes of output (response body, stdout) kept per async, cron or command execution.
    pub max_output_bytes: usize,
    /// Hosts callbacks may be posted to (besides a function's own `allowed_outbound_hosts`).
    pub callback_hosts: Vec<String>,
    /// How long a node's claim on a running execution (or a callback it posts) holds without renewal:
    /// when its node dies, another runs it again after this long. Renewed every third of it.
    pub lease: Duration,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            workers: 8,
            retain_per_function: 1000,
            retain: Duration::from_secs(7 * 24 * 3600),
            retain_dead_per_function: 10_000,
            retain_dead: Duration::from_secs(14 * 24 * 3600),
            retain_audit: Duration::from_secs(90 * 24 * 3600),
            max_log_bytes: 64 * 1024,
            max_output_bytes: 1024 * 1024,
            callback_hosts: Vec::new(),
            lease: Duration::from_secs(30),
        }
    }
}

/// Server-wide defaults and caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// The limits of functions that do not set their own, and whether the engine meters fuel (so
    /// functions may set `fuel`).
    pub function: FunctionDefaults,
    /// The largest module a deploy accepts.
    pub max_module_bytes: usize,
    /// The most instances running at once, over all functions.
    pub max_instances: usize,
    /// How long a call waits for a slot of a function at its `max_concurrency`, in milliseconds.
    pub queue_wait_ms: u64,
    /// Whether instances come from the pooling allocator (slots for `max_instances` running and
    /// `max_idle` kept instances, reserved at start) rather than being allocated one by one.
    pub pooling: bool,
    /// The most instances kept idle for functions that set `reuse`, over all functions.
    pub max_idle: usize,
    /// The most a key-value store may hold (keys plus values), in bytes.
    pub kv_store_bytes: u64,
    /// The most compiled code kept loaded; past it, the modules called least recently are dropped
    /// and loaded from disk again on their next call.
    pub code: crate::code::CodeBudget,
    /// The most the compile cache (`compile-cache.db` in the data directory: the machine code of single
    /// wasm functions, reused by later compiles) may hold, in bytes; 0 turns it off.
    pub compile_cache_bytes: u64,
    /// The largest module first compiled by the baseline compiler, in bytes; 0 turns the baseline tier
    /// off (see [`wafer_engine::Engine::compile_baseline`]).
    pub baseline_limit: usize,
}

/// The largest module compiled by the baseline compiler first unless told otherwise: small functions
/// (C, Rust, Go, most handlers) answer within milliseconds of their deploy. Larger ones, interpreters
/// built into components, take the optimizing compiler at once: its compile cache makes a second app
/// of the same runtime compile faster than the baseline compiler would.
pub const DEFAULT_BASELINE_LIMIT: usize = 4 << 20;

impl Default for Defaults {
    fn default() -> Self {
        Self {
            function: FunctionDefaults::default(),
            max_module_bytes: 256 * 1024 * 1024,
            max_instances: 1000,
            queue_wait_ms: 1000,
            pooling: true,
            max_idle: 64,
            kv_store_bytes: 64 * 1024 * 1024,
            code: crate::code::CodeBudget::default(),
            compile_cache_bytes: wafer_engine::CompileCache::DEFAULT_BUDGET,
            baseline_limit: DEFAULT_BASELINE_LIMIT,
        }
    }
}

impl Defaults {
    /// The limits of a function: its own settings where it has them, these defaults for the rest.
    pub fn effective(&self, config: &FunctionConfig) -> EffectiveLimits {
        self.function.effective(config)
    }

    /// How the engine is set up. The pool has room for every running and every kept instance, plus a
    /// quarter more: an instance's slot is freed a moment after its admission permit.
    pub fn engine_options(&self) -> EngineOptions {
        let slots = self.max_instances + self.max_idle + self.max_instances / 4;
        EngineOptions {
            fuel: self.function.fuel,
            pool: self
                .pooling
                .then(|| u32::try_from(slots).unwrap_or(u32::MAX)),
            max_idle: self.max_idle,
            compile_cache: None,
            baseline_limit: self.baseline_limit,
        }
    }
}

impl ServerConfig {
    /// A configuration with default limits.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            defaults: Defaults::default(),
            token: None,
            aws_keys: None,
            executions: ExecutionSettings::default(),
            database: None,
            node_id: None,
            advertise: None,
            containers: Default::default(),
            console: ConsoleListen::Beside,
            grace: DEFAULT_GRACE,
            secrets: wafer_store::KeySource::DataDir,
        }
    }
}
