//! The check against real Automerge bytes: everything Automerge generates
//! passes; each hole (issue 18) is shown to hurt Automerge, then refused.

use std::io::Write;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ScalarValue, ROOT};

use super::super::tests::SCHEMA;
use super::super::{Replica, ReplicaError, Schema};
use super::*;

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A sync message as Automerge 0.12 writes one (V2, with its flags), with
/// `haves` given as Bloom filter bytes (no `last_sync`).
fn message(heads: &[automerge::ChangeHash], haves: &[Vec<u8>], changes: &[Vec<u8>]) -> Vec<u8> {
    let mut m = vec![0x43];
    leb(&mut m, heads.len() as u64);
    for h in heads {
        m.extend_from_slice(&h.0);
    }
    leb(&mut m, 0);
    leb(&mut m, haves.len() as u64);
    for bloom in haves {
        leb(&mut m, 0);
        leb(&mut m, bloom.len() as u64);
        m.extend_from_slice(bloom);
    }
    leb(&mut m, changes.len() as u64);
    for c in changes {
        leb(&mut m, c.len() as u64);
        m.extend_from_slice(c);
    }
    m.extend_from_slice(&[2, 0x02, 0x84]);
    m
}

/// A chunk with Automerge's header; its checksum is that of a chunk of
/// type `hashed_as` holding `hashed` (for a compressed change: the change).
fn chunk(kind: u8, data: &[u8], hashed_as: u8, hashed: &[u8]) -> Vec<u8> {
    let mut len = Vec::new();
    leb(&mut len, hashed.len() as u64);
    let hash = crate::crypto::sha256(&[&[hashed_as], &len, hashed]);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&hash[..4]);
    out.push(kind);
    leb(&mut out, data.len() as u64);
    out.extend_from_slice(data);
    out
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("in memory");
    e.finish().expect("in memory")
}

/// A change chunk's body (what follows its header).
fn body(raw: &[u8]) -> &[u8] {
    let mut c = Cursor(&raw[9..]);
    c.uleb("len").expect("a chunk");
    c.0
}

fn doc_with_a_change(actor: u8) -> Automerge {
    let mut doc = Automerge::new().with_actor(ActorId::from([actor; 16].as_slice()));
    let mut tx = doc.transaction();
    tx.put(ROOT, "k", ScalarValue::Bytes(vec![actor; 8]))
        .unwrap();
    tx.commit();
    doc
}

fn replica() -> Replica {
    Replica::new(&[5; 16], SCHEMA, &ActorId::from([6u8; 16].as_slice()))
}

fn refused(bytes: &[u8]) -> CheckError {
    let mut r = replica();
    match r.receive_sync(&mut sync::State::new(), bytes) {
        Err(ReplicaError::Refused(e)) => {
            assert_eq!(check_sync_message(bytes), Err(e.clone()));
            e
        }
        other => panic!("not refused: {other:?}"),
    }
}

/// Bloom filter bytes: entries, bits per entry, probes, then `bits` bytes.
fn bloom(entries: u64, bits_per_entry: u64, probes: u64, bits: usize) -> Vec<u8> {
    let mut b = Vec::new();
    leb(&mut b, entries);
    leb(&mut b, bits_per_entry);
    leb(&mut b, probes);
    b.resize(b.len() + bits, 0xff);
    b
}

/// The hole: a filter claiming one entry with zero bits per entry decodes,
/// Automerge takes it into the sync state, and the next message it
/// generates for that peer divides by zero.
#[test]
fn a_bloom_filter_with_no_bits_panics_automerge() {
    let mut doc = doc_with_a_change(1);
    let bad = message(&doc.get_heads(), &[bloom(1, 0, 7, 0)], &[]);
    let msg = sync::Message::decode(&bad).expect("Automerge decodes it");
    let mut state = sync::State::new();
    doc.receive_sync_message(&mut state, msg)
        .expect("and takes it");
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        doc.generate_sync_message(&mut state)
    }));
    assert!(answer.is_err(), "Automerge 0.12 panics on it");
}

