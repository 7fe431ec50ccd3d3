//! The `http` ABI: a component exporting `wasi:http/incoming-handler@0.2.x` gets the HTTP request as is.
//!
//! As in `wasmtime serve`, the handler runs in its own task so it can keep streaming the body after the
//! response head has been sent; the store (and with it the instance) lives as long as that task, unless the
//! function sets `reuse` and the instance is kept for its next request (`reuse.rs`).

use crate::error::InvokeError;
use crate::host::platform::CallDepth;
use crate::host::{self, ComponentState, Stdio};
use crate::reuse::IdlePool;
use crate::run::bounded;
use crate::settings::Settings;
use crate::trace::{Stream, Trace, Tracer};
use bytes::Bytes;
use http::uri::{Authority, Uri};
use http::{HeaderValue, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::WasiHttpView;

/// The body of a response produced by a function.
pub type ResponseBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A whole body, known in full, as the engine's responses carry it.
pub(crate) fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Where and from whom a request reached a function.
#[derive(Debug, Clone, Default)]
pub struct Mount {
    /// The path prefix the function was reached under: `/fn/{name}` or one of its configured routes.
    pub prefix: String,
    /// Whether an http component sees the path without `prefix` (the `/fn/{name}` gateway) or whole (a
    /// route the function was configured with). WAGI always gets `prefix` as `SCRIPT_NAME`.
    pub strip_prefix: bool,
    /// The client's address, when known.
    pub client: Option<SocketAddr>,
}

impl Mount {
    /// The part of `path` after the mount prefix, always starting with `/`.
    pub(crate) fn rest<'a>(&self, path: &'a str) -> &'a str {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) if rest.starts_with('/') => rest,
            Some("") | None => "/",
            Some(_) => path,
        }
    }
}

/// An instance kept between the requests of a function that sets `reuse`, with its store and streams.
pub(crate) struct Warm {
    store: Store<ComponentState>,
    proxy: Proxy,
    stdio: Stdio,
    served: u32,
}

/// The most recently used kept instance whose code `engine` compiled. One from code since replaced (the
/// baseline tier's, once the optimized code is in place: another engine) is dropped instead, so a
/// function that sets `reuse` runs its optimized code from the next request on, not once each kept
/// instance has served its `reuse` requests or gone idle.
fn kept_of(warm: &IdlePool<Warm>, engine: &wasmtime::Engine) -> Option<Warm> {
    while let Some(kept) = warm.take() {
        if wasmtime::Engine::same(kept.store.engine(), engine) {
            return Some(kept);
        }
        tokio::spawn(async move { drop(kept) });
    }
    None
}

/// How deep in a chain of function calls `request` is.
pub(crate) fn call_depth<B>(request: &Request<B>) -> CallDepth {
    request
        .extensions()
        .get::<CallDepth>()
        .copied()
        .unwrap_or_default()
}

