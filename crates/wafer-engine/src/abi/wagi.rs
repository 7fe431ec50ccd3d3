//! The `wagi` ABI: a WASI preview1 module run as a CGI program (RFC 3875, as WAGI does it).
//!
//! The request body is the guest's stdin; the request line and headers are its environment
//! (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`, `HTTP_*`, …). What it prints is parsed as a CGI response:
//! header lines, a blank line, then the body; `Status:` sets the code and a bare `Location:` redirects.
//! As in WAGI, argv is the request path followed by the query string's `&`-separated parts, and a module
//! may export `_routes`, printing `PATH EXPORT` lines that map sub-paths of its mount (`/x` exactly,
//! `/x/...` with everything below) to other exported functions; the last matching line wins.

use super::{run_start, Run};
use crate::abi::http::{Mount, ResponseBody};
use crate::error::InvokeError;
use crate::host::ModuleState;
use crate::settings::Settings;
use crate::trace::{Stream, Trace, Tracer};
use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response};
use std::sync::Arc;
use tokio::sync::OnceCell;
use wasmtime::InstancePre;

/// A WAGI module, with the sub-routes its `_routes` export declares (read once, on first use).
#[derive(Clone)]
pub(crate) struct WagiModule {
    pub(crate) pre: InstancePre<ModuleState>,
    sub_routes: Arc<OnceCell<Vec<SubRoute>>>,
}

/// One line of a module's `_routes` output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubRoute {
    /// The path below the mount, without a trailing `/...`.
    path: String,
    /// Whether the path also covers everything below it (`/x/...`).
    wildcard: bool,
    /// The exported function to call.
    export: String,
}

impl SubRoute {
    fn matches(&self, rest: &str) -> bool {
        if self.wildcard {
            rest == self.path
                || rest
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|below| self.path.is_empty() || below.starts_with('/'))
        } else {
            rest == self.path
        }
    }
}

impl WagiModule {
    pub(crate) fn new(pre: InstancePre<ModuleState>) -> Self {
        Self {
            pre,
            sub_routes: Arc::new(OnceCell::new()),
        }
    }

    /// The export that answers `rest` (the path below the mount): a sub-route's, or `_start`.
    async fn entry_for(&self, rest: &str, settings: &Settings) -> String {
        let routes = self
            .sub_routes
            .get_or_init(|| self.read_sub_routes(settings))
            .await;
        routes
            .iter()
            .rev()
            .find(|r| r.matches(rest))
            .map_or_else(|| "_start".to_string(), |r| r.export.clone())
    }

    /// Runs `_routes`, if the module exports it, and keeps the lines that name a callable export.
    async fn read_sub_routes(&self, settings: &Settings) -> Vec<SubRoute> {
        let module = self.pre.module();
        if module.get_export("_routes").is_none() {
            return Vec::new();
        }
        let args = std::slice::from_ref(&settings.name);
        let run = run_start(
            &self.pre,
            "_routes",
            args,
            &settings.env,
            Bytes::new(),
            settings,
        )
        .await;
        let stdout = match run.exit {
            Ok(_) => run.stdio.stdout.contents(),
            Err(e) => {
                tracing::warn!(function = %settings.name, "`_routes` failed, serving `_start` only: {e}");
                return Vec::new();
            }
        };
        let callable = |name: &str| {
            module
                .get_export(name)
                .and_then(|e| {
                    e.func()
                        .map(|f| f.params().len() == 0 && f.results().len() == 0)
                })
                .unwrap_or(false)
        };
        parse_sub_routes(&String::from_utf8_lossy(&stdout))
            .into_iter()
            .filter(|r| {
                let ok = callable(&r.export);
                if !ok {
                    tracing::warn!(function = %settings.name, export = %r.export, "`_routes` names no callable export; ignored");
                }
                ok
            })
            .collect()
    }
}

/// Parses `PATH EXPORT` lines; `PATH` may end in `/...`.
fn parse_sub_routes(text: &str) -> Vec<SubRoute> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (pattern, export) = (words.next()?, words.next()?);
            let (path, wildcard) = match pattern.strip_suffix("/...") {
                Some(path) => (path, true),
                None => (pattern, false),
            };
            if !(path.is_empty() || path.starts_with('/')) {
                return None;
            }
            Some(SubRoute {
                path: path.to_string(),
                wildcard,
                export: export.to_string(),
            })
        })
        .collect()
}

