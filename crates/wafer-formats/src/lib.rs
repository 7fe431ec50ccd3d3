//! The formats wafer reads from outside its process, as plain functions over bytes and text: what a
//! WAGI guest prints (`cgi`), the header maps and buffer writes proxy-wasm guests pass through their
//! memory (`proxy_wasm`), cron schedules (`cron`), container image tarballs (`oci_image`), and the
//! multipart forms deploys are sent as (`multipart`).
//!
//! They live apart from the engine and the server so that nothing heavy comes with them: the fuzz
//! targets under `fuzz/` build them with coverage instrumentation in seconds, where anything pulling in
//! wasmtime would take many minutes. Every function here takes any input — bytes a hostile guest chose,
//! text a user typed — and answers with a value or an error, never a panic.

pub mod cgi;
pub mod cron;
pub mod json;
pub mod multipart;
pub mod oci_image;
pub mod proxy_wasm;
