//! A function's multipart deploy form: any body is read into its parts or refused, never past a part's
//! cap. The reader does not judge a part's bytes: a `module` part of none reads as an empty body, which
//! the engine refuses as `invalid_module` ("the module is empty"), as it does an empty `application/wasm`
//! body (`crates/wafer/tests/hostile.rs` deploys an empty module part).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_formats::multipart::{deploy_from_bytes, DeployCaps, FormError};

const CAPS: DeployCaps = DeployCaps {
    module: 4096,
    image: 8192,
    config: 2048,
};

fuzz_target!(|body: &[u8]| {
    let body = bytes::Bytes::copy_from_slice(body);
    match deploy_from_bytes(body, "multipart/form-data; boundary=wafer", CAPS) {
        Ok(form) => {
            assert!(form.body.len() <= CAPS.image);
            assert!(form.files.as_ref().is_none_or(|f| f.len() <= CAPS.module));
        }
        Err(FormError::TooLarge { cap, .. }) => assert!(cap > 0),
        Err(_) => {}
    }
});
