//! Outbound connections under a per-function allowlist: HTTP (`wasi:http/outgoing-handler`), and the
//! Redis and PostgreSQL clients of Spin's interfaces.
//!
//! A function reaches only hosts in its `allowed_outbound_hosts`. An entry is `[scheme://]host[:port]`:
//! the scheme is `http`, `https`, `redis`, `postgres` or `*` (any; left out, any too); the host is a
//! name, an address, `*.domain` (any subdomain) or `*` (any host); the port is a number, a range
//! `8000-8999` or `*` (left out, any). Spin's grammar (`https://api.example.com`, `redis://*:6379`,
//! `*://*:*`) is a subset. The exact host `self` (`http://self`) is no network host: a request to it
//! goes to the function mounted at its path (`host/mod.rs`). Everything else is refused with
//! `HTTP-request-denied`. On top of that, a target whose host resolves to a loopback, link-local,
//! private or otherwise non-public address is refused with `destination-IP-prohibited` unless an exact
//! (not wildcard) entry names that host, so a wildcard can never be used to reach the host's own
//! network.
//!
//! Each function also has [`OutboundLimits`]: a cap on its connections in flight and a timeout for
//! connecting and for each wait on the response.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions};

/// The host through which a function calls the function mounted at a path of this server.
pub(crate) const SELF_HOST: &str = "self";

/// The schemes of what a function can connect to: HTTP, and Spin's Redis and PostgreSQL clients.
const SCHEMES: &[&str] = &["http", "https", "redis", "postgres"];

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The scheme it allows; `None` for any (left out, or `*`, kept for printing back).
    scheme: Option<String>,
    any_scheme_written: bool,
    host: HostPattern,
    /// The ports it allows, inclusive; `None` for any.
    ports: Option<(u16, u16)>,
    any_port_written: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This host exactly (lowercase).
    Exact(String),
    /// Any host ending in this suffix, which starts with `.`.
    Subdomains(String),
    /// Any host at all (`*`).
    Any,
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid outbound host {entry:?}: {why}");
        let (scheme, rest) = match entry.split_once("://") {
            Some(("*", rest)) => (None, rest),
            Some((scheme, rest)) if SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) => {
                (Some(scheme.to_ascii_lowercase()), rest)
            }
            Some(_) => {
                return Err(invalid(&format!(
                    "the scheme must be {} or `*`",
                    SCHEMES.join(", ")
                )))
            }
            None => (None, entry),
        };
        let any_scheme_written = scheme.is_none() && entry.contains("://");
        let (host, port) = split_host_port(rest).ok_or_else(|| invalid("bad port"))?;
        let any_port_written = port.as_deref() == Some("*");
        let ports = match port.as_deref() {
            None | Some("*") => None,
            Some(port) => Some(port_range(port).ok_or_else(|| invalid("bad port"))?),
        };
        let host = host.to_ascii_lowercase();
        let valid_label = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':')
        };
        let host = match host.strip_prefix("*.") {
            _ if host == "*" => HostPattern::Any,
            Some(domain) if valid_label(domain) => HostPattern::Subdomains(format!(".{domain}")),
            Some(_) => return Err(invalid("a wildcard must be followed by a domain")),
            None if valid_label(&host) && !host.contains('*') => HostPattern::Exact(host),
            None => return Err(invalid("expected host, host:port, *.domain or *")),
        };
        Ok(Self {
            scheme,
            any_scheme_written,
            host,
            ports,
            any_port_written,
        })
    }
}

/// A port (`443`) or an inclusive range (`8000-8999`).
fn port_range(port: &str) -> Option<(u16, u16)> {
    match port.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (low.parse().ok()?, high.parse().ok()?);
            (low <= high).then_some((low, high))
        }
        None => port.parse().ok().map(|p| (p, p)),
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Some(scheme) => write!(f, "{scheme}://")?,
            None if self.any_scheme_written => f.write_str("*://")?,
            None => {}
        }
        match &self.host {
            HostPattern::Exact(host) => f.write_str(host)?,
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}")?,
            HostPattern::Any => f.write_str("*")?,
        }
        match self.ports {
            Some((low, high)) if low == high => write!(f, ":{low}")?,
            Some((low, high)) => write!(f, ":{low}-{high}")?,
            None if self.any_port_written => f.write_str(":*")?,
            None => {}
        }
        Ok(())
    }
}

/// Splits `host[:port]` (IPv6 literals in brackets); `None` when what follows the host is not a port.
fn split_host_port(s: &str) -> Option<(String, Option<String>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port.to_string()),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), Some(port.to_string()))),
        None => Some((s.to_string(), None)),
    }
}

impl HostRule {
    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self
                .ports
                .is_none_or(|(low, high)| (low..=high).contains(&port))
            && match &self.host {
                HostPattern::Exact(exact) => exact == host,
                HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
                HostPattern::Any => true,
            }
    }

    fn is_exact(&self) -> bool {
        matches!(self.host, HostPattern::Exact(_))
    }
}

