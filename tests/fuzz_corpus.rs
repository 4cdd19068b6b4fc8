//! Every input the fuzzers kept, replayed under stable `cargo test`: each
//! file in `fuzz/corpus/<target>/` goes through the same target body the
//! `cargo fuzz` binary runs (`fuzz/harness/`), so the README's test command
//! covers what the fuzzers found without a nightly build. A target body
//! panics only on a broken promise (see `fuzz/harness/mod.rs`), so a
//! failing file names a regression.

#![cfg(feature = "cli")]

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str) {
    let (_, run) = harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    for f in files {
        let data = std::fs::read(&f).expect("a corpus file reads");
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            // The stateful target's input read as its steps, to read a finding.
            let steps = match target {
                "member_peer" => harness::peer::member_peer_steps(&data),
                _ => String::new(),
            };
            panic!("{} broke a promise (see above) {steps}", f.display());
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_a_test() {
    let here = include_str!("fuzz_corpus.rs");
    for (name, _) in harness::TARGETS {
        assert!(
            here.contains(&format!("replay(\"{name}\")")),
            "{name} is not replayed"
        );
    }
}

#[test]
fn frame() {
    replay("frame");
}

#[test]
fn credentials() {
    replay("credentials");
}

#[test]
fn records() {
    replay("records");
}

#[test]
fn blobs() {
    replay("blobs");
}

#[test]
fn atrest() {
    replay("atrest");
}

#[test]
fn trail() {
    replay("trail");
}

#[test]
fn sealed() {
    replay("sealed");
}

#[test]
fn catalog() {
    replay("catalog");
}

#[test]
fn sync_check() {
    replay("sync_check");
}

#[test]
fn stored() {
    replay("stored");
}

#[test]
fn api_json() {
    replay("api_json");
}

#[test]
fn member_peer() {
    replay("member_peer");
}
