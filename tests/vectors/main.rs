//! The test vectors of `protocol/vectors/*.json`: their generator and their
//! checks.
//!
//! Every vector is made from fixed secret keys (written in the files), and
//! Ed25519 signatures are deterministic, so the files are reproducible.
//! `HUDDLE_WRITE_VECTORS=1 cargo test --test vectors` (re)writes them; without
//! it, the generator must reproduce the files exactly, and then each file is
//! checked on its own terms, as a second implementation would use it: every
//! hex string is decoded with the public API, compared with the fields written
//! beside it, its signature verified with the public key given (by huddle and
//! independently with `verify_strict`), its derived values recomputed, and it
//! is re-encoded from those fields byte for byte. Every must-reject vector is
//! rejected with the error it names.
//!
//! Invariant: the checks read only the JSON on disk (the generator is not
//! consulted), so a vector file that passes here is a complete, self-standing
//! statement of the format.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ROOT};
use huddle::blobs::tree::{chunk_count, outline, root, verify_chunk, CHUNK_LEN};
use huddle::blobs::wire::{BlobRequest, BlobResponse, Want};
use huddle::blobs::{Attachment, BlobHash};
use huddle::codec::{DecodeError, Reader, Writer};
use huddle::crypto::{self, domain, AuthorityKey, DeviceKey};
use huddle::header::{conversation_id, ConversationHeader, ConversationKind};
use huddle::hlc::Hlc;
use huddle::ids::{ConversationId, DeviceId, MemberId, MessageId, TeamId};
use huddle::membership::{
    member_tag, Certificate, CertificateRequest, Pass, Revocation, RevocationTarget, Revocations,
    Secret, TokenError,
};
use huddle::message::{
    AckBy, Draft, Escalation, Fields, Message, Priority, Receipt, ReceiptKind, Reminder,
};
use huddle::node::{Command, Input, Node, NodeConfig, Output, Reply, Timer};
use huddle::replica::{Entry, Replica};
use huddle::store::{self, keys, MemoryStore, Store, StoreError, StoreOp, Stored};
use huddle::team::TEAM_DOC_ID;
use huddle::wire::{
    CatalogEntry, Frame, HeadsEntry, Reason, TrailHave, MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

mod blobs;
mod cast;
mod certificates;
mod clinical;
mod codecs;
mod documents;
mod frames;
mod headers;
mod messages;
mod primitives;
mod revocations;
mod sealed;
mod session;
mod storage;
use blobs::*;
use cast::*;
use certificates::*;
use clinical::*;
use codecs::*;
use documents::*;
use frames::*;
use headers::*;
use messages::*;
use primitives::*;
use revocations::*;
use sealed::*;
use session::*;
use storage::*;

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;
const FILES: [&str; 12] = [
    "primitives.json",
    "certificates.json",
    "revocations.json",
    "messages.json",
    "headers.json",
    "frames.json",
    "documents.json",
    "storage.json",
    "session.json",
    "clinical.json",
    "blobs.json",
    "sealed.json",
];

// ---------------------------------------------------------------------------
// Plumbing
// ---------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol/vectors")
}

fn load(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; generate it with HUDDLE_WRITE_VECTORS=1",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn hex(b: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(b)
}

fn unhex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER
        .decode(s.as_bytes())
        .unwrap_or_else(|e| panic!("not lowercase hex ({e}): {s}"))
}

fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or_else(|| panic!("no field {k:?} in {v}"))
}

fn st<'a>(v: &'a Value, k: &str) -> &'a str {
    get(v, k)
        .as_str()
        .unwrap_or_else(|| panic!("{k:?} is not a string in {v}"))
}

fn num(v: &Value, k: &str) -> u64 {
    get(v, k)
        .as_u64()
        .unwrap_or_else(|| panic!("{k:?} is not an unsigned integer in {v}"))
}

fn flag(v: &Value, k: &str) -> bool {
    get(v, k)
        .as_bool()
        .unwrap_or_else(|| panic!("{k:?} is not a boolean in {v}"))
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    get(v, k)
        .as_array()
        .unwrap_or_else(|| panic!("{k:?} is not an array in {v}"))
}

fn bytes(v: &Value, k: &str) -> Vec<u8> {
    unhex(st(v, k))
}

fn fixed<const N: usize>(v: &Value, k: &str) -> [u8; N] {
    bytes(v, k)
        .try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("{k:?} has {} bytes, not {N}", b.len()))
}

/// A vector's bytes: `hex`, then zeroes up to `zero_fill_to` if given (so
/// that megabyte-sized frames need not be spelled out).
fn vector_bytes(v: &Value) -> Vec<u8> {
    let mut b = bytes(v, "hex");
    if let Some(n) = v.get("zero_fill_to") {
        b.resize(n.as_u64().expect("zero_fill_to") as usize, 0);
    }
    b
}

fn label(l: &str) -> [u8; 32] {
    crypto::sha256(&[b"huddle/test-vectors/", l.as_bytes()])
}

/// A JSON list of hex 32-byte hashes.
fn hashes32(v: &Value, key: &str) -> Vec<[u8; 32]> {
    list(v, key)
        .iter()
        .map(|h| {
            unhex(h.as_str().expect("hex"))
                .try_into()
                .expect("32 bytes")
        })
        .collect()
}

