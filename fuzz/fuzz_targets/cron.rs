//! A function's `schedule`: any text parses to a schedule or an error, and a schedule's ticks are walked
//! over any hour without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose where the hour starts, the rest is the expression.
    let Some((at, expr)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(expr) = std::str::from_utf8(expr) else {
        return;
    };
    if let Ok(schedule) = wafer_formats::cron::parse(expr) {
        let from = i64::from_le_bytes(*at) % 8_000_000_000_000;
        if let Some(tick) = wafer_formats::cron::latest_tick(&schedule, from, from + 3_600_000) {
            assert!(tick > from && tick <= from + 3_600_000);
        }
    }
});
