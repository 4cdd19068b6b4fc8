//! Taking in a peer's sync message: the checks before Automerge sees it
//! (`check.rs`, then the append-only rules, `rules.rs`), Automerge's
//! receive, and the entries it added, found from patches (and from objects
//! a hostile put hides, read whole).
//!
//! Invariant: nothing of a message reaches the document unless the check
//! and the rules passed it; a whole document is checked once applied, and
//! a breach then says the copy must be read back (`ReplicaError::Tainted`).

use automerge::sync;
use automerge::{PatchAction, PatchLog, ScalarValue, Value, ROOT};

use super::rules::{self, Breach, MAX_CHANGE_LEN};
use super::sync_message::receive_sync_message;
use super::{check_sync_message, entry_digest, Entry, Replica, ReplicaError};

impl Replica {
    /// Applies a peer's sync message and returns the entries it added.
    /// The bytes are checked ([`check_sync_message`]) before Automerge
    /// reads them: Automerge 0.12 panics or allocates without bound on
    /// some messages it decodes without complaint.
    pub fn receive_sync(
        &mut self,
        state: &mut sync::State,
        bytes: &[u8],
    ) -> Result<Vec<Entry>, ReplicaError> {
        check_sync_message(bytes)?;
        let msg =
            sync::Message::decode(bytes).map_err(|e| ReplicaError::SyncDecode(e.to_string()))?;
        // Append-only (rules.rs): every change we lack is checked before it
        // is applied. A whole document (Automerge sends one when much is
        // missing) is checked once applied, against the document as it
        // was; a breach then leaves this copy to be read back.
        let before = self.doc.get_heads();
        self.verified.clear();
        let mut whole = false;
        let mut fresh = Vec::new();
        for entry in msg.changes.iter().filter(|_| self.checked) {
            for chunk in rules::split_chunks(entry).map_err(ReplicaError::SyncDecode)? {
                if chunk[rules::CHUNK_TYPE_AT] == rules::DOCUMENT_CHUNK {
                    whole = true;
                    continue;
                }
                if chunk.len() > MAX_CHANGE_LEN {
                    // Refused by its length, before it is parsed into more
                    // copies of itself.
                    return Err(ReplicaError::Breach(Breach(format!(
                        "a change of {} bytes (at most {MAX_CHANGE_LEN})",
                        chunk.len()
                    ))));
                }
                let change = automerge::Change::try_from(chunk)
                    .map_err(|e| ReplicaError::SyncDecode(e.to_string()))?;
                if self.doc.get_change_meta_by_hash(&change.hash()).is_none() {
                    fresh.push(change);
                }
            }
        }
        self.check_changes(fresh, None)
            .map_err(ReplicaError::Breach)?;
        let mut log = PatchLog::active();
        self.received_changes = msg.changes.len();
        receive_sync_message(&mut self.doc, state, msg, &mut log)?;
        if whole {
            let fresh = self.doc.get_changes(&before);
            self.check_changes(fresh, Some(&before))
                .map_err(ReplicaError::Tainted)?;
        }
        let patches = self.doc.make_patches(&mut log);
        let root_patched = patches.iter().any(|p| p.obj == ROOT);
        if root_patched || (self.received_changes > 0 && self.next_page_arrived()) {
            // A page was made, or a root key put or deleted. A page change
            // can arrive with no patch on the root map (with a deletion of
            // its key in the same message), so it is looked for by its
            // hash as well: a page found only at the next load would have
            // its entries trusted there unverified. (A forged change under
            // the page actor is not a page change, and is left to
            // `save_after`.)
            let made = self.find_objects();
            self.unsaved_pages.extend(made);
        }
        let mut out = Vec::new();
        if self.received_changes > 0 {
            for (obj, root) in &self.hidden {
                // Read whole, reported once each (by a digest of the
                // entry), so a hidden object costs a read per message
                // received, not a signature check per entry it holds.
                let mut entries = Vec::new();
                self.entries_of(*root, obj, &mut entries);
                let seen = self.hidden_seen.entry(obj.clone()).or_default();
                out.extend(entries.into_iter().filter(|e| seen.insert(entry_digest(e))));
            }
        }
        for p in patches {
            let Some(root) = self.root_of(&p.obj) else {
                continue;
            };
            match p.action {
                PatchAction::Insert { values, .. } => {
                    let tail = &mut self.tails[root];
                    if tail.obj == p.obj {
                        tail.len = tail.len.map(|n| n + values.len());
                    }
                    for (v, _, _) in values.iter() {
                        if let Value::Scalar(s) = v {
                            if let ScalarValue::Bytes(b) = s.as_ref() {
                                out.push(Entry::Item {
                                    root,
                                    value: b.clone(),
                                });
                            }
                        }
                    }
                }
                PatchAction::PutMap {
                    key,
                    value: (Value::Scalar(s), _),
                    ..
                } => {
                    if let ScalarValue::Bytes(b) = s.as_ref() {
                        out.push(Entry::Keyed {
                            root,
                            key,
                            value: b.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}