fn id16(l: &str) -> [u8; 16] {
    label(l)[..16].try_into().expect("16 bytes")
}

fn decode_error_name(e: &DecodeError) -> &'static str {
    match e {
        DecodeError::Truncated(_) => "Truncated",
        DecodeError::TooLong(..) => "TooLong",
        DecodeError::Unknown(..) => "Unknown",
        DecodeError::Utf8(_) => "Utf8",
        DecodeError::Trailing(_) => "Trailing",
        DecodeError::Varint => "Varint",
        DecodeError::Invalid(_) => "Invalid",
    }
}

fn token_error_name(e: &TokenError) -> &'static str {
    match e {
        TokenError::Prefix => "Prefix",
        TokenError::Encoding => "Encoding",
        TokenError::Checksum => "Checksum",
        TokenError::Outdated(_) => "Outdated",
        TokenError::Decode(_) => "Decode",
    }
}

/// Asserts that `r` failed with the error named by the vector.
fn expect_decode_error<T: std::fmt::Debug>(v: &Value, r: Result<T, DecodeError>) {
    let why = st(v, "why");
    match r {
        Ok(t) => panic!("must-reject vector {why:?} decoded as {t:?}"),
        Err(e) => assert_eq!(
            decode_error_name(&e),
            st(v, "error"),
            "vector {why:?} failed with {e}"
        ),
    }
}

/// Checks `signed_message` = domain ‖ 0x00 ‖ `prefix` ‖ (encoding minus the
/// signature), and that the trailing 64 bytes are a strictly valid Ed25519
/// signature of it by `public` (checked without huddle's code).
fn check_signed(v: &Value, domain: &[u8], prefix: &[u8], encoded: &[u8], public: &[u8; 32]) {
    let (body, sig) = encoded.split_at(encoded.len() - 64);
    let expected = [domain, &[0u8], prefix, body].concat();
    assert_eq!(bytes(v, "signed_message"), expected, "signed_message");
    let key = ed25519_dalek::VerifyingKey::from_bytes(public).expect("a valid public key");
    let sig = ed25519_dalek::Signature::from_bytes(sig.try_into().expect("64 bytes"));
    key.verify_strict(&expected, &sig)
        .expect("the signature verifies strictly");
}

/// The scalar order ℓ of Ed25519, little-endian.
const ELL: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// The same signature with S replaced by S + ℓ: it passes the group equation
/// but S is not canonical, so it must be rejected (else ids are malleable).
fn malleate(sig: &[u8; 64]) -> [u8; 64] {
    let mut out = *sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(sig[32 + i]) + u16::from(ELL[i]) + carry;
        out[32 + i] = s as u8;
        carry = s >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn with_signature(encoded: &[u8], sig: &[u8; 64]) -> Vec<u8> {
    [&encoded[..encoded.len() - 64], sig.as_slice()].concat()
}

fn last_sig(encoded: &[u8]) -> [u8; 64] {
    encoded[encoded.len() - 64..].try_into().expect("64 bytes")
}

fn splice(b: &[u8], at: usize, remove: usize, insert: &[u8]) -> Vec<u8> {
    [&b[..at], insert, &b[at + remove..]].concat()
}

/// `b` with the varint at `at` re-encoded one byte longer than it must be.
fn nonminimal_varint(b: &[u8], at: usize) -> Vec<u8> {
    let mut r = Reader::new(&b[at..]);
    r.varint("v").expect("a varint");
    let n = r.position();
    let mut longer = b[at..at + n].to_vec();
    longer[n - 1] |= 0x80;
    longer.push(0);
    splice(b, at, n, &longer)
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

fn generate() -> Vec<(&'static str, Value)> {
    let c = Cast::new();
    let files = vec![
        (FILES[0], gen_primitives(&c)),
        (FILES[1], gen_certificates(&c)),
        (FILES[2], gen_revocations(&c)),
        (FILES[3], gen_messages(&c)),
        (FILES[4], gen_headers(&c)),
        (FILES[5], gen_frames(&c)),
        (FILES[6], gen_documents(&c)),
        (FILES[7], gen_storage(&c)),
        (FILES[8], gen_session(&c)),
        (FILES[9], gen_clinical(&c)),
        (FILES[10], gen_blobs(&c)),
        (FILES[11], gen_sealed(&c)),
    ];
    assert_eq!(files.iter().map(|(n, _)| *n).collect::<Vec<_>>(), FILES);
    files
}

/// With `HUDDLE_WRITE_VECTORS=1`, writes the vector files; otherwise checks
/// that the generator reproduces them exactly.
#[test]
fn vectors_are_reproducible() {
    let write = std::env::var("HUDDLE_WRITE_VECTORS").is_ok_and(|v| v == "1");
    let dir = vectors_dir();
    for (name, value) in generate() {
        let path = dir.join(name);
        if write {
            std::fs::create_dir_all(&dir).expect("create protocol/vectors");
            let text = serde_json::to_string_pretty(&value).expect("JSON") + "\n";
            std::fs::write(&path, text).expect("write vectors");
        }
        assert!(
            load(name) == value,
            "{name} differs from what the generator makes: if the format changed on purpose, \
             update protocol/ and regenerate with HUDDLE_WRITE_VECTORS=1"
        );
    }
}
