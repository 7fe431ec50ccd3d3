//! A `spin.toml`: any text reads as an application or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|text: &str| {
    let given = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
    let _ = wafer_api::spin::read(text, None, &given);
});
