//! Layotto's Runtime ABI on top of proxy-wasm: `proxy_get_state(store, key)` reads a key-value store
//! granted to the function, and `proxy_invoke_service(id, method, param)` calls another deployed function
//! (by proxy-wasm id or name) with `param` as its request body and returns its response body. Both go
//! through the function's [`crate::host::platform::Guest`], which checks its grants.

use super::context::ProxyState;
use super::memory::{ctx, give, read, read_string, status, Ctx};
use crate::host::platform::PlatformError;
use bytes::Bytes;
use http::Request;
use wafer_api::LogLevel;
use wasmtime::Linker;

/// Links `proxy_get_state` and `proxy_invoke_service`.
pub(super) fn add_to_linker(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "env",
        "proxy_get_state",
        |mut caller: Ctx<'_>,
         (store_ptr, store_len, key_ptr, key_len, ret_ptr, ret_len): (
            i32,
            i32,
            i32,
            i32,
            i32,
            i32,
        )| {
            Box::new(async move {
                let (store, key) = match (
                    read_string(&mut caller, store_ptr, store_len),
                    read_string(&mut caller, key_ptr, key_len),
                ) {
                    (Ok(s), Ok(k)) => (s, k),
                    (Err(code), _) | (_, Err(code)) => return Ok(code),
                };
                let guest = ctx(&mut caller).guest.clone();
                let got = async { guest.store(&store)?.kv_get(&store, &key).await }.await;
                match got {
                    // As Layotto answers for a missing key: success, with no data.
                    Ok(value) => {
                        give(&mut caller, &value.unwrap_or_default(), ret_ptr, ret_len).await
                    }
                    Err(e) => Ok(failed(&mut caller, "proxy_get_state", &e)),
                }
            })
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_invoke_service",
        |mut caller: Ctx<'_>,
         (id_ptr, id_len, method_ptr, method_len, param_ptr, param_len, ret_ptr, ret_len): (
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
                let (target, method, param) = match (
                    read_string(&mut caller, id_ptr, id_len),
                    read_string(&mut caller, method_ptr, method_len),
                    read(&mut caller, param_ptr, param_len),
                ) {
                    (Ok(t), Ok(m), Ok(p)) => (t, m, p),
                    (Err(code), _, _) | (_, Err(code), _) | (_, _, Err(code)) => return Ok(code),
                };
                let guest = ctx(&mut caller).guest.clone();
                let answered = async {
                    let path = format!("/{}", method.trim_start_matches('/'));
                    let request = Request::post(path)
                        .header("id", target.as_str())
                        .body(Bytes::from(param))
                        .map_err(|e| PlatformError::Refused(e.to_string()))?;
                    let response = guest.call(&target, request).await?;
                    if response.status().is_success() {
                        Ok(response.into_body())
                    } else {
                        Err(PlatformError::Failed(format!(
                            "`{target}` answered {}: {}",
                            response.status(),
                            String::from_utf8_lossy(response.body())
                        )))
                    }
                }
                .await;
                match answered {
                    Ok(body) => give(&mut caller, &body, ret_ptr, ret_len).await,
                    Err(e) => Ok(failed(&mut caller, "proxy_invoke_service", &e)),
                }
            })
        },
    )?;
    Ok(())
}

/// Logs why a Runtime ABI call failed and returns the status the guest gets.
fn failed(caller: &mut Ctx<'_>, call: &str, error: &PlatformError) -> i32 {
    ctx(caller).log(LogLevel::Error, &format!("{call} failed: {error}"));
    match error {
        PlatformError::NotFound(_) => status::NOT_FOUND,
        PlatformError::Denied(_) | PlatformError::Refused(_) | PlatformError::TooDeep(_) => {
            status::BAD_ARGUMENT
        }
        PlatformError::Failed(_) => status::INTERNAL_FAILURE,
    }
}
