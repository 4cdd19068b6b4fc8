//! `cargo fuzz run records`: see `harness/decoders.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::decoders::records(data));
