//! One replicated Automerge document: its deterministic genesis, incremental
//! persistence (chunks plus occasional snapshots), the sync protocol, and the
//! extraction of new entries from local or remote changes.
//!
//! Both conversation documents and the team document are `Replica`s; they
//! differ only in their schema (the root objects) and in how they interpret
//! entries.
//!
//! Invariants:
//! - Every replica of a document starts from the same genesis change (same
//!   actor, time and ops, hence the same hash), so a device that has only a
//!   conversation's header can write to it before it has synced anything.
//! - Entries are reported incrementally (from patches), so appending to a
//!   100k-entry document costs the same as appending to an empty one.
//! - A paged list root never grows past its page length by our writes: the
//!   next entry goes into a new page object, created by a change every
//!   replica makes identically (sync.md §7.1), so no two devices can create
//!   two different pages under one key, and applying a peer's change walks
//!   one page, not the whole history (Automerge 0.12 applies a remote change
//!   by walking every op of each object it touches).
//! - Deletions are never reported: an entry once seen stays seen.
//! - The replica never reads the clock: commit times come from `now`.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, Automerge, ChangeHash, ObjType, ReadDoc, ScalarValue, ScalarValueRef, Value, ValueRef,
    ROOT,
};
use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::crypto;
use crate::ids::Millis;

mod audit;
pub mod check;
mod pages;
mod persist;
mod receive;
mod rules;
mod sync_message;
pub use audit::Audit;
pub use check::{check_sync_message, CheckError};
use pages::Tail;
pub use pages::{page_actor, page_chain, page_change, page_key};
pub use persist::Persist;
pub use rules::{
    Breach, EntryRule, Rule, Write, MAX_CHANGE_LEN, MAX_ENTRY_LEN, MAX_OPS_PER_CHANGE,
};
pub use sync_message::{sync_change_hashes, LocalPush};

/// The root objects of a document kind.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    pub roots: &'static [(&'static str, ObjType)],
    /// Entries per page of every list root; 0: list roots are not paged.
    /// Page `k` ≥ 1 of root `name` is the list under root key `name.k`
    /// (sync.md §7.1); page 0 is the genesis root itself.
    pub page_len: usize,
}

/// A digest of an entry: its key, if any, and its value.
pub fn entry_digest(e: &Entry) -> [u8; 16] {
    match e {
        Entry::Item { value, .. } => digest_of(None, value),
        Entry::Keyed { key, value, .. } => digest_of(Some(key), value),
    }
}

/// [`entry_digest`] of a list item (`key` `None`) or a keyed value.
fn digest_of(key: Option<&str>, value: &[u8]) -> [u8; 16] {
    let d = match key {
        None => crypto::sha256(&[b"i", value]),
        Some(key) => {
            let len = (key.len() as u64).to_be_bytes();
            crypto::sha256(&[b"k", &len, key.as_bytes(), value])
        }
    };
    d[..16].try_into().expect("16 bytes")
}

/// A value found in one of the schema's root objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A bytes value inserted into the list root number `root`.
    Item { root: usize, value: Vec<u8> },
    /// A bytes value put under `key` in the map root number `root`.
    Keyed {
        root: usize,
        key: String,
        value: Vec<u8>,
    },
}

#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("automerge rejected the data: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("the sync message does not decode: {0}")]
    SyncDecode(String),
    #[error("the sync message was refused before decoding: {0}")]
    Refused(#[from] CheckError),
    #[error("the stored document is incomplete: {0} change(s) it depends on are missing")]
    Incomplete(usize),
    /// A peer's change breaks the rules (`rules.rs`); nothing of the
    /// message was applied.
    #[error(transparent)]
    Breach(Breach),
    /// A change in a whole document a peer sent breaks the rules, found
    /// once applied: this copy must be dropped and read back from the store.
    #[error("{0} (found in a whole document, once applied)")]
    Tainted(Breach),
}

