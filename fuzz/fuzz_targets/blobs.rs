//! `cargo fuzz run blobs`: see `harness/blobs.rs` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| huddle_fuzz::blobs::blobs(data));
