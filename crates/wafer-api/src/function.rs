//! Functions, their versions and the configuration given at deploy.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// How a function is invoked; detected from the binary at deploy unless forced in [`FunctionConfig::kind`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A component exporting `wasi:http/incoming-handler@0.2.x`; the HTTP request is handed over as is.
    Http,
    /// A WASI preview1 module with `_start`, run as a CGI program (WAGI).
    Wagi,
    /// A `wasi:cli/run` component or a `_start` module, run as a job: stdin in; exit code and output out.
    Command,
    /// A core module exporting `proxy_abi_version_0_2_*` (a proxy-wasm filter, as Layotto's FaaS runs
    /// them), driven through its HTTP context callbacks.
    ProxyWasm,
    /// An OCI image run by containerd and runc: a fresh container per request (a *job*, the default),
    /// or containers serving HTTP on a port (`port`).
    Container,
}

impl Kind {
    /// The name used in configuration and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Wagi => "wagi",
            Kind::Command => "command",
            Kind::ProxyWasm => "proxy-wasm",
            Kind::Container => "container",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Kind::Http),
            "wagi" => Ok(Kind::Wagi),
            "command" => Ok(Kind::Command),
            "proxy-wasm" => Ok(Kind::ProxyWasm),
            "container" => Ok(Kind::Container),
            other => Err(format!(
                "unknown kind `{other}`: expected http, wagi, command, proxy-wasm or container"
            )),
        }
    }
}

/// The configuration a function version is deployed with (the `config` part of a deploy).
///
/// Unknown fields are refused so that a typo never passes silently. Absent fields take the server's defaults
/// when the function runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Forces the kind instead of detecting it from the binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Extra HTTP paths the function is mounted at, besides `/fn/{name}`; each also covers its sub-paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Environment variables the guest sees; nothing of the host's environment is passed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Linear memory cap in MiB for one invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Wall-clock limit of one invocation in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Fuel (roughly, instructions) one invocation may use; needs a server started with `--fuel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The largest request body handed to the function, in bytes (413 past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// The largest answer the function may give, in bytes: a WAGI response, an http body, a command's stdout
    /// (502 past it for WAGI and http, truncated and flagged for commands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
    /// Hosts outbound HTTP may reach: `host`, `host:port`, `*.domain[:port]`, optionally with
    /// `http://`/`https://`. Loopback and private addresses need an exact entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_outbound_hosts: Vec<String>,
    /// The most invocations of this function that run at once; further calls wait briefly, then get 429.
    /// For a container serving HTTP (`port`), the requests one instance takes at once (default 16), so
    /// the function takes `max_concurrency × max_replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Whether calling the function over `/fn` and its routes needs the server's API token too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// How many times an async or cron execution is tried before it is marked `dead` (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The wait before the first retry of a failed async execution; it doubles with every further
    /// attempt (default 1000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// How long an async execution may wait in the queue (from its submission, or from its retry or
    /// redrive) before it ends `expired` without running; unlimited by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_age_ms: Option<u64>,
    /// The most async executions of the function that may wait in the queue: past it, an async
    /// submission gets 429 and nothing is stored. Unlimited by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u64>,
    /// Where the record of an async or cron execution that succeeded is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Destination>,
    /// Where the record of an async or cron execution that ended `dead` or `expired` is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Destination>,
    /// A cron expression (UTC) on which the function runs as a `cron` execution: five fields
    /// (`min hour day month weekday`), six with seconds first, or seven with seconds first and a year
    /// last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How many requests one instance of an `http` function may serve, one after another, before it is
    /// dropped (default 1: a fresh instance per request). Worth it for components that start a language
    /// runtime (Python, JavaScript, .NET); state the guest keeps in memory then outlives a request, but
    /// never reaches another function or version, and an instance that trapped or timed out is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<u32>,
    /// The key-value stores the function may open (wasi:keyvalue, Layotto's `proxy_get_state`); none by
    /// default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_value_stores: Vec<String>,
    /// The SQLite databases it may open by label (Spin's `sqlite_databases`): each label is one database
    /// file in the node's data directory, shared by every function granted it; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sqlite_databases: Vec<String>,
    /// The functions it may call inside the process (by name, or a proxy-wasm id; `*` for any), through
    /// `http://{name}.fn.internal/` or Layotto's `proxy_invoke_service`; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_functions: Vec<String>,
    /// The most outbound HTTP requests it may have in flight at once (default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_outbound: Option<u32>,
    /// How long an outbound request may wait to connect, for its response to begin, and between
    /// response frames (default 30000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_timeout_ms: Option<u64>,
    /// A container function's image: `oci://REGISTRY/REPOSITORY[:TAG][@DIGEST]` to pull, or left out
    /// when the image is uploaded as a tarball. The server stores the version with the digest it
    /// resolved (`…@sha256:…`, or `sha256:…` for a tarball), so a version always names one exact image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A container's arguments, replacing the image's `Cmd` (after its `Entrypoint`, as `docker run
    /// IMAGE ARGS…` does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Whether a container job's stdout is a CGI response (headers, a blank line, the body) rather than
    /// output for the job reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cgi: bool,
    /// The port a container serving HTTP listens on (it is also told it in `$PORT`); without one, a
    /// container function is a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A container's CPU, in millicores (1000 = one core), enforced as a CFS quota; unlimited by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// The most processes and threads a container may have at once (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// The user a container runs as, `UID` or `UID:GID` (default 65534, `nobody`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The most containers of an HTTP container function running at once (default 4); each takes up to
    /// `max_concurrency` requests at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
    /// How long an HTTP container may go without a request before it is stopped (default 60000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// For a container job, how many containers are kept created and not started, so a request only
    /// has to start one; for a container serving HTTP, how many instances are kept running however
    /// idle (at most `max_replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_warm: Option<u32>,
}