/// Serves one request with a fresh instance of the component, or with a kept one when the function sets
/// `reuse`. An instance is kept again only if it answered its request (no trap, no timeout, a response
/// set) and has served fewer than `reuse` requests.
pub(crate) async fn serve(
    pre: &ProxyPre<ComponentState>,
    warm: &Arc<IdlePool<Warm>>,
    request: Request<Bytes>,
    mount: &Mount,
    settings: &Settings,
    tracer: Tracer,
) -> Result<Response<ResponseBody>, InvokeError> {
    let limits = settings.limits;
    let reuse = settings.reuse;
    let depth = call_depth(&request);
    let request = guest_request(request, mount)?;
    let kept = if reuse > 1 {
        kept_of(warm, pre.engine())
    } else {
        None
    };
    let (mut store, proxy, stdio, served) = match kept {
        Some(kept) => (kept.store, Some(kept.proxy), kept.stdio, kept.served),
        None => {
            let (mut builder, stdio) = host::wasi_builder(
                std::slice::from_ref(&settings.name),
                &settings.env,
                Bytes::new(),
                settings,
            );
            let state = ComponentState::new(builder.build(), settings, depth, &stdio);
            (Store::new(pre.engine(), state), None, stdio, 0)
        }
    };
    store.data_mut().set_depth(depth);
    let internal = |e: wasmtime::Error| InvokeError::Internal(crate::error::describe(&e));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let guest_request = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
        .map_err(internal)?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(internal)?;

    let pre = pre.clone();
    let warm = warm.clone();
    let task = tokio::spawn(async move {
        let run = bounded(
            &mut store,
            &limits,
            async |store| match proxy {
                Some(kept) => Ok(kept),
                None => pre.instantiate_async(store).await,
            },
            async |store, proxy| {
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut *store, guest_request, outparam)
                    .await?;
                Ok(proxy)
            },
        )
        .await;
        let usage = run.usage;
        let result = run.ended.and_then(|ended| ended.returned());
        // Neither stream is part of the HTTP response; both are the function's log.
        tracer.send(Trace::new(
            usage,
            &[
                (Stream::Stdout, &stdio.stdout),
                (Stream::Stderr, &stdio.stderr),
                (Stream::Log, &stdio.log),
            ],
        ));
        let served = served + 1;
        let ended = match result {
            Ok(proxy) if served < reuse => {
                stdio.clear();
                return Ok(Some(Warm {
                    store,
                    proxy,
                    stdio,
                    served,
                }));
            }
            other => other.map(|_| None),
        };
        // Dropping the store resets the instance's memory for its slot's next instance: for a large
        // image (an interpreter's heap), milliseconds of copying. The guest finishing its body has just
        // woken the connection's task into this worker's next-task slot, which no other worker may take,
        // so dropping here would hold the end of the response back until the copy is done (a Python
        // function's first calls after a restart took 11-15 ms instead of 5). A task of its own takes
        // that slot instead and leaves the connection's task where an idle worker can take it.
        tokio::spawn(async move { drop(store) });
        ended
    });

    match receiver.await {
        Ok(Ok(response)) => {
            // Only an instance that answered is kept: once its handler is done, it goes back to the
            // function's pool.
            if reuse > 1 {
                tokio::spawn(async move {
                    if let Ok(Ok(Some(instance))) = task.await {
                        warm.put(instance);
                    }
                });
            }
            cap_body(response, limits.response_bytes)
        }
        Ok(Err(code)) => Err(InvokeError::Failed(format!(
            "the handler answered with error {code:?}"
        ))),
        Err(_) => match task.await {
            Ok(Ok(_)) => Err(InvokeError::Failed(
                "the handler returned without setting a response".into(),
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(InvokeError::Internal(format!("handler task failed: {e}"))),
        },
    }
}

/// Refuses a response that declares a body over `cap`, and cuts off one that streams past it (the status
/// is sent by then, so the client sees the connection end early).
pub fn cap_body<B>(response: Response<B>, cap: usize) -> Result<Response<ResponseBody>, InvokeError>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(InvokeError::BadResponse(format!(
            "the response is larger than the limit of {cap} bytes"
        )));
    }
    Ok(response.map(|body| http_body_util::Limited::new(body, cap).boxed_unsync()))
}

