//! Spin 1's host interfaces for core modules, in the pre-component canonical ABI: `spin-config`
//! (`get-config`), `key-value` (`open`, `get`, `set`, `delete`, `exists`, `get-keys`, `close`),
//! `wasi-outbound-http` (`request`) and `outbound-redis`. Each result goes to the return area the guest
//! passes last; strings and lists the host returns are allocated with the guest's
//! `canonical_abi_realloc`. Every call goes through the same grants as a component's.

use super::memory::{fault, pair, Guest};
use super::Spin1State;
use crate::host::platform::PlatformError;
use crate::host::OutboundHooks;
use bytes::Bytes;
use http_body_util::BodyExt;
use wafer_api::LogLevel;
use wasmtime::{Caller, Linker};

/// The memory and allocator of the instance making a call.
pub(super) fn guest(caller: &mut Caller<'_, Spin1State>) -> wasmtime::Result<Guest> {
    let memory = caller.get_export("memory").and_then(|e| e.into_memory());
    let realloc = caller
        .get_export("canonical_abi_realloc")
        .and_then(|e| e.into_func())
        .and_then(|f| f.typed::<(i32, i32, i32, i32), i32>(&*caller).ok());
    Guest::of(memory, realloc)
}

/// Writes an `expected` at `ret`: discriminant 0 and `ok`, or 1 and `err`, the payload at offset 4
/// (where every `expected` of these interfaces but Redis's keeps it).
pub(super) fn expected(
    caller: &mut Caller<'_, Spin1State>,
    guest: &Guest,
    ret: i32,
    result: Result<&[u8], &[u8]>,
) -> wasmtime::Result<()> {
    expected_at(caller, guest, ret, 4, result)
}

/// [`expected`] with the payload at `offset`, its alignment.
pub(super) fn expected_at(
    caller: &mut Caller<'_, Spin1State>,
    guest: &Guest,
    ret: i32,
    offset: i32,
    result: Result<&[u8], &[u8]>,
) -> wasmtime::Result<()> {
    let (tag, payload) = match result {
        Ok(ok) => (0u8, ok),
        Err(err) => (1u8, err),
    };
    guest.write(&mut *caller, ret, &[tag])?;
    guest.write(&mut *caller, ret + offset, payload)
}

/// A `variant` case with a string payload: its tag byte, then the string's `(pointer, length)` at 4.
async fn tagged(
    caller: &mut Caller<'_, Spin1State>,
    guest: &Guest,
    tag: u8,
    message: &str,
) -> wasmtime::Result<Vec<u8>> {
    let (ptr, len) = guest.put(&mut *caller, message.as_bytes()).await?;
    let mut out = vec![tag, 0, 0, 0];
    out.extend_from_slice(&pair(ptr, len));
    Ok(out)
}

pub(super) fn log(
    caller: &Caller<'_, Spin1State>,
    interface: &str,
    what: &str,
    e: &dyn std::fmt::Display,
) {
    caller
        .data()
        .log
        .log(LogLevel::Error, &format!("{interface} {what} failed: {e}"));
}

pub(super) fn add_to_linker(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    config(linker)?;
    key_value(linker)?;
    outbound_http(linker)?;
    super::redis::add_to_linker(linker)
}

/// `spin-config`: `get-config(key) -> expected<string, error>`; `error` is `provider`, `invalid-key`,
/// `invalid-schema` or `other`, each with a message.
fn config(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "spin-config",
        "get-config",
        |mut caller: Caller<'_, Spin1State>, (ptr, len, ret): (i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let key = guest.string(&caller, ptr, len)?;
                match caller.data().variables.get(&key).cloned() {
                    Some(value) => {
                        let (ptr, len) = guest.put(&mut caller, value.as_bytes()).await?;
                        expected(&mut caller, &guest, ret, Ok(&pair(ptr, len)))
                    }
                    None => {
                        let why = format!("no variable `{key}` is set for this function");
                        log(&caller, "spin-config", "get-config", &why);
                        let err = tagged(&mut caller, &guest, 1, &why).await?;
                        expected(&mut caller, &guest, ret, Err(&err))
                    }
                }
            })
        },
    )?;
    Ok(())
}

/// Why a `key-value` call failed.
enum KvFail {
    Platform(PlatformError),
    /// `get` of a key the store does not hold.
    NoSuchKey,
}

impl From<PlatformError> for KvFail {
    fn from(e: PlatformError) -> Self {
        KvFail::Platform(e)
    }
}