#[test]
fn a_bloom_filter_with_no_bits_is_refused() {
    let heads = doc_with_a_change(1).get_heads();
    let bad = message(&heads, &[bloom(1, 0, 7, 0)], &[]);
    assert_eq!(refused(&bad), CheckError::BloomBitsPerEntry(0));
    // Entries claimed, the right parameters, the bits missing.
    let short = message(&heads, &[bloom(1, 10, 7, 0)], &[]);
    let want = CheckError::BloomBits {
        entries: 1,
        bits_per_entry: 10,
        held: 0,
    };
    assert_eq!(refused(&short), want);
    // Parameters with no entries: Automerge writes an empty filter.
    assert!(matches!(
        refused(&message(&heads, &[bloom(0, 10, 7, 0)], &[])),
        CheckError::Invalid(_)
    ));
}

/// Automerge allocates a vector of `probes` entries for every hash it
/// looks up: four billion probes is 16 GiB per lookup.
#[test]
fn a_huge_probe_count_is_refused() {
    let heads = doc_with_a_change(1).get_heads();
    let bad = message(&heads, &[bloom(1, 10, u64::from(u32::MAX), 2)], &[]);
    assert_eq!(refused(&bad), CheckError::BloomProbes(u32::MAX));
    let wide = message(&heads, &[bloom(1, 1000, 7, 125)], &[]);
    assert_eq!(refused(&wide), CheckError::BloomBitsPerEntry(1000));
    // Automerge's own parameters, and the margin, pass.
    for (bpe, probes) in [(10, 7), (20, 14), (1, 1)] {
        let bits = (1000 * bpe as usize).div_ceil(8);
        let ok = message(&heads, &[bloom(1000, bpe, probes, bits)], &[]);
        assert_eq!(check_sync_message(&ok), Ok(()));
    }
}

#[test]
fn counts_are_bounded_before_anything_is_read() {
    let mut m = vec![0x43];
    leb(&mut m, MAX_HASHES as u64 + 1);
    assert!(matches!(
        refused(&m),
        CheckError::TooMany { what: "heads", .. }
    ));
    let mut m = vec![0x43, 0, 0];
    leb(&mut m, MAX_HAVES as u64 + 1);
    assert!(matches!(
        refused(&m),
        CheckError::TooMany { what: "haves", .. }
    ));
    let mut m = vec![0x43, 0, 0, 0];
    leb(&mut m, u64::MAX);
    assert!(matches!(refused(&m), CheckError::TooMany { .. }));
    // Each costs Automerge a structure per byte or two of input.
    let empties = message(&[], &vec![vec![]; 16], &[]);
    assert_eq!(check_sync_message(&empties), Ok(()));
    let empty_entry = message(&[], &[], &[vec![]]);
    assert!(matches!(refused(&empty_entry), CheckError::Invalid(_)));
}

#[test]
fn what_automerge_would_not_parse_is_refused() {
    let raw = doc_with_a_change(1)
        .get_last_local_change()
        .unwrap()
        .raw_bytes()
        .to_vec();
    let ok = message(&[], &[], std::slice::from_ref(&raw));
    assert_eq!(check_sync_message(&ok), Ok(()));
    for cut in 1..raw.len() {
        let m = message(&[], &[], &[raw[..cut].to_vec()]);
        assert!(check_sync_message(&m).is_err(), "cut at {cut}");
    }
    let mut trailing = ok.clone();
    trailing.push(0);
    assert_eq!(
        check_sync_message(&trailing),
        Err(CheckError::Trailing("the sync message"))
    );
    let mut bundle = raw.clone();
    bundle[8] = 3;
    assert!(check_sync_message(&message(&[], &[], &[bundle])).is_err());
    let mut overlong = vec![0x43, 0x80, 0x00];
    overlong.extend_from_slice(&[0, 0, 0]);
    assert_eq!(
        check_sync_message(&overlong),
        Err(CheckError::Varint("heads"))
    );
    assert!(check_sync_message(&[0x44]).is_err());
}

