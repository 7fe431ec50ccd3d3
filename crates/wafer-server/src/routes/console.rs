//! The web console: one page and its two assets, built from `ui/` (`npm run build --prefix ui`, which
//! writes them beside this file) and embedded in the binary, so serving it needs nothing else.
//!
//! The console has a listener of its own (`--console-listen`, by default the port after the main
//! one). A function's page is served on the main listener, so it never shares the console's origin:
//! it cannot read the token the console keeps for its tab, nor script the console's page. The main
//! listener's `/ui` sends a browser there. Every console response carries a Content-Security-Policy
//! that allows the page's own script and style and connections to its own origin, and nothing else.

use crate::app::App;
use crate::error::Error;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

const INDEX: &[u8] = include_bytes!("console/index.html");
const APP_JS: &[u8] = include_bytes!("console/app.js");
const APP_CSS: &[u8] = include_bytes!("console/app.css");

/// What a console page may load and do: its own script, style and API, nothing inline, no frames.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console's routes, for its own listener.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

/// One of the console's files, with the headers every console response carries.
fn asset(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the server: a browser asks again rather than run an older console.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `/ui` on the main listener: a redirect to the console's listener, at the host the browser used.
pub async fn elsewhere(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(console) = app.console_address() else {
        return Error::NotFound("the console is off (--console-listen off)".into()).into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_name)
        .filter(|h| !h.is_empty())
        .map_or_else(|| console.ip().to_string(), str::to_string);
    let host = match host.contains(':') && !host.starts_with('[') {
        true => format!("[{host}]"),
        false => host,
    };
    let location = format!("http://{host}:{}/ui/", console.port());
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response()
}

/// The host name of a `Host` header, without its port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_name("localhost"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("wafer.example:80"), "wafer.example");
    }
}