/// `key-value`'s `error`: `store-table-full`, `no-such-store`, `access-denied`, `invalid-store`,
/// `no-such-key`, `io(string)`.
async fn kv_error(
    caller: &mut Caller<'_, Spin1State>,
    guest: &Guest,
    what: &str,
    e: KvFail,
) -> wasmtime::Result<Vec<u8>> {
    let e = match e {
        KvFail::NoSuchKey => return Ok(vec![4, 0, 0, 0]),
        KvFail::Platform(e) => e,
    };
    log(caller, "key-value", what, &e);
    match e {
        PlatformError::Denied(_) => Ok(vec![2, 0, 0, 0]),
        PlatformError::NotFound(_) => Ok(vec![1, 0, 0, 0]),
        other => tagged(caller, guest, 5, &other.to_string()).await,
    }
}

/// The store behind handle `handle`.
fn opened(caller: &Caller<'_, Spin1State>, handle: i32) -> Option<String> {
    caller
        .data()
        .stores
        .get(handle as u32 as usize)
        .cloned()
        .flatten()
}

/// Links one `key-value` function taking `(store, key, ret)` whose platform call gives `ok`'s bytes.
macro_rules! kv_keyed {
    ($linker:expr, $name:literal, |$platform:ident, $store:ident, $key:ident, $caller:ident, $guest:ident| $body:expr) => {
        $linker.func_wrap_async(
            "key-value",
            $name,
            |mut $caller: Caller<'_, Spin1State>, (handle, ptr, len, ret): (i32, i32, i32, i32)| {
                Box::new(async move {
                    let $guest = guest(&mut $caller)?;
                    let $key = $guest.string(&$caller, ptr, len)?;
                    let Some($store) = opened(&$caller, handle) else {
                        return expected(&mut $caller, &$guest, ret, Err(&[3, 0, 0, 0]));
                    };
                    let $platform = $caller.data().platform.store(&$store).cloned();
                    let result: Result<Vec<u8>, KvFail> = $body;
                    match result {
                        Ok(ok) => expected(&mut $caller, &$guest, ret, Ok(&ok)),
                        Err(e) => {
                            let err = kv_error(&mut $caller, &$guest, $name, e).await?;
                            expected(&mut $caller, &$guest, ret, Err(&err))
                        }
                    }
                })
            },
        )?;
    };
}

fn key_value(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "key-value",
        "open",
        |mut caller: Caller<'_, Spin1State>, (ptr, len, ret): (i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let name = guest.string(&caller, ptr, len)?;
                match caller.data().platform.store(&name).map(drop) {
                    Ok(()) => {
                        let stores = &mut caller.data_mut().stores;
                        stores.push(Some(name));
                        let handle = (stores.len() - 1) as u32;
                        expected(&mut caller, &guest, ret, Ok(&handle.to_le_bytes()))
                    }
                    Err(e) => {
                        let err = kv_error(&mut caller, &guest, "open", e.into()).await?;
                        expected(&mut caller, &guest, ret, Err(&err))
                    }
                }
            })
        },
    )?;
    kv_keyed!(linker, "get", |platform, store, key, caller, guest| {
        match async { platform?.kv_get(&store, &key).await }.await {
            Ok(Some(value)) => {
                let (ptr, len) = guest.put(&mut caller, &value).await?;
                Ok(pair(ptr, len).to_vec())
            }
            Ok(None) => Err(KvFail::NoSuchKey),
            Err(e) => Err(e.into()),
        }
    });
    kv_keyed!(linker, "delete", |platform, store, key, caller, guest| {
        let _ = (&caller, &guest);
        async { platform?.kv_delete(&store, vec![key]).await }
            .await
            .map(|()| Vec::new())
            .map_err(KvFail::from)
    });
    kv_keyed!(linker, "exists", |platform, store, key, caller, guest| {
        let _ = (&caller, &guest);
        async { platform?.kv_exists(&store, &key).await }
            .await
            .map(|found| vec![u8::from(found)])
            .map_err(KvFail::from)
    });
    linker.func_wrap_async(
        "key-value",
        "set",
        |mut caller: Caller<'_, Spin1State>,
         (handle, kp, kl, vp, vl, ret): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let key = guest.string(&caller, kp, kl)?;
                let value = guest.bytes(&caller, vp, vl)?;
                let Some(store) = opened(&caller, handle) else {
                    return expected(&mut caller, &guest, ret, Err(&[3, 0, 0, 0]));
                };
                let platform = caller.data().platform.store(&store).cloned();
                match async { platform?.kv_set(&store, vec![(key, value)]).await }.await {
                    Ok(()) => expected(&mut caller, &guest, ret, Ok(&[])),
                    Err(e) => {
                        let err = kv_error(&mut caller, &guest, "set", e.into()).await?;
                        expected(&mut caller, &guest, ret, Err(&err))
                    }
                }
            })
        },
    )?;
    linker.func_wrap_async(
        "key-value",
        "get-keys",
        |mut caller: Caller<'_, Spin1State>, (handle, ret): (i32, i32)| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let Some(store) = opened(&caller, handle) else {
                    return expected(&mut caller, &guest, ret, Err(&[3, 0, 0, 0]));
                };
                let platform = caller.data().platform.store(&store).cloned();
                let keys = async {
                    let platform = platform?;
                    let (mut keys, mut cursor) = platform.kv_keys(&store, None).await?;
                    while let Some(after) = cursor {
                        let (more, next) = platform.kv_keys(&store, Some(after)).await?;
                        keys.extend(more);
                        cursor = next;
                    }
                    Ok::<_, PlatformError>(keys)
                }
                .await;
                match keys {
                    Ok(keys) => {
                        let (ptr, len) = guest.put_strings(&mut caller, &keys).await?;
                        expected(&mut caller, &guest, ret, Ok(&pair(ptr, len)))
                    }
                    Err(e) => {
                        let err = kv_error(&mut caller, &guest, "get-keys", e.into()).await?;
                        expected(&mut caller, &guest, ret, Err(&err))
                    }
                }
            })
        },
    )?;
    linker.func_wrap(
        "key-value",
        "close",
        |mut caller: Caller<'_, Spin1State>, handle: i32| {
            if let Some(slot) = caller.data_mut().stores.get_mut(handle as u32 as usize) {
                *slot = None;
            }
        },
    )?;
    Ok(())
}

