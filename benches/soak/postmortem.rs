//! A look inside V's store after a failed soak (`--inspect DIR CONV`, on
//! the data directory the soak kept): what the store holds of one
//! conversation, and which chunk, read in order, first needs a change
//! the store does not hold.
//!
//! Invariant: it only reads (the store is opened, never written; nothing
//! else may run on the directory meanwhile: the store's lock says so).

use std::path::Path;

use automerge::{Automerge, ReadDoc};
use huddle::store::{keys, DocLoader, SledStore, Store};
use huddle::ConversationId;

/// `conv` is a conversation id, or `all` for every conversation indexed.
pub fn inspect(dir: &Path, conv: &str) -> Result<String, String> {
    let unlocked = huddle::datadir::DataDir::with_passphrase(
        dir,
        huddle::datadir::Passphrase::File(super::child::passphrase_file(dir)),
    );
    let store: SledStore = unlocked
        .open_store()
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if conv != "all" {
        let id: ConversationId = conv.parse().map_err(|_| format!("{conv}: not an id"))?;
        return one(&store, id);
    }
    let mut out = Vec::new();
    let indexed = store
        .scan_prefix(keys::INDEX_PREFIX)
        .map_err(|e| e.to_string())?;
    for (key, _) in indexed {
        let raw: [u8; 16] = key[keys::INDEX_PREFIX.len()..]
            .try_into()
            .map_err(|_| "an index key of another length")?;
        out.push(one(&store, ConversationId(raw))?);
    }
    Ok(out.join("\n"))
}

fn one(store: &SledStore, id: ConversationId) -> Result<String, String> {
    let d = store.load_doc(&id.0).map_err(|e| e.to_string())?;
    let index = store.get(&keys::index(&id.0)).map_err(|e| e.to_string())?;
    let mut out = format!(
        "conversation {id}: header {}, snapshot {} B, index entry {} B, {} chunks",
        d.header.is_some(),
        d.snapshot.as_ref().map_or(0, Vec::len),
        index.as_ref().map_or(0, Vec::len),
        d.chunks.len()
    );
    let seqs: Vec<u64> = d.chunks.iter().map(|(s, _)| *s).collect();
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        let gaps: Vec<u64> = (*first..*last).filter(|s| !seqs.contains(s)).collect();
        out += &format!(" (seq {first}..={last}, absent in between: {gaps:?})");
    }
    let mut doc = match &d.snapshot {
        Some(s) => Automerge::load(s).map_err(|e| format!("the snapshot: {e}"))?,
        None => Automerge::new(),
    };
    out += &format!(
        "\n  snapshot alone: {} heads, missing deps {}",
        doc.get_heads().len(),
        doc.get_missing_deps(&[]).len()
    );
    let mut before = doc.get_missing_deps(&[]).len();
    for (seq, bytes) in &d.chunks {
        if let Err(e) = doc.load_incremental(bytes) {
            out += &format!("\n  chunk {seq} ({} B) does not parse: {e}", bytes.len());
            continue;
        }
        let now = doc.get_missing_deps(&[]).len();
        if now != before {
            out += &format!(
                "\n  after chunk {seq} ({} B): {now} missing deps",
                bytes.len()
            );
            before = now;
        }
    }
    out += &format!(
        "\n  all read: {} heads, {} missing deps",
        doc.get_heads().len(),
        doc.get_missing_deps(&[]).len()
    );
    Ok(out)
}
