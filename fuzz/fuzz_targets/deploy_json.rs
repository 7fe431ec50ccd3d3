//! The JSON parts of a deploy: a function's config, its variables and an application's manifest. Any
//! bytes are one of them or an error; a config read once reads the same after writing it out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_api::{AppDeploy, ConfigUpdate, FunctionConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = serde_json::from_slice::<FunctionConfig>(data) {
        let written = serde_json::to_vec(&config).expect("a config writes out");
        let again: FunctionConfig = serde_json::from_slice(&written).expect("and reads back");
        assert_eq!(again, config);
    }
    let _ = serde_json::from_slice::<ConfigUpdate>(data);
    let _ = serde_json::from_slice::<AppDeploy>(data);
});