/// `wasi-outbound-http`: `request(req) -> expected<response, http-error>`, the request flattened as
/// `handle-http-request`'s and the response laid out as its return area, 4 bytes in.
fn outbound_http(linker: &mut Linker<Spin1State>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "wasi-outbound-http",
        "request",
        |mut caller: Caller<'_, Spin1State>,
         (method, up, ul, hp, hl, _pp, _pl, has_body, bp, bl, ret): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let guest = guest(&mut caller)?;
                let uri = guest.string(&caller, up, ul)?;
                let headers = guest.pairs(&caller, hp, hl)?;
                let body = match has_body {
                    0 => Bytes::new(),
                    _ => Bytes::from(guest.bytes(&caller, bp, bl)?),
                };
                let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
                let method = methods
                    .get(method as u32 as usize)
                    .ok_or_else(|| fault(format!("method {method} is not one of Spin's")))?;
                let hooks = OutboundHooks {
                    policy: caller.data().policy.clone(),
                    guest: caller.data().platform.clone(),
                };
                let sent = send(hooks, method, &uri, headers, body).await;
                match sent {
                    Ok((status, headers, body)) => {
                        let (hp, hl) = guest.put_pairs(&mut caller, &headers).await?;
                        let (bp, bl) = guest.put(&mut caller, &body).await?;
                        let mut ok = vec![0u8; 28];
                        ok[..2].copy_from_slice(&status.to_le_bytes());
                        ok[4] = 1;
                        ok[8..16].copy_from_slice(&pair(hp, hl));
                        ok[16] = 1;
                        ok[20..28].copy_from_slice(&pair(bp, bl));
                        expected(&mut caller, &guest, ret, Ok(&ok))
                    }
                    Err((code, why)) => {
                        log(&caller, "wasi-outbound-http", "request", &why);
                        expected(&mut caller, &guest, ret, Err(&[code]))
                    }
                }
            })
        },
    )?;
    Ok(())
}

/// The largest response body a Spin 1 module is handed.
const MAX_RESPONSE: usize = 64 << 20;

/// Sends a request through the function's outbound policy (or to another function, at
/// `http://NAME.fn.internal/`): the status, headers and body, or Spin's `http-error` and why.
async fn send(
    mut hooks: OutboundHooks,
    method: &str,
    uri: &str,
    headers: Vec<(String, String)>,
    body: Bytes,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), (u8, String)> {
    const DENIED: u8 = 1;
    const INVALID_URL: u8 = 2;
    const REQUEST_ERROR: u8 = 3;
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = request
        .body(body)
        .map_err(|e| (INVALID_URL, format!("{uri} is not a valid request: {e}")))?;
    let sent = wasmtime_wasi_http::WasiHttpHooks::send_request(
        &mut hooks,
        request,
        None,
        Box::new(async { Ok(()) }),
    );
    let (response, io) = Box::into_pin(sent).await.map_err(|e| {
        let code = match e {
            wasmtime_wasi_http::Error::HttpRequestDenied
            | wasmtime_wasi_http::Error::DestinationIpProhibited => DENIED,
            _ => REQUEST_ERROR,
        };
        (code, format!("{method} {uri}: {e:?}"))
    })?;
    let (parts, body) = response.into_parts();
    let collect = http_body_util::Limited::new(body, MAX_RESPONSE).collect();
    let (collected, _) = tokio::join!(collect, Box::into_pin(io));
    let body = collected
        .map_err(|e| {
            (
                REQUEST_ERROR,
                format!("{method} {uri}: reading the response failed: {e}"),
            )
        })?
        .to_bytes()
        .to_vec();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    Ok((parts.status.as_u16(), headers, body))
}
