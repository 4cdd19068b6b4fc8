//! `cargo fuzz run catalog`: see `harness/peer.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::peer::catalog(data));