/// Where a finished execution's record goes: another function, as a new async execution (trigger
/// `destination`, the record as its JSON body), or a URL, as a POST (its host allowed like a
/// callback's). Delivered at least once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// A function, by name.
    Function(String),
    /// An `http://` or `https://` URL.
    Url(String),
}

/// The alias every unqualified call uses; it cannot be deleted, and a deploy moves it.
pub const LIVE: &str = "live";

/// Where an alias sends calls: to `version`, and to each version in `weights` that share of them
/// (the body of `PUT /v1/functions/{name}/aliases/{alias}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The version that takes the calls no weight claims.
    pub version: u32,
    /// A second version and the share of calls it takes, from 0 to 1: `{"4": 0.1}` sends one call in
    /// ten to version 4 (a canary). At most one entry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, f64>)]
    pub weights: BTreeMap<u32, f64>,
}

impl Eq for Alias {}

impl Alias {
    /// An alias sending every call to `version`.
    pub fn to(version: u32) -> Self {
        Self {
            version,
            weights: BTreeMap::new(),
        }
    }

    /// The version a call goes to, given `roll`, a number drawn uniformly from `[0, 1)` for it.
    pub fn pick(&self, roll: f64) -> u32 {
        let mut edge = 0.0;
        for (&version, &weight) in &self.weights {
            edge += weight;
            if roll < edge {
                return version;
            }
        }
        self.version
    }

    /// Every version the alias may send a call to.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.version).chain(self.weights.keys().copied())
    }

    /// Checks the shape: at most two versions, weights in `[0, 1]`, the weighted version not the
    /// alias's own.
    pub fn check(&self) -> Result<(), String> {
        if self.weights.len() > 1 {
            return Err("an alias splits calls between at most two versions: give at most one                         weight"
                .into());
        }
        for (&version, &weight) in &self.weights {
            if !(0.0..=1.0).contains(&weight) {
                return Err(format!(
                    "the weight of version {version} is {weight}: weights are from 0 to 1"
                ));
            }
            if version == self.version {
                return Err(format!(
                    "version {version} is the alias's own version: weight another one"
                ));
            }
        }
        Ok(())
    }
}

/// One alias of a function, as `GET /v1/functions/{name}/aliases` lists them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AliasInfo {
    /// The alias's name (`live` is the one unqualified calls use).
    pub name: String,
    /// The version that takes the calls no weight claims.
    pub version: u32,
    /// A second version and the share of calls it takes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, f64>)]
    pub weights: BTreeMap<u32, f64>,
}

impl AliasInfo {
    /// The alias `name` sending calls as `target` does.
    pub fn new(name: &str, target: &Alias) -> Self {
        Self {
            name: name.to_string(),
            version: target.version,
            weights: target.weights.clone(),
        }
    }
}

impl Eq for AliasInfo {}

/// The body of `GET /v1/functions/{name}/aliases`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AliasList {
    /// Every alias, `live` among them, by name.
    pub aliases: Vec<AliasInfo>,
}

