//! `cargo fuzz run api_json`: see `harness/api.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::api::api_json(data));
