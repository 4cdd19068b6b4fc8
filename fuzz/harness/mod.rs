//! The bodies of huddle's fuzz targets, shared by two callers: the
//! `cargo fuzz` binaries in `fuzz/fuzz_targets/` (nightly, libFuzzer) and
//! `tests/fuzz_corpus.rs`, which replays every input the fuzzers kept
//! (`fuzz/corpus/<target>/`) under an ordinary stable `cargo test`.
//!
//! Invariant: every target takes any bytes. It returns normally when huddle
//! handled them (refused or accepted) and panics only when huddle broke a
//! promise: a decoder panicked, a round trip changed a value, a node's
//! containment caught a panic (`Node::contained_panics`; contained is still
//! a bug), or a node stopped answering. So a panic here is a finding.
//!
//! Inputs are structured where random bytes would never get past the first
//! length check: the targets read them with `arbitrary` and build frames,
//! store records and JSON from genuine ones, then damage them.

// The in-memory mesh of the integration tests: real nodes, frames carried
// by a queue, virtual time. One copy serves tests and fuzzers.
#[path = "../../tests/common/mod.rs"]
pub mod mesh;

pub mod api;
pub mod atrest;
pub mod blobs;
pub mod decoders;
pub mod peer;
pub mod sealed;
pub mod stored;
pub mod sync;
pub mod trail;

use arbitrary::{Arbitrary, Unstructured};

use mesh::mutate::Mutation;

/// A target's body: any bytes in, a panic only on a broken promise.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/corpus/<name>/` and the binaries call
/// them.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", decoders::frame),
    ("credentials", decoders::credentials),
    ("records", decoders::records),
    ("catalog", peer::catalog),
    ("sync_check", sync::sync_check),
    ("stored", stored::stored),
    ("api_json", api::api_json),
    ("member_peer", peer::member_peer),
    ("blobs", blobs::blobs),
    ("atrest", atrest::atrest),
    ("trail", trail::trail_target),
    ("sealed", sealed::sealed_target),
];

/// A damage done to genuine bytes (a frame, a record): the same kinds the
/// property tests use (`tests/common/mutate.rs`), chosen by the fuzzer.
#[derive(Arbitrary, Debug, Clone)]
pub enum Damage {
    Flip { at: usize, bit: u8 },
    Truncate { at: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
    Insert { at: usize, bytes: Vec<u8> },
    Cut { at: usize, len: u8 },
}

impl Damage {
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        let m = match self.clone() {
            Damage::Flip { at, bit } => Mutation::Flip { at, bit },
            Damage::Truncate { at } => Mutation::Truncate { at },
            Damage::Overwrite { at, bytes } => Mutation::Overwrite { at, bytes },
            Damage::Insert { at, bytes } => Mutation::Insert { at, bytes },
            Damage::Cut { at, len } => Mutation::Cut {
                at,
                len: len.into(),
            },
        };
        m.apply(bytes);
    }
}

/// Reads a `T` from the input, or `None` when the input is too short or
/// malformed for it (the fuzzer then tries another).
pub fn structured<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// `items[pick % len]`, or `None` if there are none.
pub fn pick<T: Clone>(items: &[T], pick: u16) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(pick) % items.len()].clone())
}
