//! What a proxy-wasm guest hands over in its memory: any bytes decode to header pairs or to nothing,
//! pairs decoded once encode and decode to themselves, and buffer writes at any offset stay in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_formats::proxy_wasm::{decode_pairs, encode_pairs, splice};

fuzz_target!(|data: &[u8]| {
    if let Some(pairs) = decode_pairs(data) {
        assert_eq!(decode_pairs(&encode_pairs(&pairs)), Some(pairs));
    }
    // The first 8 bytes are a write's start and size, the rest its data, into a buffer of the data.
    if let (Some(start), Some(size)) = (data.get(0..4), data.get(4..8)) {
        let start = u32::from_le_bytes([start[0], start[1], start[2], start[3]]) as usize;
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let mut buffer = data.to_vec();
        let written = &data[8..];
        splice(&mut buffer, start, size, written);
        assert!(buffer.len() <= data.len() + written.len());
    }
});
