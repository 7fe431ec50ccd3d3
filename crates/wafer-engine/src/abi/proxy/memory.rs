//! The guest's side of a host call: reading and writing its linear memory, and handing it bytes it
//! allocates itself. The encodings proxy-wasm uses for header maps and buffer writes are
//! [`wafer_formats::proxy_wasm`]'s.

use super::context::{ProxyCtx, ProxyState};
pub(super) use wafer_formats::proxy_wasm::{decode_pairs, encode_pairs, len_u32, splice};
use wasmtime::{Caller, Extern};

/// proxy-wasm status codes.
pub(super) mod status {
    pub const OK: i32 = 0;
    pub const NOT_FOUND: i32 = 1;
    pub const BAD_ARGUMENT: i32 = 2;
    pub const INVALID_MEMORY_ACCESS: i32 = 6;
    pub const INTERNAL_FAILURE: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
}

/// A length as the guest's i32.
pub(super) fn len_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The caller of a host call.
pub(super) type Ctx<'a> = Caller<'a, ProxyState>;

fn memory(caller: &mut Ctx<'_>) -> Option<wasmtime::Memory> {
    caller.get_export("memory").and_then(Extern::into_memory)
}

pub(super) fn read(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, i32> {
    let memory = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    let mut out = vec![0; len as u32 as usize];
    memory
        .read(&*caller, ptr as u32 as usize, &mut out)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)?;
    Ok(out)
}

pub(super) fn read_string(caller: &mut Ctx<'_>, ptr: i32, len: i32) -> Result<String, i32> {
    read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

pub(super) fn write(caller: &mut Ctx<'_>, ptr: i32, bytes: &[u8]) -> Result<(), i32> {
    let memory = memory(caller).ok_or(status::INVALID_MEMORY_ACCESS)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, bytes)
        .map_err(|_| status::INVALID_MEMORY_ACCESS)
}

/// The run's proxy-wasm context.
pub(super) fn ctx<'a>(caller: &'a mut Ctx<'_>) -> &'a mut ProxyCtx {
    &mut caller.data_mut().ctx
}

pub(super) fn status_of(result: Result<(), i32>) -> i32 {
    result.err().unwrap_or(status::OK)
}

/// Copies `data` into memory the guest allocates (with `proxy_on_memory_allocate` or `malloc`) and
/// stores its address and length at `ret_ptr` and `ret_len`. A trap in the allocator ends the call.
pub(super) async fn give(
    caller: &mut Ctx<'_>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<i32> {
    let address = if data.is_empty() {
        0
    } else {
        let allocate = caller
            .get_export("proxy_on_memory_allocate")
            .or_else(|| caller.get_export("malloc"))
            .and_then(Extern::into_func);
        let Some(allocate) = allocate else {
            return Ok(status::INTERNAL_FAILURE);
        };
        let allocate = allocate.typed::<i32, i32>(&*caller)?;
        let address = allocate
            .call_async(&mut *caller, len_i32(data.len()))
            .await?;
        if address == 0 {
            return Ok(status::INTERNAL_FAILURE);
        }
        if let Err(code) = write(caller, address, data) {
            return Ok(code);
        }
        address
    };
    let written = write(caller, ret_ptr, &address.to_le_bytes())
        .and_then(|()| write(caller, ret_len, &len_i32(data.len()).to_le_bytes()));
    Ok(status_of(written))
}
