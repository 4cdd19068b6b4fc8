//! What a peer's change may do to a document: documents are append-only by
//! schema (protocol/sync.md §7.5). Every change a peer sends is checked here
//! before it is applied or stored, and one that breaks a rule is refused
//! with the peer that sent it.
//!
//! A valid change is one of:
//! - the page change of a paged list root, byte for byte (the page actor
//!   writes nothing else), made in order: page `k` after page `k - 1`;
//! - any other change, at most [`MAX_CHANGE_LEN`] bytes and
//!   [`MAX_OPS_PER_CHANGE`] operations, whose every operation writes a byte
//!   string of at most [`MAX_ENTRY_LEN`] that the document kind's
//!   [`EntryRule`] accepts: an insert into a list root or one of its pages
//!   (never overwriting or deleting an element) of a genuine entry (a
//!   message that verifies), or a put into a map root of a genuine entry
//!   under its own key that goes back on nothing the key holds (a receipt
//!   cursor only moves forward, a certificate's expiry only later).
//!
//! The genesis change is never one a peer sends (every replica holds it
//! from the start), so any change by the document id's actor is refused.
//!
//! Invariant: no operation from a peer deletes, overwrites or hides an
//! entry another device wrote, or creates an object of its own; an entry
//! once verified and shown stays in the document, so a restart shows it
//! again.

use std::sync::Arc;

use automerge::legacy::{Key, ObjectId, OpType};
use automerge::{ActorId, ChangeHash, ObjType, ReadDoc, ScalarValue};
use thiserror::Error;

use super::{page_actor, Replica};

/// Most operations in one change from a peer: every change huddle makes
/// holds one (genesis one per root), so a larger one is not ours, and
/// decoding it is never unbounded.
pub const MAX_OPS_PER_CHANGE: usize = 16;

/// Most bytes in one entry (a value inserted or put): a message with a
/// 16 KiB body and four attachments' metadata (thumbnails included), its
/// ids and signature fit, and so does a certificate.
pub const MAX_ENTRY_LEN: usize = 32 * 1024;

/// Most bytes in one change chunk from a peer: a change huddle makes holds
/// one entry, its dependencies (32 bytes each, one per concurrent head) and
/// a few columns; a longer one is refused by its length, before parsing.
pub const MAX_CHANGE_LEN: usize = 64 * 1024;

/// Where a peer's change writes an entry.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    /// Inserted into list root number `root` (or one of its pages).
    Insert { root: usize },
    /// Put under `key` in map root number `root`, which holds `current`
    /// there now (several values where concurrent puts conflict).
    Put {
        root: usize,
        key: &'a str,
        current: &'a [Vec<u8>],
    },
}

/// Decides whether `value`, written where [`Write`] says, is a genuine
/// entry of the document's kind that goes back on nothing; `Err` says why
/// not.
pub type EntryRule = dyn Fn(Write<'_>, &[u8]) -> Result<(), String> + Send + Sync;

/// Where an Automerge chunk says what it is: after 4 magic bytes and a
/// 4-byte checksum.
pub(super) const CHUNK_TYPE_AT: usize = 8;
/// The chunk type of a whole document (1 and 2 are one change, plain or
/// compressed).
pub(super) const DOCUMENT_CHUNK: u8 = 0;

/// The Automerge chunks one entry of a sync message's change list holds,
/// one after another (magic, checksum, type, LEB128 length, body); only
/// their framing is read.
pub(super) fn split_chunks(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let mut len: u64 = 0;
        let mut at = CHUNK_TYPE_AT + 1;
        let mut shift = 0;
        loop {
            let b = *bytes.get(at).ok_or("a chunk cut short in its header")?;
            if shift > 56 {
                return Err("a chunk length that does not fit".into());
            }
            len |= u64::from(b & 0x7f) << shift;
            shift += 7;
            at += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| at.checked_add(l))
            .filter(|end| *end <= bytes.len())
            .ok_or("a chunk longer than the bytes that carry it")?;
        out.push(&bytes[..end]);
        bytes = &bytes[end..];
    }
    Ok(out)
}

/// A shared [`EntryRule`].
pub type Rule = Arc<EntryRule>;

/// Whose changes are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A peer's, before they are applied: everything.
    Peer,
    /// Changes already stored (the upgrade pass, `audit.rs`): list entries
    /// were checked one by one when they arrived (and are read as entries,
    /// verified or dropped, anyway), so only structure and puts are.
    Stored,
}

