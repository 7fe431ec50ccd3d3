//! A container's function serving HTTP on its listener: a fresh instance per request (or its
//! `reuse`), the body read within the function's cap, admission by the container's own budget
//! ([`Gate`]), the guest's log lines to the container's output once its instance is gone.
//!
//! The listener is the container's: bound by the shim inside the container's network namespace, so
//! a pod's IP and its Services reach the function as they reach any pod. Serving stops when `stop`
//! says so: [`Stop::Graceful`] (SIGTERM) stops accepting and lets requests in flight finish within
//! [`GRACE`]; [`Stop::Now`] (SIGKILL, or the shim gone) drops every connection at once.

use crate::gate::Gate;
use crate::output::Output;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use wafer_api::ErrorBody;
use wafer_engine::{Function, Mount, ResponseBody, Settings, Tracer};

/// How long requests in flight may take to finish after a graceful stop.
pub const GRACE: Duration = Duration::from_secs(10);

/// How serving ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Stop accepting, finish what is in flight (within [`GRACE`]).
    Graceful,
    /// Drop everything now.
    Now,
}

/// What every request to one container's function shares.
pub struct Served {
    /// The function, with its own reused instances.
    pub function: Function,
    /// What each invocation gets.
    pub settings: Settings,
    /// The largest request body it is handed.
    pub max_body: usize,
    /// Where its log lines go.
    pub output: Output,
    /// Its admission: concurrency and CPU.
    pub gate: Gate,
}

/// Serves `served` on `listener` until `stop` resolves; returns how it stopped.
pub async fn serve(
    listener: TcpListener,
    served: Arc<Served>,
    stop: impl Future<Output = Stop>,
) -> Stop {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(stop);
    let how = loop {
        tokio::select! {
            how = &mut stop => break how,
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else {
                    // Out of descriptors, say: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let served = served.clone();
                let service = hyper::service::service_fn(move |request| {
                    handle(served.clone(), client, request)
                });
                let connection = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let connection = graceful.watch(connection);
                connections.spawn(async move {
                    let _ = connection.await;
                });
                while connections.try_join_next().is_some() {}
            }
        }
    };
    drop(listener);
    if how == Stop::Graceful {
        let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    }
    connections.shutdown().await;
    how
}

/// One request: read the body within the cap, wait for admission, run the function, answer; its log
/// lines go to the container's output once the instance is gone.
async fn handle(
    served: Arc<Served>,
    client: SocketAddr,
    request: http::Request<Incoming>,
) -> Result<http::Response<ResponseBody>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, served.max_body).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Ok(error_response(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over {} bytes", served.max_body),
            ))
        }
    };
    let Some(permit) = served.gate.admit().await else {
        return Ok(error_response(
            http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "the function is at its concurrency or CPU limit".into(),
        ));
    };
    let mount = Mount {
        prefix: String::new(),
        strip_prefix: false,
        client: Some(client),
    };
    let (tracer, trace) = Tracer::channel();
    let request = http::Request::from_parts(parts, body);
    let result = served
        .function
        .serve_http(request, &mount, &served.settings, tracer)
        .await;
    let output = served.output.clone();
    tokio::spawn(async move {
        if let Ok(trace) = trace.await {
            trace.logs.iter().for_each(|line| output.line(line));
            permit.charge(trace.usage.cpu);
        }
    });
    Ok(match result {
        Ok(response) => response,
        Err(e) => {
            let (status, code) = e.status();
            served.output.note(&e.to_string());
            error_response(status, code, e.to_string())
        }
    })
}

/// An error as wafer answers it: the status, and `{"error": {"code", "message"}}`.
pub fn error_response(
    status: http::StatusCode,
    code: &str,
    message: String,
) -> http::Response<ResponseBody> {
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    let body = Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = http::HeaderValue::from_str(code) {
        response.headers_mut().insert("x-wafer-error", value);
    }
    response
}
