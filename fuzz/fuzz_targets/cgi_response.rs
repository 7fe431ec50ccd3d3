//! What a WAGI guest prints: any bytes parse to a head or an error, and the body starts inside them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|stdout: &[u8]| {
    if let Ok(head) = wafer_formats::cgi::parse(stdout) {
        assert!(head.body_at <= stdout.len());
        assert!(head.body_at > 0, "a head ends with a blank line");
    }
});