/// A change that breaks the schema's rules.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("a change breaks the document's append-only rules: {0}")]
pub struct Breach(pub String);

fn breach(why: impl Into<String>) -> Breach {
    Breach(why.into())
}

impl Replica {
    /// Checks the changes a peer sent, none of which the document held
    /// before, against the document as it was at `before` (its heads then;
    /// `None`: as it is now, nothing applied yet). Page changes are checked
    /// in the order they make pages.
    pub(super) fn check_changes(
        &mut self,
        changes: Vec<automerge::Change>,
        before: Option<&[ChangeHash]>,
    ) -> Result<(), Breach> {
        self.check_changes_as(changes, before, Mode::Peer)
    }

    pub(super) fn check_changes_as(
        &mut self,
        mut changes: Vec<automerge::Change>,
        before: Option<&[ChangeHash]>,
        mode: Mode,
    ) -> Result<(), Breach> {
        changes.sort_by_key(|c| (self.page_root_of(c.actor_id()).is_none(), c.seq()));
        let mut ahead = vec![0u64; self.schema.roots.len()];
        for change in &changes {
            self.check_change(change, before, &mut ahead, mode)?;
        }
        Ok(())
    }

    fn check_change(
        &mut self,
        change: &automerge::Change,
        before: Option<&[ChangeHash]>,
        ahead: &mut [u64],
        mode: Mode,
    ) -> Result<(), Breach> {
        let actor = change.actor_id();
        if *actor == ActorId::from(self.doc_id.as_slice()) {
            // Every replica holds the genesis change from the start.
            return Err(breach(
                "a change by the document's own actor that is not its genesis",
            ));
        }
        if let Some(root) = self.page_root_of(actor) {
            let k = self.made[root].len() as u64 + 1 + ahead[root];
            self.check_page_change(root, k, change)?;
            ahead[root] += 1;
            return Ok(());
        }
        if change.len() > MAX_OPS_PER_CHANGE {
            return Err(breach(format!(
                "{} operations in one change (at most {MAX_OPS_PER_CHANGE})",
                change.len()
            )));
        }
        // `decode` unwraps every actor index an op names.
        super::check::check_actor_indices(change.raw_bytes()).map_err(|e| breach(e.to_string()))?;
        for op in change.decode().operations {
            let root = self.root_of_legacy(&op.obj).ok_or_else(|| {
                breach("an operation on an object that is not a root or a page of the schema")
            })?;
            let OpType::Put(ScalarValue::Bytes(value)) = &op.action else {
                return Err(breach(format!("a {} operation", action_name(&op.action))));
            };
            if value.len() > MAX_ENTRY_LEN {
                return Err(breach(format!(
                    "an entry of {} bytes (at most {MAX_ENTRY_LEN})",
                    value.len()
                )));
            }
            // Without a rule (only in tests of the mechanism), a document
            // takes inserts of any bytes and no puts.
            let rule = self.rule.as_ref();
            match (self.schema.roots[root].1, &op.key, op.insert) {
                (ObjType::List, Key::Seq(_), true) if op.pred.is_empty() => {
                    if let Some(rule) = rule.filter(|_| mode == Mode::Peer) {
                        rule(Write::Insert { root }, value).map_err(Breach)?;
                        self.verified.insert(super::digest_of(None, value));
                    }
                }
                (ObjType::Map, Key::Map(key), false) => {
                    let rule = rule
                        .ok_or_else(|| breach("a put into a map this document takes no puts in"))?;
                    let current = self.values_at(root, key, before);
                    let write = Write::Put {
                        root,
                        key,
                        current: &current,
                    };
                    rule(write, value).map_err(Breach)?;
                    self.verified.insert(super::digest_of(Some(key), value));
                }
                _ => return Err(breach("an overwrite of a list element")),
            }
        }
        Ok(())
    }

    /// The paged list root whose page actor `actor` is.
    pub(super) fn page_root_of(&self, actor: &ActorId) -> Option<usize> {
        if self.schema.page_len == 0 {
            return None;
        }
        self.schema.roots.iter().position(|(name, typ)| {
            *typ == ObjType::List && page_actor(&self.doc_id, name) == *actor
        })
    }

