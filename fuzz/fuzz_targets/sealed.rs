//! `cargo fuzz run sealed`: see `harness/sealed.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::sealed::sealed_target(data));
