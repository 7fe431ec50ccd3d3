//! Verifying AWS Signature Version 4 on a request, as AWS SDKs and the AWS CLI sign them.
//!
//! The signature is computed again from what the request carries — its method, path, query, the
//! headers it lists as signed, and its body — with the one secret wafer knows for the access key it
//! names, and compared in constant time. Any region signs; the service is whatever the client named
//! (`lambda`). A request signed more than 15 minutes away from the server's clock is refused, as AWS
//! does, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// How far a request's signing time may be from the server's.
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The `Authorization` header is not a SigV4 one, or lacks a part.
    Malformed(String),
    /// The access key is not the server's.
    UnknownKey,
    /// The signature does not match, or the signing time is too far off.
    Invalid(String),
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header.
struct Authorization<'a> {
    access_key: &'a str,
    /// `DATE/REGION/SERVICE/aws4_request`.
    scope: &'a str,
    date: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse(header: &str) -> Result<Authorization<'_>, Refused> {
    let malformed = |what: &str| Refused::Malformed(format!("the Authorization header {what}"));
    let rest = header
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| malformed("is not AWS4-HMAC-SHA256"))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let credential = credential.ok_or_else(|| malformed("has no Credential"))?;
    let (access_key, scope) = credential
        .split_once('/')
        .ok_or_else(|| malformed("has a Credential without a scope"))?;
    let date = scope.split('/').next().unwrap_or_default();
    if scope.split('/').count() != 4 || !scope.ends_with("/aws4_request") {
        return Err(malformed(
            "has a Credential scope that is not DATE/REGION/SERVICE/aws4_request",
        ));
    }
    Ok(Authorization {
        access_key,
        scope,
        date,
        signed_headers: signed
            .ok_or_else(|| malformed("has no SignedHeaders"))?
            .split(';')
            .collect(),
        signature: signature.ok_or_else(|| malformed("has no Signature"))?,
    })
}

/// Percent-encodes `s` as SigV4 does: everything but `A-Z a-z 0-9 - _ . ~` (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The canonical query: every parameter decoded, encoded again, sorted by name and value.
fn canonical_query(query: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            (encode(&decode(k), false), encode(&decode(v), false))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` sequences decoded (a malformed one is kept as it is).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access key id the SigV4 `Authorization` header of a request names, so the caller can find its
/// secret.
pub fn access_key(headers: &http::HeaderMap) -> Result<String, Refused> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refused::Malformed("no Authorization header".into()))?;
    Ok(parse(header)?.access_key.to_string())
}

/// Checks the SigV4 signature of a request — `method`, `path` as received (still percent-encoded),
/// `query`, `headers`, `body` — against `keys` (access key, secret), at `now` (seconds since the epoch).
pub fn verify(
    keys: (&str, &str),
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), Refused> {
    let header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refused::Malformed("no Authorization header".into()))?;
    let auth = parse(header)?;
    if auth.access_key != keys.0 {
        return Err(Refused::UnknownKey);
    }
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Refused::Malformed("no X-Amz-Date header".into()))?;
    let signed_at = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| {
            Refused::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
        })?
        .and_utc()
        .timestamp();
    if (now - signed_at).abs() > MAX_SKEW_SECS || !amz_date.starts_with(auth.date) {
        return Err(Refused::Invalid(
            "the request was signed more than 15 minutes from the server's time".into(),
        ));
    }
    if !auth.signed_headers.contains(&"host") {
        return Err(Refused::Malformed(
            "the signed headers do not include host".into(),
        ));
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = match headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some(hash) => hash.to_string(),
        None => hex(&Sha256::digest(body)),
    };
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{payload}",
        encode(path, true),
        canonical_query(query),
        auth.signed_headers.join(";")
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        auth.scope,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", keys.1).into_bytes();
    for part in auth.scope.split('/') {
        key = hmac(&key, part);
    }
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(to_sign.as_bytes());
    let presented = (0..auth.signature.len() / 2)
        .map(|i| u8::from_str_radix(auth.signature.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| Refused::Malformed("the Signature is not hex".into()))?;
    mac.verify_slice(&presented).map_err(|_| {
        Refused::Invalid(
            "the request signature does not match: check the secret key and signing method".into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own example ("get-vanilla" of the SigV4 test suite).
    #[test]
    fn the_documented_example_verifies_and_a_changed_request_does_not() {
        let keys = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .unwrap(),
        );
        let at = 1_440_938_160; // 2015-08-30T12:36:00Z
        assert_eq!(verify(keys, "GET", "/", None, &headers, b"", at), Ok(()));
        assert!(matches!(
            verify(keys, "POST", "/", None, &headers, b"", at),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            verify(keys, "GET", "/", Some("a=b"), &headers, b"", at),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(
            verify(keys, "GET", "/", None, &headers, b"", at + 3600),
            Err(Refused::Invalid(_))
        ));
        assert_eq!(
            verify(("OTHER", keys.1), "GET", "/", None, &headers, b"", at),
            Err(Refused::UnknownKey)
        );
    }

    #[test]
    fn queries_are_sorted_and_encoded_and_paths_encoded_twice() {
        assert_eq!(
            canonical_query(Some("b=2&a=1&Qualifier=x%3Ay")),
            "Qualifier=x%3Ay&a=1&b=2"
        );
        assert_eq!(
            encode("/2015-03-31/functions/f%3Abeta/invocations", true),
            "/2015-03-31/functions/f%253Abeta/invocations"
        );
    }
}