    /// A page actor's change must be page change `next`, byte for byte.
    /// Pages are made in order, so checking costs one cached change each,
    /// never a chain from page 1.
    fn check_page_change(
        &mut self,
        root: usize,
        next: u64,
        change: &automerge::Change,
    ) -> Result<(), Breach> {
        let k = change.seq();
        if k != next {
            return Err(breach(format!(
                "a page change for page {k} when the next page is {next}"
            )));
        }
        if self.page_change_cached(root, k).hash() != change.hash() {
            return Err(breach("a page change that is not the page change"));
        }
        Ok(())
    }

    /// The schema root (or the root of the page) a legacy object id names.
    fn root_of_legacy(&self, obj: &ObjectId) -> Option<usize> {
        let ObjectId::Id(op) = obj else {
            return None;
        };
        let n = self.schema.roots.len() as u64;
        if op.1 == ActorId::from(self.doc_id.as_slice()) {
            // Genesis creates root i as op i + 1.
            return (1..=n).contains(&op.0).then(|| (op.0 - 1) as usize);
        }
        let root = self.page_root_of(&op.1)?;
        // Page k is op (genesis ops + k) of the page actor: pages that
        // exist or are being made. An insert into a page not made yet is
        // held by Automerge until its page change arrives.
        (op.0 > n).then_some(root)
    }

