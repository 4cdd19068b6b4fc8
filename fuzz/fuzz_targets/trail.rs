//! `cargo fuzz run trail`: see `harness/trail.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::trail::trail_target(data));
