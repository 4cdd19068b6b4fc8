//! `cargo fuzz run stored`: see `harness/stored.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::stored::stored(data));