    /// The byte values map root `root` held under `key` at `before` (now,
    /// if `None`): several if concurrent puts left a conflict.
    fn values_at(&self, root: usize, key: &str, before: Option<&[ChangeHash]>) -> Vec<Vec<u8>> {
        let obj = &self.roots[root];
        let values = match before {
            Some(heads) => self.doc.get_all_at(obj, key, heads),
            None => self.doc.get_all(obj, key),
        };
        match values {
            Ok(values) => values
                .into_iter()
                .filter_map(|(v, _)| match v {
                    automerge::Value::Scalar(s) => match s.as_ref() {
                        ScalarValue::Bytes(b) => Some(b.clone()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn action_name(action: &OpType) -> &'static str {
    match action {
        OpType::Make(_) => "make-object",
        OpType::Delete => "delete",
        OpType::Increment(_) => "increment",
        OpType::Put(_) => "put of a value other than a byte string",
        OpType::MarkBegin(_) | OpType::MarkEnd(_) => "mark",
    }
}

#[cfg(test)]
mod tests {
    use automerge::sync;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ObjType, ReadDoc, ROOT};

    use super::super::tests::{sync_pair, SCHEMA};
    use super::super::{Replica, ReplicaError};

    fn replica(actor: u8) -> Replica {
        Replica::new(&[1u8; 16], SCHEMA, &ActorId::from([actor; 16].as_slice()))
    }

    /// Ana and Mallory level, holding Ana's two items.
    fn level() -> (Replica, Replica) {
        let mut ana = replica(2);
        let mut mal = replica(0xff);
        ana.insert(1000, 0, b"STAT bed 4".to_vec()).unwrap();
        ana.insert(1000, 0, b"routine".to_vec()).unwrap();
        sync_pair(&mut ana, &mut mal);
        (ana, mal)
    }

    /// Mallory makes one change with `f` and pushes it to Ana; Ana's verdict.
    fn push(
        f: impl FnOnce(
            &mut automerge::transaction::Transaction<'_>,
        ) -> Result<(), automerge::AutomergeError>,
    ) -> (Result<(), ReplicaError>, Replica) {
        let (mut ana, mut mal) = level();
        mal.local(1000, f).unwrap();
        let heads = ana.heads();
        let msg = mal
            .local_push()
            .unwrap()
            .message_for(&mut sync::State::new());
        let r = ana.receive_sync(&mut sync::State::new(), &msg).map(|_| ());
        if r.is_err() {
            assert_eq!(ana.heads(), heads, "nothing of a refused change applied");
        }
        (r, ana)
    }

    fn refused(r: Result<(), ReplicaError>, what: &str) {
        assert!(matches!(r, Err(ReplicaError::Breach(_))), "{what}: {r:?}");
    }

    #[test]
    fn a_peer_cannot_delete_overwrite_or_add_objects() {
        let items = |tx: &automerge::transaction::Transaction<'_>| {
            tx.get(ROOT, "items").unwrap().unwrap().1
        };
        let (r, _) = push(|tx| {
            let o = items(tx);
            tx.delete(&o, 0)
        });
        refused(r, "deleting an entry");
        let (r, _) = push(|tx| {
            let o = items(tx);
            tx.put(&o, 0, automerge::ScalarValue::Bytes(b"changed".to_vec()))
        });
        refused(r, "overwriting an entry");
        let (r, _) = push(|tx| tx.delete(ROOT, "items"));
        refused(r, "deleting a root");
        let (r, _) = push(|tx| tx.put_object(ROOT, "items", ObjType::List).map(|_| ()));
        refused(r, "replacing a root");
        let (r, _) = push(|tx| {
            let o = items(tx);
            tx.insert_object(&o, 0, ObjType::Map).map(|_| ())
        });
        refused(r, "an object of its own");
        let (r, _) = push(|tx| {
            let o = items(tx);
            tx.insert(&o, 0, automerge::ScalarValue::Str("text".into()))
        });
        refused(r, "a value other than bytes");
        // This test schema's map takes no puts from peers (no rule).
        let (r, _) = push(|tx| {
            let k = tx.get(ROOT, "keys").unwrap().unwrap().1;
            tx.put(&k, "a", automerge::ScalarValue::Bytes(vec![1]))
        });
        refused(r, "a put the schema takes from nobody");
        let (r, _) = push(|tx| {
            let o = items(tx);
            let big = vec![0u8; super::MAX_ENTRY_LEN + 1];
            tx.insert(&o, 0, automerge::ScalarValue::Bytes(big))
        });
        refused(r, "an entry over the bound");
        // And an honest insert passes.
        let (r, ana) = push(|tx| {
            let o = items(tx);
            tx.insert(&o, 0, automerge::ScalarValue::Bytes(b"new".to_vec()))
        });
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ana.all_entries().len(), 3);
    }

    #[test]
    fn a_change_by_the_documents_own_actor_or_a_false_page_change_is_refused() {
        let id = [1u8; 16];
        let mut ana = Replica::new(
            &id,
            super::super::pages::tests::paged_schema(),
            &ActorId::from([2u8; 16].as_slice()),
        );
        // A change made by the page actor that is not the page change.
        let actor = super::super::page_actor(&id, "items");
        let mut m = Replica::new(&id, super::super::pages::tests::paged_schema(), &actor);
        m.local(1000, |tx| {
            tx.put_object(ROOT, "items.1", ObjType::Map).map(|_| ())
        })
        .unwrap();
        let msg = m.local_push().unwrap().message_for(&mut sync::State::new());
        refused(
            ana.receive_sync(&mut sync::State::new(), &msg).map(|_| ()),
            "a false page change",
        );
        // A change by the document's own actor.
        let mut g = Replica::new(
            &id,
            super::super::pages::tests::paged_schema(),
            &ActorId::from(id.as_slice()),
        );
        g.insert(1000, 0, vec![1]).unwrap();
        let msg = g.local_push().unwrap().message_for(&mut sync::State::new());
        refused(
            ana.receive_sync(&mut sync::State::new(), &msg).map(|_| ()),
            "the genesis actor",
        );
        // Honest pages pass, made and pushed in order.
        let mut b = Replica::new(
            &id,
            super::super::pages::tests::paged_schema(),
            &ActorId::from([3u8; 16].as_slice()),
        );
        let (mut sb, mut sa) = (sync::State::new(), sync::State::new());
        for i in 0..7u8 {
            b.insert(1000, 0, vec![i]).unwrap();
            let msg = b.local_push().unwrap().message_for(&mut sb);
            ana.receive_sync(&mut sa, &msg).unwrap();
        }
        assert_eq!(ana.page_count(), 3);
    }

    /// A peer that lacks most of the document gets it whole (Automerge
    /// sends a saved document then): a breach in it is found once applied,
    /// and the copy is to be read back from the store.
    #[test]
    fn a_breach_in_a_whole_document_taints_the_copy() {
        let (_, mut mal) = level();
        mal.local(1000, |tx| {
            let o = tx.get(ROOT, "items").unwrap().unwrap().1;
            tx.delete(&o, 0)
        })
        .unwrap();
        let mut fresh = replica(3);
        let (mut sm, mut sf) = (sync::State::new(), sync::State::new());
        let mut verdict = Ok(());
        for _ in 0..4 {
            if let Some(msg) = fresh.generate_sync(&mut sf) {
                mal.receive_sync(&mut sm, &msg).unwrap();
            }
            if let Some(msg) = mal.generate_sync(&mut sm) {
                verdict = fresh.receive_sync(&mut sf, &msg).map(|_| ());
                if verdict.is_err() {
                    break;
                }
            }
        }
        assert!(
            matches!(
                verdict,
                Err(ReplicaError::Tainted(_)) | Err(ReplicaError::Breach(_))
            ),
            "{verdict:?}"
        );
    }
}
