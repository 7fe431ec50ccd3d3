//! What proxy-wasm guests pass through their memory: header maps, and writes into the host's buffers.

/// `n` as the 32-bit length proxy-wasm encodes, saturating.
pub fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Encodes header pairs as proxy-wasm does: a count, each key and value length, then each key and value
/// followed by a NUL.
pub fn encode_pairs(pairs: &[(String, String)]) -> Vec<u8> {
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

/// Decodes header pairs encoded as [`encode_pairs`] does; `None` when the bytes do not hold them.
/// Keys and values that are not UTF-8 are read lossily.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
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
    let mut take = |len: usize| -> Option<String> {
        let text = bytes.get(at..at.checked_add(len)?)?;
        at = at.checked_add(len)?.checked_add(1)?;
        Some(String::from_utf8_lossy(text).into_owned())
    };
    for (k, v) in sizes {
        let key = take(k)?;
        let value = take(v)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

/// Replaces `size` bytes at `start` of `buffer` with `data`, as proxy-wasm's `set_buffer_bytes` does:
/// `start` past the end appends, and the range is clamped to the buffer.
pub fn splice(buffer: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
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
        // Lengths past the end, as large as a u32 goes, are refused, not followed.
        let mut huge = vec![1, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_pairs(&huge), None);
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
