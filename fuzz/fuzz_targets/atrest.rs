//! `cargo fuzz run atrest`: see `harness/atrest.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::atrest::atrest(data));
