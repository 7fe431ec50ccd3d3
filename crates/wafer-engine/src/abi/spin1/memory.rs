//! Guest memory in the pre-component canonical ABI of Spin 1's interfaces (wit-bindgen 0.2): a string
//! or list is a `(pointer, length)` pair, a list of string pairs is 16-byte elements, an option or an
//! expected is a byte discriminant followed by its payload at its alignment, and the host allocates
//! what it hands the guest through the guest's `canonical_abi_realloc`.

use wasmtime::{AsContext, AsContextMut, Memory, TypedFunc};

/// The most bytes one string or list read from the guest may hold.
const MAX_READ: usize = 64 << 20;

/// A guest's memory and allocator.
#[derive(Clone)]
pub(super) struct Guest {
    pub(super) memory: Memory,
    realloc: TypedFunc<(i32, i32, i32, i32), i32>,
}

/// Why a guest's memory could not be read or written: the call traps with it.
pub(super) fn fault(what: impl std::fmt::Display) -> wasmtime::Error {
    wasmtime::Error::msg(format!(
        "the guest's memory is not as the Spin 1 ABI says: {what}"
    ))
}

impl Guest {
    /// The memory and allocator an instance exports.
    pub(super) fn of(
        memory: Option<Memory>,
        realloc: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
    ) -> wasmtime::Result<Self> {
        Ok(Self {
            memory: memory.ok_or_else(|| fault("it exports no `memory`"))?,
            realloc: realloc.ok_or_else(|| fault("it exports no `canonical_abi_realloc`"))?,
        })
    }

    /// Reads `len` bytes at `ptr`.
    pub(super) fn bytes(
        &self,
        store: impl AsContext,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<Vec<u8>> {
        let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
        if len > MAX_READ {
            return Err(fault(format!("a list of {len} bytes is too large")));
        }
        let data = self.memory.data(&store);
        data.get(ptr..ptr.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| fault(format!("{len} bytes at {ptr} are out of bounds")))
    }

    /// Reads a UTF-8 string.
    pub(super) fn string(
        &self,
        store: impl AsContext,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<String> {
        String::from_utf8(self.bytes(store, ptr, len)?).map_err(|_| fault("a string is not UTF-8"))
    }

    /// Reads a list of `(string, string)` at `ptr` with `len` elements.
    pub(super) fn pairs(
        &self,
        store: impl AsContext,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        let store = store.as_context();
        let raw = self.bytes(&store, ptr, len.saturating_mul(16))?;
        let word = |i: usize| i32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        (0..len as u32 as usize)
            .map(|n| {
                let at = n * 16;
                Ok((
                    self.string(&store, word(at), word(at + 4))?,
                    self.string(&store, word(at + 8), word(at + 12))?,
                ))
            })
            .collect()
    }

    /// Reads a list of strings (8-byte elements).
    pub(super) fn strings(
        &self,
        store: impl AsContext,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<Vec<String>> {
        let store = store.as_context();
        let raw = self.bytes(&store, ptr, len.saturating_mul(8))?;
        let word = |i: usize| i32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        (0..len as u32 as usize)
            .map(|n| self.string(&store, word(n * 8), word(n * 8 + 4)))
            .collect()
    }

    /// Writes `bytes` at `at`.
    pub(super) fn write(
        &self,
        mut store: impl AsContextMut,
        at: i32,
        bytes: &[u8],
    ) -> wasmtime::Result<()> {
        self.memory
            .write(&mut store, at as u32 as usize, bytes)
            .map_err(|_| fault(format!("{} bytes at {at} are out of bounds", bytes.len())))
    }

    /// Allocates `size` bytes aligned to `align` in the guest.
    pub(super) async fn alloc(
        &self,
        mut store: impl AsContextMut<Data: Send>,
        size: usize,
        align: i32,
    ) -> wasmtime::Result<i32> {
        if size == 0 {
            return Ok(align);
        }
        let size = i32::try_from(size).map_err(|_| fault("an allocation over 2 GiB"))?;
        self.realloc
            .call_async(&mut store, (0, 0, align, size))
            .await
    }

    /// Copies `bytes` into new guest memory: its `(pointer, length)`.
    pub(super) async fn put(
        &self,
        mut store: impl AsContextMut<Data: Send>,
        bytes: &[u8],
    ) -> wasmtime::Result<(i32, i32)> {
        let ptr = self.alloc(&mut store, bytes.len(), 1).await?;
        self.write(&mut store, ptr, bytes)?;
        Ok((ptr, bytes.len() as i32))
    }

    /// Copies a list of strings into new guest memory (8-byte elements).
    pub(super) async fn put_strings(
        &self,
        mut store: impl AsContextMut<Data: Send>,
        items: &[String],
    ) -> wasmtime::Result<(i32, i32)> {
        let mut elements = Vec::with_capacity(items.len() * 8);
        for item in items {
            let (ptr, len) = self.put(&mut store, item.as_bytes()).await?;
            elements.extend_from_slice(&ptr.to_le_bytes());
            elements.extend_from_slice(&len.to_le_bytes());
        }
        let ptr = self.alloc(&mut store, elements.len(), 4).await?;
        self.write(&mut store, ptr, &elements)?;
        Ok((ptr, items.len() as i32))
    }

    /// Copies a list of string pairs into new guest memory (16-byte elements).
    pub(super) async fn put_pairs(
        &self,
        mut store: impl AsContextMut<Data: Send>,
        pairs: &[(String, String)],
    ) -> wasmtime::Result<(i32, i32)> {
        let mut elements = Vec::with_capacity(pairs.len() * 16);
        for (a, b) in pairs {
            for s in [a, b] {
                let (ptr, len) = self.put(&mut store, s.as_bytes()).await?;
                elements.extend_from_slice(&ptr.to_le_bytes());
                elements.extend_from_slice(&len.to_le_bytes());
            }
        }
        let ptr = self.alloc(&mut store, elements.len(), 4).await?;
        self.write(&mut store, ptr, &elements)?;
        Ok((ptr, pairs.len() as i32))
    }
}

/// The little-endian bytes of `(pointer, length)`.
pub(super) fn pair(ptr: i32, len: i32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&ptr.to_le_bytes());
    out[4..].copy_from_slice(&len.to_le_bytes());
    out
}