/// A function's outbound allowlist. Empty (the default) refuses everything.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    rules: Arc<[HostRule]>,
    limits: OutboundLimits,
}

/// How much outbound HTTP one function may have going: requests at once (across all its instances)
/// and how long each may wait to connect and for its response to begin.
#[derive(Debug, Clone)]
pub struct OutboundLimits {
    /// The time to connect, to the first byte of the response, and between its frames.
    pub timeout: Duration,
    /// Requests in flight at once; a further one waits (within `timeout`) for one to finish.
    slots: Arc<Semaphore>,
}

impl OutboundLimits {
    /// Limits of `max_concurrent` requests at once, each bounded by `timeout`.
    pub fn new(timeout: Duration, max_concurrent: u32) -> Self {
        Self {
            timeout,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1) as usize)),
        }
    }
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self::new(Duration::from_secs(30), 16)
    }
}

impl OutboundPolicy {
    /// Parses `allowed_outbound_hosts` entries.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let rules = entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<HostRule>, String>>()?;
        Ok(Self {
            rules: rules.into(),
            limits: OutboundLimits::default(),
        })
    }

    /// This policy under `limits`.
    pub fn with_limits(self, limits: OutboundLimits) -> Self {
        Self { limits, ..self }
    }

    /// A slot for one more request in flight, waiting up to the timeout for one to free up.
    pub(crate) async fn slot(&self) -> Result<OwnedSemaphorePermit, HttpError> {
        let wait = self.limits.slots.clone().acquire_owned();
        match tokio::time::timeout(self.limits.timeout, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                tracing::info!("outbound HTTP refused: too many requests in flight");
                Err(HttpError::ConnectionLimitReached)
            }
        }
    }

    /// The guest's request options, each timeout capped at the function's.
    pub(crate) fn bound(&self, options: Option<RequestOptions>) -> Option<RequestOptions> {
        let cap = |t: Option<Duration>| {
            Some(t.map_or(self.limits.timeout, |t| t.min(self.limits.timeout)))
        };
        let options = options.unwrap_or_default();
        Some(RequestOptions {
            connect_timeout: cap(options.connect_timeout),
            first_byte_timeout: cap(options.first_byte_timeout),
            between_bytes_timeout: cap(options.between_bytes_timeout),
        })
    }

    /// Whether this policy lets the server reach `uri` (for example to post a callback); the error says
    /// why not.
    pub async fn permits(&self, uri: &http::Uri) -> Result<(), String> {
        self.check(uri).await.map_err(|e| match e {
            HttpError::HttpRequestDenied => format!("{uri} is not an allowed host"),
            other => format!("{uri} cannot be reached: {other:?}"),
        })
    }

    /// Checks an outgoing request's target, resolving its host to refuse non-public addresses that no
    /// exact entry names.
    pub(crate) async fn check(&self, uri: &http::Uri) -> Result<(), HttpError> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        self.addresses(&scheme, host, port).await.map(drop)
    }

    /// The addresses of `host:port` this policy lets a request with `scheme` reach, for a proxy to
    /// connect to exactly what was checked; the error says why none.
    pub async fn resolve(
        &self,
        scheme: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, String> {
        let target = format!("{scheme}://{host}:{port}");
        match self.addresses(scheme, host, port).await {
            Ok(addresses) => Ok(addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect()),
            Err(HttpError::HttpRequestDenied) => Err(format!(
                "{target} is not in the function's allowed_outbound_hosts"
            )),
            Err(HttpError::DestinationIpProhibited) => Err(format!(
                "{target} resolves to a non-public address, which only an exact entry of \
                 allowed_outbound_hosts may reach"
            )),
            Err(other) => Err(format!("{target} cannot be reached: {other:?}")),
        }
    }

    /// A slot for one more outbound connection in flight, waiting up to the timeout for one to free
    /// up; `None` when none did.
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.slot().await.ok()
    }

    /// How long an outbound request may wait to connect and for each part of its response.
    pub fn timeout(&self) -> Duration {
        self.limits.timeout
    }

    /// Whether an entry names the host `self` (`http://self`): requests to it go to the function
    /// mounted at their path, as a Spin application's components call each other.
    pub(crate) fn allows_self(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(&r.host, HostPattern::Exact(host) if host == SELF_HOST))
    }

    /// Whether this policy allows anything at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    async fn addresses(
        &self,
        scheme: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<IpAddr>, HttpError> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let rule = self.rule_for(scheme, &host, port).ok_or_else(|| {
            tracing::info!(%scheme, %host, port, "outbound HTTP refused: host not in allowed_outbound_hosts");
            HttpError::HttpRequestDenied
        })?;
        let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| HttpError::DnsError {
                    rcode: Some(e.to_string()),
                    info_code: None,
                })?
                .map(|a| a.ip())
                .collect(),
        };
        decide(rule, &addresses).inspect_err(|_| {
            tracing::info!(%host, port, "outbound HTTP refused: resolves to a non-public address");
        })?;
        Ok(addresses)
    }

    /// The entry allowing this target, preferring an exact one.
    fn rule_for(&self, scheme: &str, host: &str, port: u16) -> Option<&HostRule> {
        let mut matching = self.rules.iter().filter(|r| r.matches(scheme, host, port));
        let first = matching.next()?;
        if first.is_exact() {
            return Some(first);
        }
        Some(matching.find(|r| r.is_exact()).unwrap_or(first))
    }
}

