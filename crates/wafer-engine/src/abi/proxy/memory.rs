//! The guest's side of a host call: reading and writing its linear memory, handing it bytes it allocates
//! itself, and the encodings proxy-wasm uses for header maps and buffer writes.

use super::context::{ProxyCtx, ProxyState};
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

/// Encodes header pairs as proxy-wasm does: a count, each key and value length, then each key and value
/// followed by a NUL.
pub(super) fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&len_u32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(&len_u32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

pub(super) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Decodes header pairs encoded as [`encode_pairs`] does.
pub(super) fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    if count > bytes.len() / 8 {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(count);
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?;
        at += k + 1;
        let value = bytes.get(at..at + v)?;
        at += v + 1;
        pairs.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Some(pairs)
}

/// Replaces `size` bytes at `start` of `buffer` with `data`, as proxy-wasm's `set_buffer_bytes` does:
/// `start` past the end appends, and the range is clamped to the buffer.
pub(super) fn splice(buffer: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
    let start = start.min(buffer.len());
    let end = start.saturating_add(size).min(buffer.len());
    buffer.splice(start..end, data.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_pairs_round_trip() {
        let pairs = vec![
            (":path".to_string(), "/x?y=1".to_string()),
            ("id".to_string(), "id_1".to_string()),
            ("empty".to_string(), String::new()),
        ];
        assert_eq!(decode_pairs(&encode_pairs(&pairs)), Some(pairs));
        assert_eq!(decode_pairs(&encode_pairs(&[])), Some(vec![]));
        assert_eq!(decode_pairs(&[9, 0, 0, 0, 1]), None);
    }

    #[test]
    fn buffer_writes_prepend_append_and_replace() {
        let mut b = b"world".to_vec();
        splice(&mut b, 0, 0, b"hello ");
        assert_eq!(b, b"hello world");
        splice(&mut b, i32::MAX as usize, 0, b"!");
        assert_eq!(b, b"hello world!");
        splice(&mut b, 0, usize::MAX, b"bye");
        assert_eq!(b, b"bye");
    }
}
