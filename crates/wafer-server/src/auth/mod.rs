//! Who a request comes from, and what they may do: the server's token, API keys with scopes, and the
//! management API's same-origin rule for writes.
//!
//! - With a token configured, `/v1/*` and `/metrics` need `Authorization: Bearer <token>` or an API
//!   key; `/healthz` and `/fn/*` stay open except for functions deployed with `private: true`.
//! - Without a token, a client on the server's own host (loopback) may do everything, as it always
//!   could; a client elsewhere needs an API key. Until the first key exists, the management API and
//!   private functions serve loopback clients only.
//! - An API key (`keys.rs`, bearer `ID.SECRET`) may do what its scopes name (`scope.rs`): read,
//!   deploy or invoke functions whose names match a pattern, or everything (`admin`). The router
//!   checks the management API's routes, the invocation core private functions, the Lambda API its
//!   own calls.
//!
//! A browser attaches nothing of the token to a request another site's page makes, but a tokenless
//! server would still take it: a page anywhere could deploy a function with a form post to
//! `127.0.0.1`. So a management request that changes state is refused when the browser says it comes
//! from another origin ([`check_same_origin`]). Clients that are not browsers send neither header and
//! are not affected.

pub mod keys;
pub mod scope;

use crate::error::Error;
use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, Method};
pub use keys::{ActiveKey, Keys};
pub use scope::{Permission, Scope};
use std::net::SocketAddr;
use std::sync::Arc;

/// Who made a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client with the server's token: everything.
    Token,
    /// A loopback client of a server without a token: everything.
    Local,
    /// A client with an API key: what its scopes name.
    Key(Arc<ActiveKey>),
    /// A client without credentials on a server that needs them; why it is refused.
    Anonymous(&'static str),
}

impl Caller {
    /// Whether the caller may do `permission` to `name` (`None`: to every function at once).
    pub fn allows(&self, permission: Permission, name: Option<&str>) -> bool {
        match self {
            Caller::Token | Caller::Local => true,
            Caller::Key(key) => key.allows(permission, name),
            Caller::Anonymous(_) => false,
        }
    }

    /// [`Self::allows`], or why not: 401 without credentials, 403 for a key whose scopes do not reach.
    pub fn require(&self, permission: Permission, name: Option<&str>) -> Result<(), Error> {
        if self.allows(permission, name) {
            return Ok(());
        }
        match self {
            Caller::Anonymous(why) => Err(Error::Unauthorized((*why).to_string())),
            Caller::Key(key) => {
                let what = match (permission, name) {
                    (Permission::Admin, _) => "manage keys or read the audit log".to_string(),
                    (p, Some(name)) => format!("{} `{name}`", p.as_str()),
                    (p, None) => format!("{} every function", p.as_str()),
                };
                Err(Error::Forbidden(format!(
                    "API key {} may not {what}: its scopes are {}",
                    key.stored.id,
                    key.stored.scopes.join(", ")
                )))
            }
            Caller::Token | Caller::Local => Ok(()),
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        match self {
            Caller::Token => "token".into(),
            Caller::Local => "local".into(),
            Caller::Key(key) => format!("key:{}", key.stored.id),
            Caller::Anonymous(_) => "anonymous".into(),
        }
    }
}

/// Who a request with `headers` from `peer` is, on a server with `token` and `keys`. A bearer that is
/// neither the token nor a valid key is refused (401), and a key over its rate limit (429); a request
/// without one is [`Caller::Local`] or [`Caller::Anonymous`]. A request with no peer address was made
/// within the server (a function calling another), and counts as local.
pub async fn caller(
    keys: &Keys,
    token: Option<&str>,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
) -> Result<Caller, Error> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(bearer) = bearer {
        if token.is_some_and(|token| constant_time_eq(bearer.as_bytes(), token.as_bytes())) {
            return Ok(Caller::Token);
        }
        if let Some((id, secret)) = bearer.split_once('.') {
            if let Some(key) = keys.get(id).await? {
                let hash = wafer_store::key_hash(secret);
                if constant_time_eq(hash.as_bytes(), key.stored.hash.as_bytes()) {
                    return admit(key);
                }
            }
        }
        return Err(Error::Unauthorized(
            "the bearer token is not valid: it is neither the server's token nor an API key".into(),
        ));
    }
    let local = peer.is_none_or(|addr| addr.ip().to_canonical().is_loopback());
    if token.is_none() && local {
        return Ok(Caller::Local);
    }
    Ok(Caller::Anonymous(match token {
        Some(_) => {
            "this server needs `Authorization: Bearer <token or API key>` (the CLI sends --token or \
             WAFER_TOKEN)"
        }
        None if keys.any_valid() => {
            "a client on another host needs `Authorization: Bearer <API key>` (the CLI sends --token \
             or WAFER_TOKEN)"
        }
        None => {
            "this server has neither a token nor an API key, so it serves this only to its own host: \
             create a key there with `wafer keys create`"
        }
    }))
}

/// `key` as the caller, if it is valid now and within its rate limit.
pub fn admit(key: Arc<ActiveKey>) -> Result<Caller, Error> {
    key.check_valid(chrono::Utc::now().timestamp_millis())?;
    key.admit(std::time::Instant::now())?;
    Ok(Caller::Key(key))
}

/// Refuses a state-changing request (any method but GET, HEAD and OPTIONS) that a browser made from a
/// page of another origin: `Sec-Fetch-Site` other than `same-origin` or `none` (typed or bookmarked),
/// or, from browsers that do not send it, an `Origin` whose host is not the request's `Host`.
pub fn check_same_origin(method: &Method, headers: &HeaderMap) -> Result<(), Error> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let refuse = |from: &str| {
        Err(Error::CrossSite(format!(
            "a {method} from {from} is refused: the management API changes state only for requests \
             from its own origin (or from clients that are not browsers)"
        )))
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str().unwrap_or_default() {
            "same-origin" | "none" => Ok(()),
            other => refuse(&format!("a {other} page")),
        };
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    match (origin_host, host) {
        (Some(from), Some(host)) if from.eq_ignore_ascii_case(host) => Ok(()),
        _ => refuse(&format!("origin {origin:?}")),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn cross_site_writes_are_refused_and_everything_else_passes() {
        let post = Method::POST;
        let host = ("host", "127.0.0.1:8080");
        let passes = [
            headers(&[]),
            headers(&[host, ("sec-fetch-site", "same-origin")]),
            headers(&[host, ("sec-fetch-site", "none")]),
            headers(&[host, ("origin", "http://127.0.0.1:8080")]),
        ];
        for h in &passes {
            assert!(check_same_origin(&post, h).is_ok(), "{h:?}");
        }
        let refused = [
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[host, ("origin", "http://evil.example")]),
            headers(&[host, ("origin", "http://127.0.0.1:8081")]),
            headers(&[host, ("origin", "null")]),
            headers(&[("origin", "http://127.0.0.1:8080")]),
        ];
        for h in &refused {
            let refusal = check_same_origin(&Method::DELETE, h).unwrap_err();
            assert_eq!(refusal.status(), 403, "{h:?}");
        }
        // Reads are not refused: the token guards them, and a cross-site page cannot read the answer.
        assert!(check_same_origin(&Method::GET, &refused[0]).is_ok());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