/// Allows a target whose addresses are all public, or any target an exact entry names.
fn decide(rule: &HostRule, addresses: &[IpAddr]) -> Result<(), HttpError> {
    if rule.is_exact() || addresses.iter().all(|ip| is_public(*ip)) {
        Ok(())
    } else {
        Err(HttpError::DestinationIpProhibited)
    }
}

/// Whether an address is on the public internet (not loopback, link-local, private, shared, multicast,
/// documentation or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (RFC 6598)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> OutboundPolicy {
        OutboundPolicy::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn entries_parse_and_print_back() {
        for entry in [
            "example.com",
            "example.com:8080",
            "*.example.com",
            "https://api.example.com:443",
            "127.0.0.1:9000",
            "[::1]:80",
            "redis://cache.test:6379",
            "*://*:*",
            "postgres://*:5432",
            "http://localhost:3000-3010",
            "*",
        ] {
            let rule: HostRule = entry.parse().unwrap();
            assert_eq!(rule.to_string(), entry.replace(['[', ']'], ""));
        }
        for bad in [
            "",
            "*.",
            "://x",
            "host:port",
            "ex*ample.com",
            "a b",
            "x:9-1",
            "x:1-",
        ] {
            assert!(bad.parse::<HostRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_listed_hosts_ports_and_schemes_match() {
        let p = policy(&["api.example.com", "*.cdn.test:8443", "https://secure.test"]);
        assert!(p.rule_for("https", "api.example.com", 443).is_some());
        assert!(p.rule_for("http", "api.example.com", 80).is_some());
        assert!(p.rule_for("https", "evil.com", 443).is_none());
        assert!(p.rule_for("https", "x.api.example.com", 443).is_none());
        assert!(p.rule_for("https", "img.cdn.test", 8443).is_some());
        assert!(p.rule_for("https", "img.cdn.test", 443).is_none());
        assert!(p.rule_for("https", "cdn.test", 8443).is_none());
        assert!(p.rule_for("https", "secure.test", 443).is_some());
        assert!(p.rule_for("http", "secure.test", 80).is_none());
        assert!(policy(&[]).rule_for("https", "example.com", 443).is_none());
    }

    #[test]
    fn spin_entries_fix_the_scheme_and_may_range_ports() {
        let p = policy(&["redis://cache.test:6379", "http://dev.test:3000-3010"]);
        assert!(p.rule_for("redis", "cache.test", 6379).is_some());
        assert!(p.rule_for("https", "cache.test", 6379).is_none());
        assert!(p.rule_for("redis", "cache.test", 6380).is_none());
        assert!(p.rule_for("http", "dev.test", 3005).is_some());
        assert!(p.rule_for("http", "dev.test", 3011).is_none());
        let any = policy(&["*://*:*"]);
        assert!(any.rule_for("postgres", "db.example.com", 5432).is_some());
        // `*` is a wildcard like any other: it never reaches a non-public address by itself.
        let rule = any.rule_for("redis", "127.0.0.1", 6379).unwrap();
        assert!(decide(rule, &["127.0.0.1".parse().unwrap()]).is_err());
        // Only an entry naming `self` reaches the server's own routes; no wildcard does.
        assert!(policy(&["http://self"]).allows_self());
        assert!(!any.allows_self() && !policy(&["*.self", "self.example.com"]).allows_self());
    }

    #[test]
    fn non_public_addresses_need_an_exact_entry() {
        let wildcard: HostRule = "*.internal.test".parse().unwrap();
        let exact: HostRule = "db.internal.test".parse().unwrap();
        let private: Vec<IpAddr> = [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for ip in &private {
            assert!(
                matches!(
                    decide(&wildcard, &[*ip]),
                    Err(HttpError::DestinationIpProhibited)
                ),
                "{ip}"
            );
            assert!(decide(&exact, &[*ip]).is_ok(), "{ip}");
        }
        let public: Vec<IpAddr> = vec![
            "93.184.216.34".parse().unwrap(),
            "2606:2800:220:1::1".parse().unwrap(),
        ];
        assert!(decide(&wildcard, &public).is_ok());
        // One private address among public ones is enough to refuse.
        assert!(decide(&wildcard, &[public[0], private[0]]).is_err());
    }
}
