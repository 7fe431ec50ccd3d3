//! A CGI response, as a WAGI guest prints it on stdout: header lines up to a blank line, then the body.

use http::header::LOCATION;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The head of a CGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// From `Status:`, else 302 when a `Location:` is given, else 200.
    pub status: StatusCode,
    /// Every header line but `Status:`.
    pub headers: HeaderMap,
    /// Where the body starts in the output.
    pub body_at: usize,
}

/// Parses the head of `stdout`, a CGI response; its body is `stdout[head.body_at..]`. Lines end with
/// `\n` or `\r\n`.
pub fn parse(stdout: &[u8]) -> Result<Head, String> {
    if stdout.is_empty() {
        return Err(
            "it wrote nothing to stdout; a WAGI function prints CGI headers (at least \
                    `Content-Type`), a blank line, then the body"
                .into(),
        );
    }
    let mut headers = HeaderMap::new();
    let mut status = None;
    let mut pos = 0;
    loop {
        let Some(newline) = stdout[pos..].iter().position(|&b| b == b'\n') else {
            return Err("no blank line ends the CGI header block".into());
        };
        let line = &stdout[pos..pos + newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += newline + 1;
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            return Err(format!("malformed CGI header line {text:?}"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            status = Some(
                code.parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("invalid CGI Status {value:?}"))?,
            );
            continue;
        }
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header {name:?}"))?;
        headers.append(header, value);
    }
    let redirect = headers.contains_key(LOCATION);
    let status = status.unwrap_or(if redirect {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    Ok(Head {
        status,
        headers,
        body_at: pos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of `text` and its body.
    fn parse_text(text: &str) -> (Head, &str) {
        let head = parse(text.as_bytes()).unwrap();
        let body = &text[head.body_at..];
        (head, body)
    }

    #[test]
    fn status_header_sets_the_code() {
        let (head, body) =
            parse_text("Content-Type: text/plain\nStatus: 418 I'm a teapot\n\nshort and stout");
        assert_eq!(head.status, StatusCode::IM_A_TEAPOT);
        assert_eq!(head.headers["content-type"], "text/plain");
        assert!(!head.headers.contains_key("status"));
        assert_eq!(body, "short and stout");
    }

    #[test]
    fn crlf_and_location_redirect() {
        let (head, body) = parse_text("Location: /elsewhere\r\n\r\n");
        assert_eq!(head.status, StatusCode::FOUND);
        assert_eq!(head.headers["location"], "/elsewhere");
        assert_eq!(body, "");
    }

    #[test]
    fn a_repeated_header_keeps_every_value() {
        let (head, _) = parse_text("Set-Cookie: a=1\nSet-Cookie: b=2\n\n");
        let cookies: Vec<_> = head.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn output_without_a_header_block_is_refused() {
        for bad in [
            &b"just text"[..],
            b"",
            b"no colon here\n\nbody",
            b"Status: 99\n\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