/// The request as the guest sees it: an absolute URI (wasi:http needs an authority), the path as
/// [`forward`] gives it.
fn guest_request(
    request: Request<Bytes>,
    mount: &Mount,
) -> Result<Request<Full<Bytes>>, InvokeError> {
    let (mut parts, body) = request.into_parts();
    let path_and_query = forward(&mut parts, mount);
    let authority = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.parse::<Authority>().is_ok())
        .unwrap_or("localhost")
        .to_string();
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| InvokeError::Internal(format!("cannot rebuild the request URI: {e}")))?;
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// The path and query a function serving HTTP sees for a request reaching it under `mount`: relative
/// to the mount when the prefix is stripped (the `/fn/{name}` gateway), with `x-forwarded-prefix` then
/// added to the headers saying what was stripped; whole on a route of its own.
pub fn forward(parts: &mut http::request::Parts, mount: &Mount) -> String {
    let path = if mount.strip_prefix {
        mount.rest(parts.uri.path())
    } else {
        parts.uri.path()
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    if mount.strip_prefix {
        if let Ok(prefix) = HeaderValue::from_str(&mount.prefix) {
            parts.headers.insert("x-forwarded-prefix", prefix);
        }
    }
    path_and_query
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(prefix: &str, strip: bool) -> Mount {
        Mount {
            prefix: prefix.into(),
            strip_prefix: strip,
            client: None,
        }
    }

    fn response_of(
        body: &'static [u8],
        declare_length: bool,
    ) -> Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody> {
        let mut response = Response::builder();
        if declare_length {
            response = response.header("content-length", body.len());
        }
        response
            .body(
                Full::new(Bytes::from_static(body))
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn response_bodies_are_capped() {
        assert!(matches!(
            cap_body(response_of(b"0123456789", true), 4),
            Err(InvokeError::BadResponse(_))
        ));
        let streamed = cap_body(response_of(b"0123456789", false), 4).unwrap();
        assert!(streamed.into_body().collect().await.is_err());
        let fits = cap_body(response_of(b"0123", true), 4).unwrap();
        assert_eq!(fits.into_body().collect().await.unwrap().to_bytes(), "0123");
    }

    #[tokio::test]
    async fn an_instance_of_code_since_replaced_is_not_reused() {
        let engine = crate::Engine::new(&crate::EngineOptions {
            pool: None,
            baseline_limit: 1 << 20,
            ..crate::EngineOptions::default()
        })
        .unwrap();
        let component = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../bench/guests/hello-c/hello.wasm"),
        )
        .unwrap();
        let settings = Settings {
            reuse: 10,
            ..Settings::default()
        };
        let instances = engine.instances();
        // Serves a request, and waits until its instance is kept again.
        let serve_once = async |function: crate::Function| {
            let request = Request::get("/fn/f").body(Bytes::new()).unwrap();
            let function = function.with_instances(&instances);
            let response = function
                .serve_http(request, &mount("/fn/f", true), &settings, Tracer::discard())
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "Hello, world!\n");
            while engine.stats().idle == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        let baseline = engine.compile_baseline(&component, None).unwrap().unwrap();
        serve_once(baseline.function).await;
        // The optimized code takes over: the baseline instance is dropped, not reused.
        serve_once(engine.compile(&component, None).unwrap().function).await;
        let kept = instances.0.take().expect("an instance kept");
        assert_eq!(kept.served, 1);
        assert!(instances.0.take().is_none());
    }

    #[test]
    fn rest_is_the_path_below_the_mount() {
        let m = mount("/fn/hello", true);
        assert_eq!(m.rest("/fn/hello"), "/");
        assert_eq!(m.rest("/fn/hello/a/b"), "/a/b");
        assert_eq!(m.rest("/fn/hellothere"), "/fn/hellothere");
    }

    #[test]
    fn gateway_requests_lose_the_prefix_and_gain_an_authority() {
        let req = Request::builder()
            .uri("/fn/hello/x?y=1")
            .header("host", "example.test:8080")
            .body(Bytes::new())
            .unwrap();
        let out = guest_request(req, &mount("/fn/hello", true)).unwrap();
        assert_eq!(out.uri().to_string(), "http://example.test:8080/x?y=1");
        assert_eq!(out.headers()["x-forwarded-prefix"], "/fn/hello");
    }

    #[test]
    fn routed_requests_keep_their_path() {
        let req = Request::builder()
            .uri("/api/hello")
            .body(Bytes::new())
            .unwrap();
        let out = guest_request(req, &mount("/api", false)).unwrap();
        assert_eq!(out.uri().to_string(), "http://localhost/api/hello");
        assert!(out.headers().get("x-forwarded-prefix").is_none());
    }
}
