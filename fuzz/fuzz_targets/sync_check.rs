//! `cargo fuzz run sync_check`: see `harness/sync.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::sync::sync_check(data));