#[derive(Clone)]
pub struct Replica {
    doc_id: [u8; 16],
    schema: Schema,
    doc: Automerge,
    roots: Vec<automerge::ObjId>,
    /// Every page object of every paged list root (page 0 is in `roots`),
    /// with its root's number.
    pages: HashMap<automerge::ObjId, usize>,
    /// Per root, the newest page, where our inserts go.
    tails: Vec<Tail>,
    /// The page change our last insert had to make, pushed with it.
    made_page: Option<automerge::Change>,
    /// The change our last local write made, built once after its commit:
    /// Automerge keeps no change bytes and rebuilds a change each time it
    /// is asked for one, so the push to peers and the chunk for the store
    /// share this copy.
    last_local: Option<automerge::Change>,
    /// Per root, the page chain ([`page_chain`]) last used, and its newest
    /// page, so making the next page is one change, not `k`.
    chains: Vec<Option<(u64, Automerge, automerge::Change)>>,
    /// Per root, the pages its page changes made, page `k` at `k - 1`.
    made: Vec<Vec<automerge::ObjId>>,
    /// Page changes in the document and not yet persisted. Persisted from
    /// here, not collected by `save_after`: Automerge collects changes by
    /// walking every op whose counter lies between the lowest and highest
    /// of the changes collected, and a page change's counters are as low
    /// as genesis's (25 ms at 100k messages).
    unsaved_pages: Vec<automerge::Change>,
    /// Root and page objects that a conflicting put under their key hides
    /// (only a faulty or hostile peer makes one): Automerge reports no
    /// patch for changes inside them, so they are read whole instead.
    hidden: Vec<(automerge::ObjId, usize)>,
    /// The entries of hidden objects already reported, by digest.
    hidden_seen: HashMap<automerge::ObjId, HashSet<[u8; 16]>>,
    saved_heads: Vec<ChangeHash>,
    next_chunk: u64,
    chunk_bytes: usize,
    snapshot_bytes: usize,
    /// How many changes the last sync message received carried.
    received_changes: usize,
    /// What a peer may put into the map roots (`rules.rs`); none: nothing.
    rule: Option<Rule>,
    /// The rules are checked (always, but where a test or the simulator
    /// models a peer or store from before them: [`Replica::without_rules`]).
    checked: bool,
    /// Digests ([`entry_digest`]) of the entries the rule accepted in the
    /// last message received, which it verified: the index need not check
    /// their signatures again ([`Replica::take_verified`]).
    verified: HashSet<[u8; 16]>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("heads", &self.doc.get_heads().len())
            .finish()
    }
}

fn genesis(doc_id: &[u8; 16], schema: Schema) -> (Automerge, Vec<automerge::ObjId>) {
    let mut doc = Automerge::new().with_actor(ActorId::from(doc_id.as_slice()));
    let mut tx = doc.transaction();
    let roots = schema
        .roots
        .iter()
        .map(|(name, typ)| tx.put_object(ROOT, *name, *typ).expect("fresh document"))
        .collect();
    tx.commit_with(CommitOptions::default().with_time(0));
    (doc, roots)
}

fn commit_time(now: Millis) -> i64 {
    i64::try_from(now / 1000).unwrap_or(i64::MAX)
}

/// The catalog's digest of a set of heads (sync.md §3), as
/// [`Replica::heads_digest`] computes it.
pub fn heads_digest(heads: &[ChangeHash]) -> [u8; 16] {
    let parts: Vec<&[u8]> = heads.iter().map(|h| h.0.as_slice()).collect();
    let d = crypto::sha256(&parts);
    d[..16].try_into().expect("16 bytes")
}

impl Replica {
    pub fn new(doc_id: &[u8; 16], schema: Schema, actor: &ActorId) -> Replica {
        let (doc, roots) = genesis(doc_id, schema);
        Replica::with_doc(doc_id, schema, doc.with_actor(actor.clone()), roots)
    }

    /// A replica of `doc`, nothing of it saved yet.
    fn with_doc(
        doc_id: &[u8; 16],
        schema: Schema,
        doc: Automerge,
        roots: Vec<automerge::ObjId>,
    ) -> Replica {
        Replica {
            doc_id: *doc_id,
            schema,
            doc,
            pages: HashMap::new(),
            tails: roots.iter().map(|r| Tail::new(0, r.clone())).collect(),
            made_page: None,
            last_local: None,
            chains: vec![None; schema.roots.len()],
            made: vec![Vec::new(); schema.roots.len()],
            unsaved_pages: Vec::new(),
            hidden: Vec::new(),
            hidden_seen: HashMap::new(),
            roots,
            saved_heads: Vec::new(),
            next_chunk: 0,
            chunk_bytes: 0,
            snapshot_bytes: 0,
            received_changes: 0,
            rule: None,
            checked: true,
            verified: HashSet::new(),
        }
    }

    /// Digests of the entries the rule accepted (and so verified) in the
    /// last message received.
    pub fn take_verified(&mut self) -> HashSet<[u8; 16]> {
        std::mem::take(&mut self.verified)
    }

    /// This replica, taking any change from peers, as huddle did before
    /// documents were append-only by schema: for tests and the simulator,
    /// which show what the rules stop.
    #[doc(hidden)]
    pub fn without_rules(mut self) -> Replica {
        self.checked = false;
        self
    }