/// A change chunk whose body is a real change with `extra` zero bytes as
/// its extra bytes (which Automerge keeps as they are), compressed the way
/// Automerge compresses changes.
fn compressed_change(extra: usize) -> Vec<u8> {
    let raw = doc_with_a_change(1)
        .get_last_local_change()
        .unwrap()
        .raw_bytes()
        .to_vec();
    let mut inflated = body(&raw).to_vec();
    inflated.resize(inflated.len() + extra, 0);
    chunk(2, &deflate(&inflated), 1, &inflated)
}

#[test]
fn a_compressed_change_is_accepted_within_the_cap() {
    let m = message(&[], &[], &[compressed_change(1024)]);
    assert!(check_with_cap(&m, MAX_INFLATED).unwrap() > 1024);
    let mut doc = Automerge::new();
    let msg = sync::Message::decode(&m).unwrap();
    doc.receive_sync_message(&mut sync::State::new(), msg)
        .unwrap();
    assert_eq!(
        doc.get_heads().len(),
        1,
        "Automerge loads it: a valid chunk"
    );
}

/// The bomb: less than one frame on the wire, that Automerge inflates to
/// 64 MiB in one allocation (and deflate allows ratios near 1000:1).
#[test]
fn a_compressed_change_past_the_cap_is_refused() {
    let m = message(&[], &[], &[compressed_change(MAX_INFLATED as usize)]);
    assert!(m.len() < 1 << 20, "{} bytes", m.len());
    assert_eq!(refused(&m), CheckError::Inflated);
    assert!(CheckError::Inflated.is_limit());
}

/// A document chunk with one deflated ops column of `zeros` zero bytes.
fn document_with_column(zeros: usize) -> Vec<u8> {
    let mut d = Vec::new();
    leb(&mut d, 1);
    leb(&mut d, 16);
    d.extend_from_slice(&[7; 16]);
    leb(&mut d, 0); // heads
    leb(&mut d, 0); // change columns
    let col = deflate(&vec![0; zeros]);
    leb(&mut d, 1);
    leb(&mut d, (1 << 4) | 0b1000 | 1); // a deflated column
    leb(&mut d, col.len() as u64);
    d.extend_from_slice(&col);
    chunk(0, &d, 0, &d)
}

#[test]
fn a_document_column_past_the_cap_is_refused() {
    let cap = 1 << 20;
    let small = message(&[], &[], &[document_with_column(1000)]);
    assert_eq!(check_with_cap(&small, cap), Ok(1000));
    let big = message(&[], &[], &[document_with_column(cap as usize + 1)]);
    assert_eq!(check_with_cap(&big, cap), Err(CheckError::Inflated));
    // The cap is on the message: parts each under it, together over it.
    let half = document_with_column(cap as usize / 2 + 1);
    let both = message(&[], &[], &[half.clone(), half]);
    assert_eq!(check_with_cap(&both, cap), Err(CheckError::Inflated));
}

#[test]
fn a_change_with_a_deflated_column_is_refused() {
    let mut d = Vec::new();
    d.push(0); // deps
    leb(&mut d, 16);
    d.extend_from_slice(&[7; 16]);
    d.extend_from_slice(&[1, 1, 0, 0, 0]); // seq, start op, time, message, other actors
    let col = deflate(&[0; 100]);
    leb(&mut d, 1);
    leb(&mut d, (1 << 4) | 0b1000);
    leb(&mut d, col.len() as u64);
    d.extend_from_slice(&col);
    let m = message(&[], &[], &[chunk(1, &d, 1, &d)]);
    assert!(matches!(
        check_sync_message(&m),
        Err(CheckError::Invalid(_))
    ));
}

/// Deterministic bytes of `len`, compressible about as well as text.
fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            b"abcdefgh 0123"[(x >> 60) as usize % 13]
        })
        .collect()
}

fn write(doc: &mut Automerge, n: u64, size: usize) {
    let list = match doc.get(ROOT, "list").unwrap() {
        Some((automerge::Value::Object(ObjType::List), id)) => id,
        _ => {
            let mut tx = doc.transaction();
            let id = tx.put_object(ROOT, "list", ObjType::List).unwrap();
            tx.commit();
            id
        }
    };
    let mut tx = doc.transaction();
    if n.is_multiple_of(3) {
        tx.put(
            ROOT,
            format!("k{}", n % 5),
            ScalarValue::Bytes(value(n, size)),
        )
        .unwrap();
    } else {
        tx.insert(&list, 0, ScalarValue::Bytes(value(n, size)))
            .unwrap();
    }
    tx.commit();
}

