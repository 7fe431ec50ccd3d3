//! Bearer-token authentication of the management API and of private functions.
//!
//! With a token configured, `/v1/*` and `/metrics` need `Authorization: Bearer <token>`; `/healthz` and
//! `/fn/*` stay open except for functions deployed with `private: true`. Without a token the server only
//! listens on loopback (see [`crate::serve`]), so only local users reach it. The router applies this
//! check to the management API; the invocation core applies it to private functions.
//!
//! A browser attaches nothing of the token to a request another site's page makes, but a tokenless
//! server would still take it: a page anywhere could deploy a function with a form post to
//! `127.0.0.1`. So a management request that changes state is refused when the browser says it comes
//! from another origin ([`check_same_origin`]). Clients that are not browsers send neither header and
//! are not affected.

use crate::error::Error;
use http::header::{AUTHORIZATION, HOST, ORIGIN};
use http::{HeaderMap, Method};

/// Whether `headers` carry `token` (always true when the server has none).
pub fn check(token: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
    let Some(token) = token else {
        return Ok(());
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(Error::Unauthorized("the bearer token is not valid".into())),
        None => Err(Error::Unauthorized(
            "this server needs `Authorization: Bearer <token>` (the CLI sends --token or WAFER_TOKEN)"
                .into(),
        )),
    }
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
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
