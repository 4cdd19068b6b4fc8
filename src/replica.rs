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
    ActorId, Automerge, ChangeHash, ObjType, PatchAction, PatchLog, ReadDoc, ScalarValue,
    ScalarValueRef, Value, ValueRef, ROOT,
};
use std::collections::{HashMap, HashSet};

use thiserror::Error;

use crate::crypto;
use crate::ids::Millis;

mod sync_message;
use sync_message::receive_sync_message;
pub use sync_message::LocalPush;

/// The root objects of a document kind.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    pub roots: &'static [(&'static str, ObjType)],
    /// Entries per page of every list root; 0: list roots are not paged.
    /// Page `k` ≥ 1 of root `name` is the list under root key `name.k`
    /// (sync.md §7.1); page 0 is the genesis root itself.
    pub page_len: usize,
}

/// Page `k` (≥ 1) of list root `name`: its root key.
pub fn page_key(name: &str, k: u64) -> String {
    format!("{name}.{k}")
}

/// The actor of the changes creating the pages of root `name` of document
/// `doc_id` (sync.md §7.1).
pub fn page_actor(doc_id: &[u8; 16], name: &str) -> ActorId {
    let d = crypto::sha256(&[
        b"huddle/page/v1",
        doc_id,
        &(name.len() as u64).to_be_bytes(),
        name.as_bytes(),
    ]);
    ActorId::from(&d[..16])
}

/// Pages `1..=upto` of list root `name`: genesis and the page changes, a
/// document of their own from which the next page change is made.
pub fn page_chain(doc_id: &[u8; 16], schema: Schema, name: &str, upto: u64) -> Automerge {
    let (doc, _) = genesis(doc_id, schema);
    let mut chain = doc.with_actor(page_actor(doc_id, name));
    for k in 1..=upto {
        next_page(&mut chain, name, k);
    }
    chain
}

/// Makes page `k` on a chain holding pages `1..k`.
fn next_page(chain: &mut Automerge, name: &str, k: u64) -> automerge::Change {
    let mut tx = chain.transaction();
    tx.put_object(ROOT, page_key(name, k), ObjType::List)
        .expect("a fresh key");
    tx.commit_with(CommitOptions::default().with_time(0));
    chain.get_last_local_change().expect("the change just made")
}

/// The change creating page `k` (≥ 1) of list root `name`: every replica
/// makes it byte for byte alike (actor from [`page_actor`], seq `k`, time 0,
/// depending on page `k - 1`'s change, or on genesis for page 1, one op
/// creating the list under [`page_key`]), so replicas that fill a page
/// concurrently create the same page, not two conflicting ones. The pages
/// share one actor and their object ids grow with `k`, so a document with
/// many pages has few actors and keeps its newest page last.
pub fn page_change(doc_id: &[u8; 16], schema: Schema, name: &str, k: u64) -> automerge::Change {
    let mut chain = page_chain(doc_id, schema, name, k - 1);
    next_page(&mut chain, name, k)
}

/// A digest of an entry: its key, if any, and its value.
fn entry_digest(e: &Entry) -> [u8; 16] {
    let d = match e {
        Entry::Item { value, .. } => crypto::sha256(&[b"i", value]),
        Entry::Keyed { key, value, .. } => {
            let len = (key.len() as u64).to_be_bytes();
            crypto::sha256(&[b"k", &len, key.as_bytes(), value])
        }
    };
    d[..16].try_into().expect("16 bytes")
}

/// `name.k` with `k` ≥ 1 in canonical decimal, for list root `name`.
fn parse_page_key(schema: Schema, key: &str) -> Option<(usize, u64)> {
    let (name, k) = key.rsplit_once('.')?;
    let root = schema
        .roots
        .iter()
        .position(|(n, t)| *n == name && *t == ObjType::List)?;
    if k.starts_with('0') || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let k: u64 = k.parse().ok()?;
    Some((root, k))
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
}

/// What must be written to the store after a mutation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Append these change bytes as chunk number `seq`.
    Chunk { seq: u64, bytes: Vec<u8> },
    /// Replace the snapshot and delete every chunk with a number below `upto`.
    Snapshot { bytes: Vec<u8>, upto: u64 },
}

/// Snapshots are written once the chunks written since the last one
/// outweigh it (amortised O(1) per byte), but never for less than this.
const MIN_COMPACT_BYTES: usize = 256 * 1024;