/// Serves one request by running the module once.
pub(crate) async fn serve(
    module: &WagiModule,
    request: Request<Bytes>,
    mount: &Mount,
    settings: &Settings,
    tracer: Tracer,
) -> Result<Response<ResponseBody>, InvokeError> {
    let (parts, body) = request.into_parts();
    let env = cgi_env(&parts, body.len(), mount, settings);
    let entry = module
        .entry_for(mount.rest(parts.uri.path()), settings)
        .await;
    let args = cgi_args(&parts.uri);
    let Run { exit, stdio, usage } =
        run_start(&module.pre, &entry, &args, &env, body, settings).await;
    tracer.send(Trace::new(usage, &[(Stream::Stderr, &stdio.stderr)]));
    let exit_code = exit?;
    cgi_answer(
        exit_code,
        stdio.stdout.contents(),
        stdio.stdout.truncated(),
        &stdio.stderr.contents(),
        settings.limits.response_bytes,
    )
}

/// The response a CGI program gave, from its exit code and output: its stdout parsed as a CGI
/// response (refused past `limit` bytes, when `truncated`), or why there is none (with the end of
/// its stderr).
pub fn cgi_answer(
    exit_code: i32,
    stdout: Bytes,
    truncated: bool,
    stderr: &[u8],
    limit: usize,
) -> Result<Response<ResponseBody>, InvokeError> {
    if truncated {
        return Err(InvokeError::BadResponse(format!(
            "the response is larger than the limit of {limit} bytes"
        )));
    }
    match parse_response(stdout) {
        Ok(response) => Ok(response),
        Err(_) if exit_code != 0 => Err(InvokeError::Failed(format!(
            "exited with code {exit_code} without a response{}",
            stderr_tail(stderr)
        ))),
        Err(reason) => Err(InvokeError::BadResponse(reason)),
    }
}

/// A CGI program's environment: the function's configured variables, then the CGI variables (which
/// win) describing `parts`, with a body of `content_length` bytes, as it reached `mount`.
pub fn cgi_env(
    parts: &http::request::Parts,
    content_length: usize,
    mount: &Mount,
    settings: &Settings,
) -> Vec<(String, String)> {
    let header = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let host = header(HOST);
    let (server_name, server_port) = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => (name.to_string(), port.to_string()),
        _ if host.is_empty() => ("localhost".to_string(), "80".to_string()),
        _ => (host.clone(), "80".to_string()),
    };
    let raw_path_info = mount.rest(parts.uri.path()).to_string();
    let query = parts.uri.query().unwrap_or_default().to_string();
    let client = mount.client.map(|a| a.ip().to_string()).unwrap_or_default();
    let full_url = match parts.uri.query() {
        Some(q) => format!("http://{}{}?{q}", server_name_port(&host), parts.uri.path()),
        None => format!("http://{}{}", server_name_port(&host), parts.uri.path()),
    };
    // The CGI variables' names are distinct but for headers that differ only in `-` and `_`.
    let mut cgi: Vec<(String, String)> = Vec::with_capacity(24 + parts.headers.keys_len());
    let mut set = |k: &str, v: String| cgi.push((k.to_string(), v));
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        concat!("wafer/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("SERVER_PROTOCOL", format!("{:?}", parts.version));
    set("SERVER_NAME", server_name);
    set("SERVER_PORT", server_port);
    set("REQUEST_METHOD", parts.method.to_string());
    set("SCRIPT_NAME", mount.prefix.clone());
    set("PATH_INFO", percent_decode(&raw_path_info));
    set("PATH_TRANSLATED", percent_decode(&raw_path_info));
    set("X_RAW_PATH_INFO", raw_path_info);
    set("X_MATCHED_ROUTE", mount.prefix.clone());
    set("X_FULL_URL", full_url);
    set("QUERY_STRING", query);
    set("CONTENT_TYPE", header(CONTENT_TYPE));
    set("CONTENT_LENGTH", content_length.to_string());
    set("REMOTE_ADDR", client.clone());
    set("REMOTE_HOST", client);
    set("AUTH_TYPE", String::new());
    set("REMOTE_USER", String::new());
    for name in parts.headers.keys() {
        // A `Proxy` header would become HTTP_PROXY, which programs read as their proxy ("httpoxy").
        if name == CONTENT_TYPE || name == CONTENT_LENGTH || name.as_str() == "proxy" {
            continue;
        }
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let var = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        match cgi.iter_mut().find(|(existing, _)| *existing == var) {
            Some(slot) => slot.1 = values.join(", "),
            None => cgi.push((var, values.join(", "))),
        }
    }
    let mut env: Vec<(String, String)> = settings
        .env
        .iter()
        .filter(|(name, _)| !cgi.iter().any(|(var, _)| var == name))
        .cloned()
        .collect();
    env.append(&mut cgi);
    env
}