    /// Whether the rules are checked ([`NodeConfig::append_only`]).
    ///
    /// [`NodeConfig::append_only`]: crate::node::NodeConfig::append_only
    pub(crate) fn check_rules(&mut self, on: bool) {
        self.checked = on;
    }

    /// This replica, taking from peers the map puts `rule` accepts
    /// (`rules.rs`).
    pub fn with_rule(mut self, rule: Rule) -> Replica {
        self.rule = Some(rule);
        self
    }

    /// The root number of a root or page object.
    fn root_of(&self, obj: &automerge::ObjId) -> Option<usize> {
        self.roots
            .iter()
            .position(|r| r == obj)
            .or_else(|| self.pages.get(obj).copied())
    }

    fn all_entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for root in 0..self.roots.len() {
            for obj in self.objects_of(root) {
                self.entries_of(root, &obj, &mut out);
            }
        }
        out
    }

    /// Digests ([`entry_digest`]) of the entries in objects a member's put
    /// or deletion under a root or page key hides.
    pub fn hidden_entries(&self) -> HashSet<[u8; 16]> {
        let mut entries = Vec::new();
        for (obj, root) in &self.hidden {
            self.entries_of(*root, obj, &mut entries);
        }
        entries.iter().map(entry_digest).collect()
    }

    /// Every entry of one root or page object.
    fn entries_of(&self, root: usize, obj: &automerge::ObjId, out: &mut Vec<Entry>) {
        match self.doc.object_type(obj) {
            Ok(ObjType::List) => {
                for item in self.doc.list_range(obj, ..) {
                    if let ValueRef::Scalar(ScalarValueRef::Bytes(b)) = &item.value {
                        out.push(Entry::Item {
                            root,
                            value: b.to_vec(),
                        });
                    }
                }
            }
            Ok(ObjType::Map) => {
                for item in self.doc.map_range(obj, ..) {
                    let key = item.key.to_string();
                    if item.conflict {
                        // Concurrent puts: every value is read, so no put
                        // can hide a genuine entry (sync.md §7.5).
                        for (v, _) in self.doc.get_all(obj, key.as_str()).unwrap_or_default() {
                            if let Value::Scalar(s) = v {
                                if let ScalarValue::Bytes(b) = s.as_ref() {
                                    out.push(Entry::Keyed {
                                        root,
                                        key: key.clone(),
                                        value: b.clone(),
                                    });
                                }
                            }
                        }
                    } else if let ValueRef::Scalar(ScalarValueRef::Bytes(b)) = &item.value {
                        out.push(Entry::Keyed {
                            root,
                            key,
                            value: b.to_vec(),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// How many changes the last sync message given to
    /// [`Replica::receive_sync`] carried (0: it only told heads, needs and
    /// what the peer has).
    pub fn received_changes(&self) -> usize {
        self.received_changes
    }

    /// The last change this replica wrote, to push to peers
    /// ([`LocalPush::message_for`]); `None` if it has written nothing
    /// (since it was made or loaded: its actor is new at every start).
    pub fn local_push(&self) -> Option<LocalPush> {
        let change = self.last_local.clone()?;
        Some(LocalPush {
            changes: self.made_page.iter().cloned().chain([change]).collect(),
            heads: self.doc.get_heads(),
            need: Vec::new(),
        })
    }

    /// Whether the document holds (has applied) every change of `heads`,
    /// hence all they depend on. Changes held back for missing
    /// dependencies do not count, and neither do those dependencies: an
    /// orphan in that queue must not make every peer look ahead of us.
    pub fn has_all(&self, heads: &[ChangeHash]) -> bool {
        heads
            .iter()
            .all(|h| self.doc.get_change_meta_by_hash(h).is_some())
    }

    /// The changes that changes we hold wait for (received, not applied:
    /// their dependencies never came), sorted, at most `max`.
    pub fn missing_deps(&self, max: usize) -> Vec<ChangeHash> {
        let mut missing = self.doc.get_missing_deps(&[]);
        missing.sort();
        missing.dedup();
        missing.truncate(max);
        missing
    }

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// The changes of `hashes` the document holds, in that order.
    pub fn changes_by_hash(&self, hashes: &[ChangeHash]) -> Vec<automerge::Change> {
        hashes
            .iter()
            .filter_map(|h| self.doc.get_change_by_hash(h))
            .collect()
    }

    /// The changes not covered by `heads` (all of them if some of `heads`
    /// are not held), in causal order.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<automerge::Change> {
        if self.has_all(heads) {
            self.doc.get_changes(heads)
        } else {
            self.doc.get_changes(&[])
        }
    }

    /// Whether every one of `changes` is `heads` or one of their
    /// ancestors (a peer at `heads` holds them). Costs the changes after
    /// `heads`.
    pub fn covers(&self, heads: &[ChangeHash], changes: &[ChangeHash]) -> bool {
        if !self.has_all(heads) || !self.has_all(changes) {
            return false;
        }
        let after: std::collections::HashSet<ChangeHash> = self
            .doc
            .get_changes_meta(heads)
            .into_iter()
            .map(|m| m.hash)
            .collect();
        changes.iter().all(|c| !after.contains(c))
    }

    /// A 16-byte digest of the heads, used by the catalog to tell cheaply
    /// whether two replicas are level.
    pub fn heads_digest(&self) -> [u8; 16] {
        heads_digest(&self.doc.get_heads())
    }

    /// Inserts `value` into list root `root` (at the front: display order is
    /// computed, not positional, and inserting at 0 costs the same at any
    /// length), into its newest page, first making the next page if that
    /// one is full.
    pub fn insert(&mut self, now: Millis, root: usize, value: Vec<u8>) -> Result<(), ReplicaError> {
        let made = self.next_page_if_full(root);
        let tail = &mut self.tails[root];
        let obj = tail.obj.clone();
        tail.len = tail.len.map(|n| n + 1);
        let r = self.local(now, |tx| {
            tx.insert(&obj, 0, ScalarValue::Bytes(value))?;
            Ok(())
        });
        self.made_page = made;
        r
    }

    /// Puts `value` under `key` in map root `root`.
    pub fn put(
        &mut self,
        now: Millis,
        root: usize,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        let obj = self.roots[root].clone();
        self.local(now, |tx| {
            tx.put(&obj, key, ScalarValue::Bytes(value))?;
            Ok(())
        })
    }

    /// Is `key` present in map root `root`?
    pub fn contains_key(&self, root: usize, key: &str) -> bool {
        matches!(self.doc.get(&self.roots[root], key), Ok(Some(_)))
    }

    /// One local change made by `f` (tests and the simulator also build
    /// hostile changes with it).
    #[doc(hidden)]
    pub fn local(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), automerge::AutomergeError>,
    ) -> Result<(), ReplicaError> {
        self.made_page = None;
        let mut tx = self.doc.transaction();
        match f(&mut tx) {
            Ok(()) => {
                tx.commit_with(CommitOptions::default().with_time(commit_time(now)));
                self.last_local = self.doc.get_last_local_change();
                Ok(())
            }
            Err(e) => {
                tx.rollback();
                Err(e.into())
            }
        }
    }

    /// The next message for a peer, if there is anything to say.
    pub fn generate_sync(&self, state: &mut sync::State) -> Option<Vec<u8>> {
        self.doc
            .generate_sync_message(state)
            .map(sync::Message::encode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const SCHEMA: Schema = Schema {
        roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
        page_len: 0,
    };

    pub(super) fn sync_pair(a: &mut Replica, b: &mut Replica) -> usize {
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let mut rounds = 0;
        loop {
            let m1 = a.generate_sync(&mut sa);
            if let Some(m) = &m1 {
                b.receive_sync(&mut sb, m).unwrap();
            }
            let m2 = b.generate_sync(&mut sb);
            if let Some(m) = &m2 {
                a.receive_sync(&mut sa, m).unwrap();
            }
            if m1.is_none() && m2.is_none() {
                return rounds;
            }
            rounds += 1;
        }
    }

    #[test]
    fn independent_geneses_are_one_document() {
        let id = [1u8; 16];
        let mut a = Replica::new(&id, SCHEMA, &ActorId::from([2u8; 16].as_slice()));
        let mut b = Replica::new(&id, SCHEMA, &ActorId::from([3u8; 16].as_slice()));
        a.insert(1000, 0, b"from a".to_vec()).unwrap();
        b.insert(1000, 0, b"from b".to_vec()).unwrap();
        sync_pair(&mut a, &mut b);
        assert_eq!(a.heads(), b.heads());
        assert_eq!(a.all_entries().len(), 2);
        assert_eq!(a.all_entries(), b.all_entries());
    }

    /// Writes `n` times, persisting each time; returns the chunks.
    pub(super) fn chunk_each(
        a: &mut Replica,
        n: u8,
        write: impl Fn(&mut Replica, u8),
    ) -> Vec<(u64, Vec<u8>)> {
        (0..n)
            .map(|i| {
                write(a, i);
                match a.take_persist().unwrap() {
                    Persist::Chunk { seq, bytes } => (seq, bytes),
                    Persist::Snapshot { .. } => unreachable!("tiny document"),
                }
            })
            .collect()
    }
}