/// Checks `m`, returning what it inflated; fails the case if refused.
fn passes(m: &[u8]) -> Result<u64, proptest::test_runner::TestCaseError> {
    check_with_cap(m, MAX_INFLATED)
        .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("refused: {e}")))
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(64))]

    /// Every sync message Automerge generates, over random writes and
    /// syncs among three documents (one joining late with nothing, so it
    /// is sent whole), passes; so does every change compressed the way
    /// Automerge compresses it.
    #[test]
    fn every_message_automerge_generates_passes(
        steps in proptest::collection::vec((0u8..3, 0u8..3, 0u8..8, 0usize..700), 1..80)
    ) {
        let mut docs: Vec<Automerge> = (1..=3u8)
            .map(|i| Automerge::new().with_actor(ActorId::from([i; 16].as_slice())))
            .collect();
        let mut states: Vec<Vec<sync::State>> =
            (0..3).map(|_| (0..3).map(|_| sync::State::new()).collect()).collect();
        for (n, (from, to, op, size)) in steps.into_iter().enumerate() {
            let (from, to) = (from as usize, to as usize);
            if from == to || op >= 6 {
                if from == 2 && n < 40 {
                    continue; // the latecomer writes nothing at first
                }
                write(&mut docs[from], n as u64, size);
                let mut change = docs[from].get_last_local_change().unwrap();
                let heads = docs[from].get_heads();
                let one = message(&heads, &[], &[change.bytes().into_owned()]);
                passes(&one)?;
                continue;
            }
            if (from == 2 || to == 2) && n < 40 {
                continue;
            }
            // A few rounds, as a session runs until quiet.
            for _ in 0..4 {
                let Some(msg) = docs[from].generate_sync_message(&mut states[from][to]) else {
                    break;
                };
                let bytes = msg.encode();
                passes(&bytes)?;
                let msg = sync::Message::decode(&bytes).unwrap();
                docs[to].receive_sync_message(&mut states[to][from], msg).unwrap();
                if let Some(back) = docs[to].generate_sync_message(&mut states[to][from]) {
                    let bytes = back.encode();
                    passes(&bytes)?;
                    let back = sync::Message::decode(&bytes).unwrap();
                    docs[from].receive_sync_message(&mut states[from][to], back).unwrap();
                }
            }
        }
    }
}

/// The cases the proptest is there for, made sure of: a peer with nothing
/// is sent the whole document, with deflated columns, and a big change
/// is compressed; both pass, and inflate.
#[test]
fn a_whole_document_and_a_compressed_change_pass() {
    let mut a = Automerge::new().with_actor(ActorId::from([1u8; 16].as_slice()));
    for n in 0..20 {
        write(&mut a, n, 300);
    }
    let mut b = Automerge::new();
    let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
    let mut whole = 0;
    for _ in 0..4 {
        if let Some(m) = a.generate_sync_message(&mut sa) {
            let bytes = m.encode();
            if check_with_cap(&bytes, MAX_INFLATED).unwrap() > 0 {
                whole += 1;
            }
            b.receive_sync_message(&mut sb, sync::Message::decode(&bytes).unwrap())
                .unwrap();
        }
        if let Some(m) = b.generate_sync_message(&mut sb) {
            let bytes = m.encode();
            check_sync_message(&bytes).unwrap();
            a.receive_sync_message(&mut sa, sync::Message::decode(&bytes).unwrap())
                .unwrap();
        }
    }
    assert_eq!(a.get_heads(), b.get_heads());
    assert_eq!(whole, 1, "the document went whole, with deflated columns");
    let mut change = a.get_last_local_change().unwrap();
    let compressed = change.bytes().into_owned();
    assert_eq!(compressed[8], 2, "a change over 256 bytes is compressed");
    let m = message(&a.get_heads(), &[], &[compressed]);
    assert!(check_with_cap(&m, MAX_INFLATED).unwrap() > 300);
}

mod findings;
