//! Bearer-token authentication of the management API and of private functions.
//!
//! With a token configured, `/v1/*` and `/metrics` need `Authorization: Bearer <token>`; `/healthz` and
//! `/fn/*` stay open except for functions deployed with `private: true`. Without a token the server only
//! listens on loopback (see [`crate::serve`]), so only local users reach it. The router applies this
//! check to the management API; the invocation core applies it to private functions.

use crate::error::Error;
use http::header::AUTHORIZATION;
use http::HeaderMap;

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

/// Compares without an early exit, so the time taken does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
