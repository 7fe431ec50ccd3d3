//! A function's multipart deploy form: any body is read into its parts or refused, never past a part's
//! cap, and a form read has a body unless it is a container naming an `oci://` image.
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
            assert!(!form.body.is_empty() || form.config.image.is_some() || form.config.kind.is_some());
        }
        Err(FormError::TooLarge { cap, .. }) => assert!(cap > 0),
        Err(_) => {}
    }
});