/// A deployed function as the API lists it: its live version and that version's details.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct FunctionInfo {
    /// The function's name, unique on the server.
    pub name: String,
    /// The version that answers calls (the `live` alias's version).
    pub live_version: u32,
    /// A canary on all traffic: the share of unqualified calls another version takes (the `live`
    /// alias's weights).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = BTreeMap<String, f64>)]
    pub live_weights: BTreeMap<u32, f64>,
    /// The newest version number deployed.
    pub latest_version: u32,
    /// The kind of the live version.
    pub kind: Kind,
    /// The configuration of the live version.
    pub config: FunctionConfig,
    /// The SHA-256 digest of the live version's module, hex.
    pub digest: String,
    /// The limits its invocations run under: its own settings, the server's defaults for the rest.
    #[serde(default)]
    pub limits: EffectiveLimits,
    /// When the function was first deployed (RFC 3339, UTC).
    pub created_at: String,
    /// When the live version last changed (RFC 3339, UTC).
    pub updated_at: String,
}

impl Eq for FunctionInfo {}

/// The limits a function's invocations run under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct EffectiveLimits {
    /// Linear memory cap, MiB.
    pub memory_mb: u64,
    /// Wall-clock limit, milliseconds.
    pub timeout_ms: u64,
    /// Largest request body, bytes.
    pub max_request_bytes: u64,
    /// Largest answer, bytes.
    pub max_response_bytes: u64,
    /// Invocations at once, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// One immutable version of a function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct VersionInfo {
    /// The function's name.
    pub function: String,
    /// The version number, counted from 1.
    pub version: u32,
    /// The detected or forced kind.
    pub kind: Kind,
    /// The configuration deployed with this version.
    pub config: FunctionConfig,
    /// The SHA-256 digest of the module, hex.
    pub digest: String,
    /// The module's size in bytes.
    pub size: u64,
    /// When the version was deployed (RFC 3339, UTC).
    pub created_at: String,
    /// The SHA-256 digest of the read-only files it was deployed with (a tar its instances see as
    /// `/`), when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<String>,
    /// Whether this version is the `live` alias's version.
    pub live: bool,
}

/// The body of `POST /v1/functions/{name}/rollback`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to make live again.
    pub version: u32,
}

/// The body of `GET /v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct FunctionList {
    /// Every function, by name.
    pub functions: Vec<FunctionInfo>,
}

/// The body of `GET /v1/functions/{name}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct VersionList {
    /// Every version, oldest first.
    pub versions: Vec<VersionInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_is_a_function_or_a_url() {
        let c: FunctionConfig = serde_json::from_str(
            r#"{"on_success": {"function": "next"}, "on_failure": {"url": "https://h/x"}}"#,
        )
        .unwrap();
        assert_eq!(c.on_success, Some(Destination::Function("next".into())));
        assert_eq!(c.on_failure, Some(Destination::Url("https://h/x".into())));
        assert!(serde_json::from_str::<Destination>(r#"{"queue": "x"}"#).is_err());
        assert!(serde_json::from_str::<Destination>(r#"{"function": "a", "url": "b"}"#).is_err());
    }

    #[test]
    fn an_alias_picks_by_its_weights() {
        let alias: Alias =
            serde_json::from_str(r#"{"version": 3, "weights": {"4": 0.1}}"#).unwrap();
        assert_eq!(alias.pick(0.0), 4);
        assert_eq!(alias.pick(0.099), 4);
        assert_eq!(alias.pick(0.1), 3);
        assert_eq!(alias.pick(0.99), 3);
        assert_eq!(Alias::to(2).pick(0.0), 2);
        assert!(alias.check().is_ok());
        let two: Alias =
            serde_json::from_str(r#"{"version": 3, "weights": {"4": 0.1, "5": 0.1}}"#).unwrap();
        assert!(two.check().is_err());
        let over: Alias = serde_json::from_str(r#"{"version": 3, "weights": {"4": 1.5}}"#).unwrap();
        assert!(over.check().is_err());
        let own: Alias = serde_json::from_str(r#"{"version": 3, "weights": {"3": 0.5}}"#).unwrap();
        assert!(own.check().is_err());
    }

    #[test]
    fn config_refuses_unknown_fields() {
        let err = serde_json::from_str::<FunctionConfig>(r#"{"memroy_mb": 64}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn config_round_trips_with_kind() {
        let c: FunctionConfig =
            serde_json::from_str(r#"{"kind":"wagi","routes":["/hi"],"env":{"A":"1"}}"#).unwrap();
        assert_eq!(c.kind, Some(Kind::Wagi));
        assert_eq!(serde_json::to_value(&c).unwrap()["kind"], "wagi");
    }
}
