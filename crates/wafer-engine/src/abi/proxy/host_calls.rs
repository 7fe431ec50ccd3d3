//! The proxy-wasm 0.2 host calls wafer implements (logging, time, buffers, header maps, properties and
//! local responses), and the linker that offers them with Layotto's Runtime ABI and an `Unimplemented`
//! stub for every other `proxy_*` import.

use super::context::{
    LocalResponse, ProxyState, BUFFER_PLUGIN_CONFIGURATION, BUFFER_VM_CONFIGURATION,
};
use super::memory::{
    ctx, decode_pairs, encode_pairs, give, len_u32, read, read_string, splice, status, status_of,
    write, Ctx,
};
use super::runtime_abi;
use wafer_api::LogLevel;
use wasmtime::{Linker, Module, Val};

/// A linker for `module`: `wasi` (the WASI imports), the host calls below, Layotto's Runtime ABI, and an
/// `Unimplemented` stub for each other `proxy_*` function it imports.
pub(crate) fn linker_for(
    wasi: &Linker<ProxyState>,
    module: &Module,
) -> wasmtime::Result<Linker<ProxyState>> {
    let mut linker = wasi.clone();
    for import in module.imports() {
        let Some(ty) = import.ty().func().cloned() else {
            continue;
        };
        if import.module() != "env" || !import.name().starts_with("proxy_") {
            continue;
        }
        let returns_status =
            ty.results().len() == 1 && matches!(ty.results().next(), Some(wasmtime::ValType::I32));
        linker.func_new("env", import.name(), ty, move |_, _, results| {
            if returns_status {
                results[0] = Val::I32(status::UNIMPLEMENTED);
            } else {
                for r in results.iter_mut() {
                    *r = Val::I32(0);
                }
            }
            Ok(())
        })?;
    }
    linker.allow_shadowing(true);
    add_to_linker(&mut linker)?;
    runtime_abi::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// The standard host calls.
fn add_to_linker(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    add_logging_and_time(linker)?;
    add_buffers(linker)?;
    add_header_maps(linker)?;
    add_properties_and_responses(linker)
}

/// `proxy_log`, the log level, the clock, and the stream calls a one-request run accepts as no-ops.
fn add_logging_and_time(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32| -> i32 {
            let message = match read_string(&mut caller, ptr, len) {
                Ok(m) => m,
                Err(code) => return code,
            };
            // proxy-wasm numbers its levels as wafer ranks them: trace 0 to critical 5.
            ctx(&mut caller).log(LogLevel::from_rank(level.into()), &message);
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, ret: i32| -> i32 {
            status_of(write(&mut caller, ret, &1i32.to_le_bytes()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, ret: i32| -> i32 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            status_of(write(&mut caller, ret, &now.to_le_bytes()))
        },
    )?;
    for name in [
        "proxy_set_tick_period_milliseconds",
        "proxy_set_effective_context",
        "proxy_continue_stream",
        "proxy_close_stream",
    ] {
        linker.func_wrap("env", name, |_: Ctx<'_>, _: i32| -> i32 { status::OK })?;
    }
    for name in [
        "proxy_done",
        "proxy_continue_request",
        "proxy_continue_response",
        "proxy_clear_route_cache",
    ] {
        linker.func_wrap("env", name, |_: Ctx<'_>| -> i32 { status::OK })?;
    }
    Ok(())
}

/// Reading and writing the request and response bodies and the call data.
fn add_buffers(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>, (kind, start, max, ret_ptr, ret_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let data = {
                    let buffer = match kind {
                        BUFFER_VM_CONFIGURATION | BUFFER_PLUGIN_CONFIGURATION => Vec::new(),
                        _ => match ctx(&mut caller).buffer(kind) {
                            Some(b) => b.clone(),
                            None => return Ok(status::NOT_FOUND),
                        },
                    };
                    let start = (start as u32 as usize).min(buffer.len());
                    let end = start.saturating_add(max as u32 as usize).min(buffer.len());
                    buffer[start..end].to_vec()
                };
                give(&mut caller, &data, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Ctx<'_>, kind: i32, ret_len: i32, ret_flags: i32| -> i32 {
            let Some(len) = ctx(&mut caller).buffer(kind).map(|b| b.len()) else {
                return status::NOT_FOUND;
            };
            status_of(
                write(&mut caller, ret_len, &len_u32(len).to_le_bytes())
                    .and_then(|()| write(&mut caller, ret_flags, &1u32.to_le_bytes())),
            )
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32| -> i32 {
            let data = match read(&mut caller, ptr, len) {
                Ok(d) => d,
                Err(code) => return code,
            };
            match ctx(&mut caller).buffer(kind) {
                Some(buffer) => {
                    splice(buffer, start as u32 as usize, size as u32 as usize, &data);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    Ok(())
}

/// Reading and changing the request and response headers and trailers.
fn add_header_maps(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, (kind, ret_ptr, ret_len): (i32, i32, i32)| {
            Box::new(async move {
                let Some(encoded) = ctx(&mut caller).map(kind).map(|m| encode_pairs(m)) else {
                    return Ok(status::NOT_FOUND);
                };
                give(&mut caller, &encoded, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, kind: i32, ptr: i32, len: i32| -> i32 {
            let Some(pairs) = read(&mut caller, ptr, len)
                .ok()
                .and_then(|b| decode_pairs(&b))
            else {
                return status::BAD_ARGUMENT;
            };
            match ctx(&mut caller).map(kind) {
                Some(map) => {
                    *map = pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect();
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Ctx<'_>, kind: i32, ret: i32| -> i32 {
            let Some(size) = ctx(&mut caller).map(kind).map(|m| encode_pairs(m).len()) else {
                return status::NOT_FOUND;
            };
            status_of(write(&mut caller, ret, &len_u32(size).to_le_bytes()))
        },
    )?;
    linker.func_wrap_async(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>,
         (kind, key_ptr, key_len, ret_ptr, ret_len): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let key = match read_string(&mut caller, key_ptr, key_len) {
                    Ok(k) => k.to_ascii_lowercase(),
                    Err(code) => return Ok(code),
                };
                let value = ctx(&mut caller)
                    .map(kind)
                    .and_then(|m| m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()));
                let Some(value) = value else {
                    return Ok(status::NOT_FOUND);
                };
                give(&mut caller, value.as_bytes(), ret_ptr, ret_len).await
            })
        },
    )?;
    for (name, replace) in [
        ("proxy_add_header_map_value", false),
        ("proxy_replace_header_map_value", true),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Ctx<'_>,
                  kind: i32,
                  key_ptr: i32,
                  key_len: i32,
                  value_ptr: i32,
                  value_len: i32|
                  -> i32 {
                let (key, value) = match (
                    read_string(&mut caller, key_ptr, key_len),
                    read_string(&mut caller, value_ptr, value_len),
                ) {
                    (Ok(k), Ok(v)) => (k.to_ascii_lowercase(), v),
                    (Err(code), _) | (_, Err(code)) => return code,
                };
                match ctx(&mut caller).map(kind) {
                    Some(map) => {
                        if replace {
                            map.retain(|(k, _)| *k != key);
                        }
                        map.push((key, value));
                        status::OK
                    }
                    None => status::NOT_FOUND,
                }
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, kind: i32, key_ptr: i32, key_len: i32| -> i32 {
            let key = match read_string(&mut caller, key_ptr, key_len) {
                Ok(k) => k.to_ascii_lowercase(),
                Err(code) => return code,
            };
            match ctx(&mut caller).map(kind) {
                Some(map) => {
                    map.retain(|(k, _)| *k != key);
                    status::OK
                }
                None => status::NOT_FOUND,
            }
        },
    )?;
    Ok(())
}

/// Properties (`request.path`, `plugin_name`, …) and `proxy_send_local_response`.
fn add_properties_and_responses(linker: &mut Linker<ProxyState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        "env",
        "proxy_get_property",
        |mut caller: Ctx<'_>, (path_ptr, path_len, ret_ptr, ret_len): (i32, i32, i32, i32)| {
            Box::new(async move {
                let path = match read_string(&mut caller, path_ptr, path_len) {
                    Ok(p) => p.trim_end_matches('\0').to_string(),
                    Err(code) => return Ok(code),
                };
                let value = ctx(&mut caller)
                    .properties
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == path)
                    .map(|(_, v)| v.clone());
                let Some(value) = value else {
                    return Ok(status::NOT_FOUND);
                };
                give(&mut caller, &value, ret_ptr, ret_len).await
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Ctx<'_>,
         path_ptr: i32,
         path_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> i32 {
            let (path, value) = match (
                read_string(&mut caller, path_ptr, path_len),
                read(&mut caller, value_ptr, value_len),
            ) {
                (Ok(p), Ok(v)) => (p.trim_end_matches('\0').to_string(), v),
                (Err(code), _) | (_, Err(code)) => return code,
            };
            ctx(&mut caller).properties.push((path, value));
            status::OK
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         status_code: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> i32 {
            let body = match read(&mut caller, body_ptr, body_len) {
                Ok(b) => b,
                Err(code) => return code,
            };
            let headers = if headers_len == 0 {
                Vec::new()
            } else {
                match read(&mut caller, headers_ptr, headers_len)
                    .ok()
                    .and_then(|b| decode_pairs(&b))
                {
                    Some(h) => h,
                    None => return status::BAD_ARGUMENT,
                }
            };
            let Ok(status_code) = u16::try_from(status_code) else {
                return status::BAD_ARGUMENT;
            };
            ctx(&mut caller).local = Some(LocalResponse {
                status: status_code,
                headers,
                body,
            });
            status::OK
        },
    )?;
    Ok(())
}
