//! Sizes and durations as people type them (`64MiB`, `500ms`): any text is a number or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_api::units::{parse_bytes, parse_memory_mb, parse_timeout_ms};

fuzz_target!(|text: &str| {
    let _ = parse_bytes(text);
    let _ = parse_memory_mb(text);
    let _ = parse_timeout_ms(text);
});