/// The newest page of a root.
#[derive(Clone, Debug)]
struct Tail {
    k: u64,
    obj: automerge::ObjId,
    /// How many elements it holds, counted from our inserts and the
    /// patches of others' (Automerge's `length` walks the whole list), or
    /// `None` until first needed. Off only through a faulty peer, and then
    /// harmlessly: a deletion (huddle never deletes) makes the next page
    /// early, inserts into a page a conflicting put hides (no patches) let
    /// it grow past the page length.
    len: Option<usize>,
}

impl Tail {
    fn new(k: u64, obj: automerge::ObjId) -> Tail {
        Tail { k, obj, len: None }
    }
}

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
    /// Per root, the page chain ([`page_chain`]) last used, and its newest
    /// page, so making the next page is one change, not `k`.
    chains: Vec<Option<(u64, Automerge)>>,
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
            chains: vec![None; schema.roots.len()],
            unsaved_pages: Vec::new(),
            hidden: Vec::new(),
            hidden_seen: HashMap::new(),
            roots,
            saved_heads: Vec::new(),
            next_chunk: 0,
            chunk_bytes: 0,
            snapshot_bytes: 0,
            received_changes: 0,
        }
    }

    /// Rebuilds a replica from what the store holds, returning it with every
    /// entry it contains. Chunks must be given in ascending `seq` order.
    pub fn load(
        doc_id: &[u8; 16],
        schema: Schema,
        actor: &ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
    ) -> Result<(Replica, Vec<Entry>), ReplicaError> {
        let (mut doc, roots) = genesis(doc_id, schema);
        if let Some(bytes) = snapshot {
            // Load the snapshot on the fast path, then make sure genesis is in
            // (it always is in snapshots we wrote; merging it is then a no-op).
            let mut loaded = Automerge::load(bytes)?;
            loaded.merge(&mut doc)?;
            doc = loaded;
        }
        // One call for all chunks: Automerge applies a batch of changes in
        // one pass, while a call per chunk walks the document each time
        // (quadratic in the number of chunks).
        let all: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let chunk_bytes = all.len();
        if !all.is_empty() {
            doc.load_incremental(&all)?;
        }
        let mut replica = Replica::with_doc(doc_id, schema, doc.with_actor(actor.clone()), roots);
        replica.saved_heads = replica.doc.get_heads();
        replica.next_chunk = chunks.last().map_or(0, |(s, _)| s + 1);
        replica.chunk_bytes = chunk_bytes;
        replica.snapshot_bytes = snapshot.map_or(0, <[u8]>::len);
        replica.find_objects();
        let entries = replica.all_entries();
        // The genesis change is never stored on its own: it is recreated.
        if replica.snapshot_bytes == 0 && chunks.is_empty() {
            replica.saved_heads = Vec::new();
        }
        Ok((replica, entries))
    }

    /// Finds every page object in the root map (every object under a page
    /// key, should a peer have put a second one there), the newest page of
    /// each root, and the objects a peer's conflicting put has hidden.
    /// Returns the pages (root, `k`) made by page changes that it finds for
    /// the first time.
    fn find_objects(&mut self) -> Vec<(usize, u64)> {
        let mut new = Vec::new();
        let keys: Vec<String> = self
            .doc
            .map_range(ROOT, ..)
            .map(|i| i.key.to_string())
            .collect();
        let mut hidden = Vec::new();
        for (root, ((name, _), obj)) in self.schema.roots.iter().zip(&self.roots).enumerate() {
            if !matches!(self.doc.get(ROOT, *name), Ok(Some((_, o))) if o == *obj) {
                hidden.push((obj.clone(), root));
            }
        }
        for key in keys {
            let Some((root, k)) = parse_page_key(self.schema, &key) else {
                continue;
            };
            let Ok(values) = self.doc.get_all(ROOT, key.as_str()) else {
                continue;
            };
            let shown = match self.doc.get(ROOT, key.as_str()) {
                Ok(Some((_, o))) => Some(o),
                _ => None,
            };
            let actor = page_actor(&self.doc_id, self.schema.roots[root].0);
            for (v, obj) in values {
                if !matches!(v, Value::Object(ObjType::List)) {
                    continue;
                }
                if shown.as_ref() != Some(&obj) {
                    hidden.push((obj.clone(), root));
                }
                // Our inserts go into the page the page change made, even
                // if a peer's put hides it: every reader reads it anyway.
                let by_page_change = matches!(&obj, automerge::ObjId::Id(_, a, _) if *a == actor);
                if by_page_change && k > self.tails[root].k {
                    self.tails[root] = Tail::new(k, obj.clone());
                }
                if self.pages.insert(obj, root).is_none() && by_page_change {
                    new.push((root, k));
                }
            }
        }
        self.hidden = hidden;
        new
    }

    /// The change making page `k` of `root`, from the cached page chain
    /// (one new change when pages are made in order, as they are).
    fn page_change_cached(&mut self, root: usize, k: u64) -> automerge::Change {
        let name = self.schema.roots[root].0;
        let mut chain = match self.chains[root].take() {
            Some((upto, chain)) if upto == k => {
                let change = chain.get_last_local_change().expect("page k");
                self.chains[root] = Some((upto, chain));
                return change;
            }
            Some((upto, chain)) if upto + 1 == k => chain,
            _ => page_chain(&self.doc_id, self.schema, name, k - 1),
        };
        let change = next_page(&mut chain, name, k);
        self.chains[root] = Some((k, chain));
        change
    }

    /// The root number of a root or page object.
    fn root_of(&self, obj: &automerge::ObjId) -> Option<usize> {
        self.roots
            .iter()
            .position(|r| r == obj)
            .or_else(|| self.pages.get(obj).copied())
    }

    /// Root `root`'s objects: the root, then its pages.
    fn objects_of(&self, root: usize) -> Vec<automerge::ObjId> {
        let mut pages: Vec<_> = self
            .pages
            .iter()
            .filter(|(_, r)| **r == root)
            .map(|(o, _)| o.clone())
            .collect();
        pages.sort();
        std::iter::once(self.roots[root].clone())
            .chain(pages)
            .collect()
    }

    /// How many page objects the document holds (for tests and benchmarks).
    pub fn page_count(&self) -> usize {
        self.pages.len()
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
                    if let ValueRef::Scalar(ScalarValueRef::Bytes(b)) = &item.value {
                        out.push(Entry::Keyed {
                            root,
                            key: item.key.to_string(),
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
    /// ([`LocalPush::message_for`]); `None` if it has written nothing.
    pub fn local_push(&self) -> Option<LocalPush> {
        let change = self.doc.get_last_local_change()?;
        Some(LocalPush {
            changes: self.made_page.iter().cloned().chain([change]).collect(),
            heads: self.doc.get_heads(),
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

    pub fn heads(&self) -> Vec<ChangeHash> {
        self.doc.get_heads()
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

    /// Makes the next page of `root` if its newest one is full; returns the
    /// change that made it.
    fn next_page_if_full(&mut self, root: usize) -> Option<automerge::Change> {
        if self.schema.page_len == 0 {
            return None;
        }
        let tail = &mut self.tails[root];
        let len = *tail.len.get_or_insert_with(|| self.doc.length(&tail.obj));
        if len < self.schema.page_len {
            return None;
        }
        let (name, k) = (self.schema.roots[root].0, tail.k);
        let change = self.page_change_cached(root, k + 1);
        if self.doc.get_change_meta_by_hash(&change.hash()).is_some() {
            return None; // made, but a peer's put of a non-list hides it
        }
        if let Err(e) = self.doc.apply_changes([change.clone()]) {
            // Only a peer that forged a change under the page's actor can
            // cause this; the newest page then simply keeps growing.
            tracing::warn!("cannot make page {} of {name}: {e}", k + 1);
            return None;
        }
        self.find_objects();
        self.unsaved_pages.push(change.clone());
        Some(change)
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

    fn local(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), automerge::AutomergeError>,
    ) -> Result<(), ReplicaError> {
        self.made_page = None;
        let mut tx = self.doc.transaction();
        match f(&mut tx) {
            Ok(()) => {
                tx.commit_with(CommitOptions::default().with_time(commit_time(now)));
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

    /// Applies a peer's sync message and returns the entries it added.
    pub fn receive_sync(
        &mut self,
        state: &mut sync::State,
        bytes: &[u8],
    ) -> Result<Vec<Entry>, ReplicaError> {
        let msg =
            sync::Message::decode(bytes).map_err(|e| ReplicaError::SyncDecode(e.to_string()))?;
        let mut log = PatchLog::active();
        self.received_changes = msg.changes.len();
        receive_sync_message(&mut self.doc, state, msg, &mut log)?;
        let patches = self.doc.make_patches(&mut log);
        if patches.iter().any(|p| p.obj == ROOT) {
            // A page was made, or a root key put.
            for (root, k) in self.find_objects() {
                let change = self.page_change_cached(root, k);
                // (A forged change under the page actor is not this one,
                // and is left to `save_after`.)
                if self.doc.get_change_meta_by_hash(&change.hash()).is_some() {
                    self.unsaved_pages.push(change);
                }
            }
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

    /// True if every change since the last [`Replica::take_persist`] is saved.
    pub fn is_saved(&self) -> bool {
        self.saved_heads == self.doc.get_heads()
    }

    /// What to write so the store holds everything this replica has.
    pub fn take_persist(&mut self) -> Option<Persist> {
        let heads = self.doc.get_heads();
        if heads == self.saved_heads {
            return None;
        }
        let mut bytes = Vec::new();
        let mut saved = std::mem::take(&mut self.saved_heads);
        for page in self.unsaved_pages.drain(..) {
            bytes.extend_from_slice(page.raw_bytes());
            saved.push(page.hash());
        }
        bytes.extend(self.doc.save_after(&saved));
        self.saved_heads = heads;
        self.chunk_bytes += bytes.len();
        if self.chunk_bytes > MIN_COMPACT_BYTES.max(self.snapshot_bytes) {
            let snapshot = self.doc.save();
            self.snapshot_bytes = snapshot.len();
            self.chunk_bytes = 0;
            return Some(Persist::Snapshot {
                bytes: snapshot,
                upto: self.next_chunk,
            });
        }
        let seq = self.next_chunk;
        self.next_chunk += 1;
        Some(Persist::Chunk { seq, bytes })
    }

    /// Full save, for tests and benchmarks.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const SCHEMA: Schema = Schema {
        roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
        page_len: 0,
    };

    fn sync_pair(a: &mut Replica, b: &mut Replica) -> usize {
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

    const PAGED: Schema = Schema {
        roots: &[("items", ObjType::List), ("keys", ObjType::Map)],
        page_len: 2,
    };

    fn values(r: &Replica) -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = r
            .all_entries()
            .into_iter()
            .filter_map(|e| match e {
                Entry::Item { root: 0, value } => Some(value),
                _ => None,
            })
            .collect();
        v.sort();
        v
    }

    /// Writes `n` times, persisting each time; returns the chunks.
    fn chunk_each(a: &mut Replica, n: u8, write: impl Fn(&mut Replica, u8)) -> Vec<(u64, Vec<u8>)> {
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

    fn paged(actor: u8) -> Replica {
        Replica::new(&[1u8; 16], PAGED, &ActorId::from([actor; 16].as_slice()))
    }

    /// `a` pushes its last change to `b`; returns what `b` took in.
    fn push(
        a: &Replica,
        sa: &mut sync::State,
        b: &mut Replica,
        sb: &mut sync::State,
    ) -> Vec<Entry> {
        let msg = a.local_push().unwrap().message_for(sa);
        b.receive_sync(sb, &msg).unwrap()
    }

    #[test]
    fn replicas_filling_pages_apart_make_the_same_pages() {
        let mut a = paged(2);
        let mut b = paged(3);
        for i in 0..5u8 {
            a.insert(1000, 0, vec![b'a', i]).unwrap();
            b.insert(1000, 0, vec![b'b', i]).unwrap();
        }
        assert_eq!(a.page_count(), 2, "5 items in pages of 2: pages 1 and 2");
        sync_pair(&mut a, &mut b);
        assert_eq!(a.heads(), b.heads());
        // Each made pages 1 and 2 by itself: the same changes, so the same
        // two objects, not four.
        assert_eq!((a.page_count(), b.page_count()), (2, 2));
        assert_eq!(values(&a).len(), 10);
        assert_eq!(values(&a), values(&b));
        // The next insert sees a full newest page and makes page 3.
        a.insert(1000, 0, b"c".to_vec()).unwrap();
        assert_eq!(a.page_count(), 3);
    }

    #[test]
    fn a_push_carries_the_page_it_made() {
        let id = [1u8; 16];
        let mut a = paged(2);
        let mut b = paged(3);
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        let mut b_chunks = Vec::new();
        for i in 0..4u8 {
            a.insert(1000, 0, vec![i]).unwrap();
            let got = push(&a, &mut sa, &mut b, &mut sb);
            // Applied at once, page change and all: nothing held back for a
            // missing dependency.
            assert_eq!(
                got,
                vec![Entry::Item {
                    root: 0,
                    value: vec![i]
                }],
                "item {i}"
            );
            assert_eq!(b.heads(), a.heads());
            if let Some(Persist::Chunk { seq, bytes }) = b.take_persist() {
                b_chunks.push((seq, bytes));
            }
        }
        // What b persisted, the page change it received included, reloads.
        let other = ActorId::from([4u8; 16].as_slice());
        let (reloaded, entries) = Replica::load(&id, PAGED, &other, None, &b_chunks).unwrap();
        assert_eq!(reloaded.heads(), b.heads());
        assert_eq!(entries.len(), 4);
        assert_eq!((a.page_count(), b.page_count()), (1, 1));
        // b writes into the page it learnt of, not a page of its own.
        b.insert(1000, 0, vec![9]).unwrap();
        assert_eq!(b.page_count(), 2, "page 1 was full: b makes page 2");
        push(&b, &mut sb, &mut a, &mut sa);
        assert_eq!(values(&a), values(&b));
        assert_eq!(a.heads(), b.heads());
    }

    #[test]
    fn pages_reload_from_chunks_and_snapshots() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, PAGED, &actor);
        let chunks = chunk_each(&mut a, 7, |a, i| a.insert(1000, 0, vec![i]).unwrap());
        for (snapshot, chunks) in [(None, &chunks[..]), (Some(a.save()), &[][..])] {
            let (mut b, entries) =
                Replica::load(&id, PAGED, &actor, snapshot.as_deref(), chunks).unwrap();
            assert_eq!(b.heads(), a.heads());
            assert_eq!(entries.len(), 7);
            assert_eq!(b.page_count(), 3);
            // Writes go on into the newest page, not into a new page 1.
            b.insert(1000, 0, vec![7]).unwrap();
            assert_eq!(b.page_count(), 3);
            b.insert(1000, 0, vec![8]).unwrap();
            assert_eq!(b.page_count(), 4);
        }
    }

    /// A hostile member puts objects of its own over the `items` root and
    /// over page 1 (its puts win the conflict: higher op counters), which
    /// hides the honest objects from Automerge's patches. Every message
    /// written into them still reaches the receiver live.
    #[test]
    fn a_peer_hiding_a_root_or_a_page_hides_no_entry() {
        let mut a = paged(2);
        let mut b = paged(3);
        let mut m = paged(0xff);
        m.local(1000, |tx| {
            tx.put_object(ROOT, "items", ObjType::List)?;
            tx.put_object(ROOT, "items.1", ObjType::List)?;
            Ok(())
        })
        .unwrap();
        sync_pair(&mut m, &mut a);
        sync_pair(&mut m, &mut b);
        let (mut sa, mut sb) = (sync::State::new(), sync::State::new());
        for i in 0..4u8 {
            a.insert(1000, 0, vec![i]).unwrap();
            let got = push(&a, &mut sa, &mut b, &mut sb);
            assert_eq!(
                got,
                vec![Entry::Item {
                    root: 0,
                    value: vec![i]
                }],
                "item {i}, and only it, reported"
            );
        }
        assert_eq!(values(&a).len(), 4);
        assert_eq!(values(&a), values(&b));
        assert_eq!(
            b.page_count(),
            2,
            "page 1, and the hostile object under its key"
        );
    }

    #[test]
    fn page_keys_are_canonical() {
        assert_eq!(parse_page_key(PAGED, "items.1"), Some((0, 1)));
        assert_eq!(parse_page_key(PAGED, "items.12"), Some((0, 12)));
        for bad in [
            "items.0", "items.01", "items.", "items.x", "keys.1", "items.+1",
        ] {
            assert_eq!(parse_page_key(PAGED, bad), None, "{bad}");
        }
    }

    #[test]
    fn persisted_chunks_reload() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let chunks = chunk_each(&mut a, 5, |a, i| {
            a.insert(1000, 0, vec![i]).unwrap();
            a.put(1000, 1, &format!("k{i}"), vec![i]).unwrap();
        });
        let (b, entries) = Replica::load(&id, SCHEMA, &actor, None, &chunks).unwrap();
        assert_eq!(b.heads(), a.heads());
        assert_eq!(entries.len(), 10);
        let (c, _) = Replica::load(&id, SCHEMA, &actor, Some(&a.save()), &[]).unwrap();
        assert_eq!(c.heads(), a.heads());
    }
}
