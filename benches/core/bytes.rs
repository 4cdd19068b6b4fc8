//! Bytes at rest: per message, as written and compacted, in the
//! `MemoryStore` and in sled, and what one message costs inside Automerge.

use super::*;

/// Bytes of a saved Automerge document holding `values` as list items
/// inserted one change each (as the node does), or all in one change.
fn automerge_bytes(values: &[Vec<u8>], one_change_each: bool) -> usize {
    use automerge::transaction::{CommitOptions, Transactable};
    let mut doc = automerge::Automerge::new();
    let mut tx = doc.transaction();
    let list = tx
        .put_object(automerge::ROOT, "msgs", automerge::ObjType::List)
        .expect("fresh document");
    tx.commit();
    let mut tx = doc.transaction();
    for (i, v) in values.iter().enumerate() {
        tx.insert(&list, 0, automerge::ScalarValue::Bytes(v.clone()))
            .expect("insert");
        if one_change_each {
            tx.commit_with(CommitOptions::default().with_time(1_700_000_000 + 5 * i as i64));
            tx = doc.transaction();
        }
    }
    tx.commit();
    doc.save().len()
}

pub(super) fn bytes_at_rest(w: &Writer, compacted: &MemoryStore) {
    let n = w.conversation().len();
    let stored = store::load(&w.dev.store).expect("store loads");
    let doc = stored.docs.get(&w.conv.0).expect("stored conversation");
    let snapshot = doc.snapshot.as_ref().map_or(0, Vec::len);
    let chunks: usize = doc.chunks.iter().map(|(_, b)| b.len()).sum();
    let all = w.dev.store.scan_prefix(b"").expect("scan");
    let keys: usize = all.iter().map(|(k, _)| k.len()).sum();
    let durable = w.dev.store.durable_bytes();
    let other = durable - snapshot - chunks - keys;
    let compact = compacted.durable_bytes();
    let per_chunk = chunks as f64 / doc.chunks.len().max(1) as f64;
    report(&format!(
        "bytes/{} as written: MemoryStore::durable_bytes {durable} = {:.1} B/message: snapshot {snapshot} B ({:.1} B per message it covers), {} chunk values {chunks} B ({per_chunk:.0} B each), {} keys {keys} B, other values (header, team document) {other} B",
        label(n),
        durable as f64 / n as f64,
        snapshot as f64 / (n - doc.chunks.len()).max(1) as f64,
        doc.chunks.len(),
        all.len(),
    ));
    // Chunks are written until their bytes exceed the snapshot's, so just
    // before a compaction the store holds about twice the snapshot, plus keys.
    let c = compact as f64 / n as f64;
    report(&format!(
        "bytes/{} compacted (one snapshot, no chunks): MemoryStore::durable_bytes {compact} = {c:.1} B/message; the store cycles between that and ~{:.0} B/message just before the next compaction",
        label(n),
        2.0 * c + 31.0 * c / per_chunk,
    ));
    sled_bytes(n, &[("as written", &w.dev.store), ("compacted", compacted)]);
}

/// The same keys and values written to a SledStore and flushed.
#[cfg(feature = "store-sled")]
fn sled_bytes(n: usize, stores: &[(&str, &MemoryStore)]) {
    for (name, src) in stores {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sled = store::SledStore::open(dir.path()).expect("sled opens");
        let ops: Vec<StoreOp> = src
            .scan_prefix(b"")
            .expect("scan")
            .into_iter()
            .map(|(key, value)| StoreOp::Put { key, value })
            .collect();
        sled.apply(&ops).expect("sled writes");
        sled.flush().expect("sled flushes");
        let on_disk = sled.size_on_disk();
        report(&format!(
            "bytes/{} {name}: SledStore::size_on_disk after writing the same keys and values and flushing: {on_disk} = {:.1} B/message",
            label(n),
            on_disk as f64 / n as f64,
        ));
    }
}

#[cfg(not(feature = "store-sled"))]
fn sled_bytes(_: usize, _: &[(&str, &MemoryStore)]) {
    report("bytes: SledStore not measured (built without the store-sled feature)");
}

/// What the bytes of a stored message are made of, measured by saving
/// Automerge documents of the same shape with parts of the message left out.
pub(super) fn bytes_breakdown(w: &Writer) {
    let msgs: Vec<&Message> = w.conversation().messages().collect();
    let n = msgs.len();
    let per = |values: Vec<Vec<u8>>, each: bool| automerge_bytes(&values, each) as f64 / n as f64;
    let payload = msgs[0].encode().len();
    let one_byte = per(vec![vec![0u8]; n], true);
    let one_byte_one_change = per(vec![vec![0u8]; n], false);
    let sigs = per(msgs.iter().map(|m| m.signature.to_vec()).collect(), true);
    let no_ids = per(
        msgs.iter()
            .map(|m| {
                let mut b = m.encode();
                b.drain(1..1 + 16 + 32);
                b
            })
            .collect(),
        true,
    );
    let no_sig = per(
        msgs.iter()
            .map(|m| {
                let b = m.encode();
                b[..b.len() - 64].to_vec()
            })
            .collect(),
        true,
    );
    let full = per(msgs.iter().map(|m| m.encode()).collect(), true);
    report(&format!(
        "bytes/{} breakdown: one encoded message is {payload} B ({BODY_LEN} body + 64 signature + 32 device key + 16 member id + 8 HLC + {} framing); saved in an Automerge document (deflated), per message: {full:.1} B as stored; {one_byte:.1} B with a 1-byte value instead (Automerge's own cost of one insert in its own change; {one_byte_one_change:.1} B if all inserts were one change); {sigs:.1} B with only the 64-byte signature as the value; {no_ids:.1} B without the member id and device key; {no_sig:.1} B without the signature",
        label(n),
        payload - BODY_LEN - 64 - 32 - 16 - 8,
    ));
}