/// argv as WAGI builds it: the request path, then each `&`-separated part of the query, decoded.
fn cgi_args(uri: &http::Uri) -> Vec<String> {
    std::iter::once(uri.path().to_string())
        .chain(
            uri.query()
                .unwrap_or_default()
                .split('&')
                .filter(|part| !part.is_empty())
                .map(|part| percent_decode(&part.replace('+', " "))),
        )
        .collect()
}

fn server_name_port(host: &str) -> &str {
    if host.is_empty() {
        "localhost"
    } else {
        host
    }
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
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

/// Parses a CGI response: header lines up to a blank line, then the body.
fn parse_response(stdout: Bytes) -> Result<Response<ResponseBody>, String> {
    let head = wafer_formats::cgi::parse(&stdout)?;
    let mut response = Response::new(super::http::full(stdout.slice(head.body_at..)));
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    Ok(response)
}

/// The last few lines of stderr, to explain a failure.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        String::new()
    } else {
        let mut lines = lines;
        lines.reverse();
        format!("; stderr: {}", lines.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn the_head_and_the_body_make_the_response() {
        let stdout = "Content-Type: text/plain\nStatus: 418 I'm a teapot\n\nshort and stout";
        let response = parse_response(Bytes::from(stdout)).unwrap();
        let (parts, body) = response.into_parts();
        assert_eq!(parts.status, http::StatusCode::IM_A_TEAPOT);
        assert_eq!(parts.headers["content-type"], "text/plain");
        let body = body.collect().await.unwrap().to_bytes();
        assert_eq!(body, "short and stout");
        assert!(parse_response(Bytes::from_static(b"just text")).is_err());
    }

    #[test]
    fn sub_routes_parse_and_the_last_match_wins() {
        let routes = parse_sub_routes(
            "/hello hello\n/goodbye/... goodbye\nnonsense\n/one/... one\n/one/two/... two\n",
        );
        assert_eq!(routes.len(), 4);
        let pick = |rest: &str| {
            routes
                .iter()
                .rev()
                .find(|r| r.matches(rest))
                .map(|r| r.export.as_str())
        };
        assert_eq!(pick("/hello"), Some("hello"));
        assert_eq!(pick("/hello/x"), None);
        assert_eq!(pick("/goodbye"), Some("goodbye"));
        assert_eq!(pick("/goodbye/a/b"), Some("goodbye"));
        assert_eq!(pick("/goodbyes"), None);
        assert_eq!(pick("/one/two/three"), Some("two"));
        assert_eq!(pick("/"), None);
    }

    #[test]
    fn args_are_the_path_and_the_query_parts() {
        let uri: http::Uri = "/fn/env/x?greet=matt&foo=a%20b+c&&".parse().unwrap();
        assert_eq!(cgi_args(&uri), ["/fn/env/x", "greet=matt", "foo=a b c"]);
    }

    #[test]
    fn cgi_env_describes_the_request() {
        let request = Request::builder()
            .method("POST")
            .uri("/fn/echo/a%20b?x=1")
            .header("host", "example.test:9000")
            .header("content-type", "text/plain")
            .header("x-custom", "yes")
            .header("proxy", "http://evil.test")
            .header("x-twin", "dash")
            .header("x_twin", "underscore")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let settings = Settings {
            name: "echo".into(),
            env: vec![
                ("PATH_INFO".into(), "spoofed".into()),
                ("MINE".into(), "1".into()),
            ],
            ..Default::default()
        };
        let mount = Mount {
            prefix: "/fn/echo".into(),
            strip_prefix: true,
            client: "127.0.0.1:5555".parse().ok(),
        };
        let vars = cgi_env(&parts, 3, &mount, &settings);
        let env: std::collections::HashMap<_, _> = vars.iter().cloned().collect();
        assert_eq!(env.len(), vars.len(), "each variable once: {vars:?}");
        assert_eq!(env["REQUEST_METHOD"], "POST");
        assert_eq!(env["PATH_INFO"], "/a b");
        assert_eq!(env["X_RAW_PATH_INFO"], "/a%20b");
        assert_eq!(env["SCRIPT_NAME"], "/fn/echo");
        assert_eq!(env["QUERY_STRING"], "x=1");
        assert_eq!(env["CONTENT_TYPE"], "text/plain");
        assert_eq!(env["CONTENT_LENGTH"], "3");
        assert_eq!(env["HTTP_X_CUSTOM"], "yes");
        assert_eq!(env["SERVER_NAME"], "example.test");
        assert_eq!(env["SERVER_PORT"], "9000");
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["MINE"], "1");
        assert_eq!(env["HTTP_X_TWIN"], "underscore");
        assert!(!env.contains_key("HTTP_CONTENT_TYPE"));
        assert!(!env.contains_key("HTTP_PROXY"));
    }
}
