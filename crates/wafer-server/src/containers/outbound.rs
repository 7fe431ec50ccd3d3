//! A container's way out: an HTTP proxy wafer runs for one container, listening on the container's
//! own loopback (`127.0.0.1:3128` inside its network namespace), which is the only address the
//! container can reach at all.
//!
//! A network namespace cannot filter by host name, so the container gets no route and this proxy
//! decides instead, under the function's `allowed_outbound_hosts` exactly as for a wasm function
//! ([`OutboundPolicy`]): `CONNECT host:port` (HTTPS, or any TLS, tunnelled as is) is checked as
//! `https`, a plain request in absolute form (`GET http://host/path`) as `http`. The proxy connects
//! to the very addresses the policy checked, so a name that resolves differently the second time
//! gains nothing; its connections count against the function's `max_outbound` and wait at most its
//! `outbound_timeout_ms`. Containers are told of it in `HTTP_PROXY`, `HTTPS_PROXY` and their
//! lower-case forms.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use wafer_container::netns::Namespace;
use wafer_engine::OutboundPolicy;

/// The port of the proxy inside every container that may reach out.
pub const PROXY_PORT: u16 = 3128;

/// The variables that point a container's HTTP clients at a proxy.
const VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The variables that point a container's HTTP clients at its proxy.
pub fn env() -> Vec<String> {
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    VARIABLES
        .iter()
        .map(|name| match name.to_ascii_lowercase().as_str() {
            "no_proxy" => format!("{name}=localhost,127.0.0.1"),
            _ => format!("{name}={url}"),
        })
        .collect()
}

/// Whether `name` is one of the proxy variables wafer sets, which nothing else may change: a proxy
/// of the function's own would lead nowhere.
pub fn sets(name: &str) -> bool {
    VARIABLES.contains(&name)
}

/// Headers that concern one hop only, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

type Body = BoxBody<Bytes, hyper::Error>;

/// A running proxy; dropping it closes the listener and every connection through it.
pub struct Proxy {
    task: tokio::task::JoinHandle<()>,
    _stop: watch::Sender<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the proxy of the container whose network namespace `namespace` is in, under `policy`.
pub async fn start(namespace: &Namespace, policy: OutboundPolicy) -> std::io::Result<Proxy> {
    let listener = namespace.bind(PROXY_PORT).await?;
    let policy = Arc::new(policy);
    let (stop, stopped) = watch::channel(());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let policy = policy.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let tunnels = stopped.clone();
                let service = hyper::service::service_fn(move |request| {
                    handle(request, policy.clone(), tunnels.clone())
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::select! {
                    _ = connection => {}
                    _ = stopped.changed() => {}
                }
            });
        }
    });
    Ok(Proxy { task, _stop: stop })
}

/// Answers one request to the proxy: a tunnel, a forwarded request, or why neither.
async fn handle(
    request: Request<Incoming>,
    policy: Arc<OutboundPolicy>,
    stopped: watch::Receiver<()>,
) -> Result<Response<Body>, Infallible> {
    let answered = if request.method() == Method::CONNECT {
        tunnel(request, &policy, stopped).await
    } else {
        forward(request, &policy, stopped).await
    };
    Ok(answered.unwrap_or_else(|(status, message)| {
        tracing::info!(%status, "container outbound refused: {message}");
        let mut response = Response::new(text(format!("wafer: {message}\n")));
        *response.status_mut() = status;
        response
    }))
}

type Refusal = (StatusCode, String);

/// `CONNECT host:port`: a byte tunnel to an allowed host, checked as `https`.
async fn tunnel(
    request: Request<Incoming>,
    policy: &OutboundPolicy,
    mut stopped: watch::Receiver<()>,
) -> Result<Response<Body>, Refusal> {
    let authority = request.uri().authority().cloned().ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            "CONNECT needs host:port".to_string(),
        )
    })?;
    let port = authority.port_u16().ok_or_else(|| {
        (
            StatusCode::BAD_REQUEST,
            format!("CONNECT {authority} names no port"),
        )
    })?;
    let (mut upstream, slot) = open(policy, "https", authority.host(), port).await?;
    tokio::spawn(async move {
        let _slot = slot;
        if let Ok(upgraded) = hyper::upgrade::on(request).await {
            let mut client = TokioIo::new(upgraded);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = stopped.changed() => {}
            }
        }
    });
    Ok(Response::new(empty()))
}

/// A plain request in absolute form (`GET http://host/path`), sent on to an allowed host, checked
/// as `http`.
async fn forward(
    request: Request<Incoming>,
    policy: &OutboundPolicy,
    mut stopped: watch::Receiver<()>,
) -> Result<Response<Body>, Refusal> {
    let (mut parts, body) = request.into_parts();
    let uri = parts.uri.clone();
    if uri.scheme_str() != Some("http") {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "{uri}: the proxy forwards http:// URLs; https goes through CONNECT \
                 (HTTPS_PROXY)"
            ),
        ));
    }
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(80);
    let (upstream, slot) = open(policy, "http", &host, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{uri}: {e}")))?;
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = connection => {}
            _ = stopped.changed() => {}
        }
    });
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(authority) = uri.authority() {
            if let Ok(value) = http::HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(http::header::HOST, value);
            }
        }
    }
    parts.uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("{uri}: {e}")))?;
    let sent = tokio::time::timeout(
        policy.timeout(),
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await;
    match sent {
        Ok(Ok(response)) => Ok(response.map(BodyExt::boxed)),
        Ok(Err(e)) => Err((StatusCode::BAD_GATEWAY, format!("{uri}: {e}"))),
        Err(_) => Err((
            StatusCode::GATEWAY_TIMEOUT,
            format!("{uri} did not answer within {:?}", policy.timeout()),
        )),
    }
}

/// A connection to `host:port` if the policy allows it for `scheme`, to the addresses it checked,
/// with a slot of the function's outbound connections.
async fn open(
    policy: &OutboundPolicy,
    scheme: &str,
    host: &str,
    port: u16,
) -> Result<(TcpStream, tokio::sync::OwnedSemaphorePermit), Refusal> {
    let addresses = policy
        .resolve(scheme, host, port)
        .await
        .map_err(|message| (StatusCode::FORBIDDEN, message))?;
    let slot = policy.acquire().await.ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many outbound connections in flight (max_outbound)".to_string(),
        )
    })?;
    let stream = connect(&addresses, policy.timeout())
        .await
        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("{host}:{port}: {e}")))?;
    Ok((stream, slot))
}

/// A connection to the first of `addresses` that answers, each given `timeout`.
async fn connect(addresses: &[SocketAddr], timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other("the host has no address");
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

fn text(message: String) -> Body {
    Full::new(Bytes::from(message))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    text(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_pointed_at_their_proxy() {
        let env = env();
        assert!(env.contains(&"HTTPS_PROXY=http://127.0.0.1:3128".to_string()));
        assert!(env.contains(&"http_proxy=http://127.0.0.1:3128".to_string()));
        assert!(env.iter().any(|e| e.starts_with("NO_PROXY=")));
    }
}
