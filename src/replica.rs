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
//! - Deletions are never reported: an entry once seen stays seen.
//! - The replica never reads the clock: commit times come from `now`.

use automerge::sync::{self, SyncDoc};
use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{
    ActorId, Automerge, ChangeHash, ObjType, PatchAction, PatchLog, ReadDoc, ScalarValue,
    ScalarValueRef, Value, ValueRef, ROOT,
};
use thiserror::Error;

use crate::crypto;
use crate::ids::Millis;

/// The root objects of a document kind.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    pub roots: &'static [Root],
}

/// One root object of a schema.
#[derive(Clone, Copy, Debug)]
pub struct Root {
    /// Its key in the document's root map.
    pub key: &'static str,
    /// The type of the objects that hold entries (list or map).
    pub kind: ObjType,
    /// 0: the root object itself holds the entries. `n` in 1..=256: the root
    /// is a map of `n` objects of type `kind` under the keys `00`, `01`, …
    /// (two lowercase hex digits), and they hold the entries. Automerge
    /// applies a remote change by walking every op of each object it
    /// touches, so spreading a growing collection over shards keeps the
    /// cost of receiving one entry from growing with the document.
    pub shards: u16,
}

impl Root {
    pub const fn flat(key: &'static str, kind: ObjType) -> Root {
        Root {
            key,
            kind,
            shards: 0,
        }
    }

    pub const fn sharded(key: &'static str, kind: ObjType, shards: u16) -> Root {
        assert!(shards >= 1 && shards <= 256);
        Root { key, kind, shards }
    }
}

/// The key of shard `i` in a sharded root.
pub fn shard_key(i: usize) -> String {
    format!("{i:02x}")
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

pub struct Replica {
    doc: Automerge,
    /// Per schema root, the objects that hold its entries (one unless sharded).
    roots: Vec<Vec<automerge::ObjId>>,
    /// Which root each entry-holding object belongs to.
    owner: std::collections::HashMap<automerge::ObjId, usize>,
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

/// The genesis change (sync.md §7.1): each root in schema order, and right
/// after a sharded root its shards in ascending order.
fn genesis(doc_id: &[u8; 16], schema: Schema) -> (Automerge, Vec<Vec<automerge::ObjId>>) {
    let mut doc = Automerge::new().with_actor(ActorId::from(doc_id.as_slice()));
    let mut tx = doc.transaction();
    let roots = schema
        .roots
        .iter()
        .map(|r| {
            if r.shards == 0 {
                return vec![tx.put_object(ROOT, r.key, r.kind).expect("fresh document")];
            }
            let map = tx
                .put_object(ROOT, r.key, ObjType::Map)
                .expect("fresh document");
            (0..usize::from(r.shards))
                .map(|i| {
                    tx.put_object(&map, shard_key(i), r.kind)
                        .expect("fresh document")
                })
                .collect()
        })
        .collect();
    tx.commit_with(CommitOptions::default().with_time(0));
    (doc, roots)
}

fn owners(roots: &[Vec<automerge::ObjId>]) -> std::collections::HashMap<automerge::ObjId, usize> {
    roots
        .iter()
        .enumerate()
        .flat_map(|(root, objs)| objs.iter().map(move |o| (o.clone(), root)))
        .collect()
}

/// Automerge's `receive_sync_message`, with the same effect on `doc` and
/// `state` but one, and without its cost on a long history.
///
/// Automerge 0.12 trims `state.sent_hashes` (the changes sent this session,
/// which it will not send again) to those the peer's stated heads do not
/// cover, by walking **every** ancestor of those heads for every message
/// received, even when nothing is left to trim: on a busy document that
/// walk was the largest single cost of a 10-node mesh (BENCHMARKS.md). Here
/// the trim is cheap and may keep more ([`trim_sent`]): a change kept in
/// `sent_hashes` that the peer's heads already cover is one the peer has,
/// so keeping it can only spare a resend, never withhold a change the peer
/// lacks.
///
/// The other steps are Automerge's own, in its order.
fn receive_sync_message(
    doc: &mut Automerge,
    state: &mut sync::State,
    message: sync::Message,
    log: &mut PatchLog,
) -> Result<(), automerge::AutomergeError> {
    use automerge::sync::{Capability, MessageFlags};
    state.in_flight = false;
    let before_heads = doc.get_heads();
    let sync::Message {
        heads: message_heads,
        changes: message_changes,
        need: message_need,
        have: message_have,
        flags: message_flags,
        ..
    } = message;

    if let Some(flags) = message_flags {
        let mut caps = vec![Capability::MessageV2];
        if flags.contains(MessageFlags::SUPPORTS_SYNC_RESET) {
            caps.push(Capability::SyncReset);
        }
        state.their_capabilities = Some(caps);
        if flags.contains(MessageFlags::SYNC_RESET) {
            state.sent_hashes.clear();
        }
        state.peer_read_only = flags.contains(MessageFlags::READ_ONLY);
    }

    let changes_is_empty = message_changes.is_empty();
    if !changes_is_empty && !state.read_only {
        let joined: Vec<u8> = message_changes.iter().flatten().copied().collect();
        doc.load_incremental_log_patches(&joined, log)?;
        state.shared_heads = advance_heads(&before_heads, &doc.get_heads(), &state.shared_heads);
    }

    let known_heads: Vec<ChangeHash> = message_heads
        .iter()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .copied()
        .collect();
    trim_sent(doc, &known_heads, &mut state.sent_hashes);

    if changes_is_empty && message_heads == before_heads {
        state.last_sent_heads.clone_from(&message_heads);
    }

    if known_heads.len() == message_heads.len() {
        state.shared_heads.clone_from(&message_heads);
        if message_heads.is_empty() {
            state.last_sent_heads = Vec::new();
            state.sent_hashes = Default::default();
        }
    } else {
        let mut shared: Vec<ChangeHash> = state
            .shared_heads
            .iter()
            .chain(known_heads.iter())
            .copied()
            .collect();
        shared.sort();
        shared.dedup();
        state.shared_heads = shared;
    }

    state.their_have = Some(message_have);
    state.their_heads = Some(message_heads);
    state.their_need = Some(message_need);
    Ok(())
}

/// Above this many entries, [`trim_sent`] trims exactly (a cost in the
/// changes the peer's heads do not cover), so `sent_hashes` stays bounded.
const SENT_EXACT_TRIM: usize = 1024;

/// Removes from `sent` changes that `known_heads` (heads the document
/// holds) cover: the changes the peer now has. Cheap, and not always all
/// of them: when the peer's heads are all of ours, everything (every change
/// we hold is covered); else the heads themselves, and once `sent` holds
/// more than [`SENT_EXACT_TRIM`] entries, exactly those covered (found from
/// Automerge's per-actor clocks). What is left in `sent` beyond Automerge's
/// own trim is covered by the peer's heads: changes it has.
fn trim_sent(
    doc: &Automerge,
    known_heads: &[ChangeHash],
    sent: &mut std::collections::BTreeSet<ChangeHash>,
) {
    if sent.is_empty() || known_heads.is_empty() {
        return;
    }
    let mut theirs = known_heads.to_vec();
    theirs.sort();
    theirs.dedup();
    if theirs == doc.get_heads() {
        sent.clear();
        return;
    }
    for h in &theirs {
        sent.remove(h);
    }
    if sent.len() > SENT_EXACT_TRIM {
        let not_covered: std::collections::HashSet<ChangeHash> = doc
            .get_changes_meta(&theirs)
            .into_iter()
            .map(|m| m.hash)
            .collect();
        sent.retain(|h| not_covered.contains(h));
    }
}

/// Automerge's `advance_heads`: our new heads that were not heads before,
/// plus the shared heads that are still heads.
fn advance_heads(
    old_heads: &[ChangeHash],
    new_heads: &[ChangeHash],
    old_shared: &[ChangeHash],
) -> Vec<ChangeHash> {
    let mut out: Vec<ChangeHash> = new_heads
        .iter()
        .filter(|h| !old_heads.contains(h))
        .chain(old_shared.iter().filter(|h| new_heads.contains(h)))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A change this replica just wrote, with the heads it left.
pub struct LocalPush {
    change: automerge::Change,
    heads: Vec<ChangeHash>,
}

impl LocalPush {
    /// A sync message for a peer holding just this change, our heads, and
    /// no need or `have`: a push asks for nothing, and tells the peer to
    /// send us only what we ask for. `state` records it as sent, as
    /// generating it would have.
    pub fn message_for(&self, state: &mut sync::State) -> Vec<u8> {
        use automerge::sync::{Capability, MessageFlags, MessageVersion};
        let v2 = state
            .their_capabilities
            .as_ref()
            .is_some_and(|c| c.contains(&Capability::MessageV2));
        let mut flags = MessageFlags::new();
        flags.set(MessageFlags::SUPPORTS_SYNC_RESET);
        let msg = sync::Message {
            heads: self.heads.clone(),
            need: Vec::new(),
            have: Vec::new(),
            changes: vec![self.change.raw_bytes().to_vec()].into(),
            flags: Some(flags),
            version: if v2 {
                MessageVersion::V2
            } else {
                MessageVersion::V1
            },
        };
        state.sent_hashes.insert(self.change.hash());
        state.last_sent_heads.clone_from(&self.heads);
        state.have_responded = true;
        state.in_flight = true;
        msg.encode()
    }

    pub fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }
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
        Replica {
            doc: doc.with_actor(actor.clone()),
            owner: owners(&roots),
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
        let doc = doc.with_actor(actor.clone());
        let mut replica = Replica {
            saved_heads: doc.get_heads(),
            doc,
            owner: owners(&roots),
            roots,
            next_chunk: chunks.last().map_or(0, |(s, _)| s + 1),
            chunk_bytes,
            snapshot_bytes: snapshot.map_or(0, <[u8]>::len),
            received_changes: 0,
        };
        let entries = replica.all_entries();
        // The genesis change is never stored on its own: it is recreated.
        if replica.snapshot_bytes == 0 && chunks.is_empty() {
            replica.saved_heads = Vec::new();
        }
        Ok((replica, entries))
    }

    fn all_entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (root, obj) in self
            .roots
            .iter()
            .enumerate()
            .flat_map(|(root, objs)| objs.iter().map(move |o| (root, o)))
        {
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
        out
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
        Some(LocalPush {
            change: self.doc.get_last_local_change()?,
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

    /// The object of root `root` that holds entries of shard `shard`
    /// (taken modulo the root's shard count; ignored for a flat root).
    fn object(&self, root: usize, shard: usize) -> &automerge::ObjId {
        let objs = &self.roots[root];
        &objs[shard % objs.len()]
    }

    /// Inserts `value` into list root `root`, shard `shard` (at the front:
    /// display order is computed, not positional, and inserting at 0 costs
    /// the same at any length).
    pub fn insert(
        &mut self,
        now: Millis,
        root: usize,
        shard: usize,
        value: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        let obj = self.object(root, shard).clone();
        self.local(now, |tx| {
            tx.insert(&obj, 0, ScalarValue::Bytes(value))?;
            Ok(())
        })
    }

    /// Puts `value` under `key` in map root `root`, shard `shard`.
    pub fn put(
        &mut self,
        now: Millis,
        root: usize,
        shard: usize,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        let obj = self.object(root, shard).clone();
        self.local(now, |tx| {
            tx.put(&obj, key, ScalarValue::Bytes(value))?;
            Ok(())
        })
    }

    /// Is `key` present in map root `root`, shard `shard`?
    pub fn contains_key(&self, root: usize, shard: usize, key: &str) -> bool {
        matches!(self.doc.get(self.object(root, shard), key), Ok(Some(_)))
    }

    fn local(
        &mut self,
        now: Millis,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<(), automerge::AutomergeError>,
    ) -> Result<(), ReplicaError> {
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
        let mut out = Vec::new();
        for p in patches {
            let Some(&root) = self.owner.get(&p.obj) else {
                continue;
            };
            match p.action {
                PatchAction::Insert { values, .. } => {
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
        let bytes = self.doc.save_after(&self.saved_heads);
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

    const SCHEMA: Schema = Schema {
        roots: &[
            Root::flat("items", ObjType::List),
            Root::flat("keys", ObjType::Map),
        ],
    };
    const SHARDED: Schema = Schema {
        roots: &[
            Root::sharded("items", ObjType::List, 4),
            Root::sharded("keys", ObjType::Map, 4),
        ],
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
        a.insert(1000, 0, 0, b"from a".to_vec()).unwrap();
        b.insert(1000, 0, 0, b"from b".to_vec()).unwrap();
        sync_pair(&mut a, &mut b);
        assert_eq!(a.heads(), b.heads());
        assert_eq!(a.all_entries().len(), 2);
        assert_eq!(a.all_entries(), b.all_entries());
    }

    fn same_state(a: &sync::State, b: &sync::State) -> bool {
        a.shared_heads == b.shared_heads
            && a.last_sent_heads == b.last_sent_heads
            && a.their_heads == b.their_heads
            && a.their_need == b.their_need
            && a.their_have == b.their_have
            && a.sent_hashes == b.sent_hashes
            && a.in_flight == b.in_flight
            && a.have_responded == b.have_responded
            && a.their_capabilities == b.their_capabilities
            && a.peer_read_only == b.peer_read_only
    }

    proptest::proptest! {
        /// Our `receive_sync_message` leaves the document and the sync
        /// state exactly as Automerge's own does, over random three-way
        /// traffic with writes, dropped messages and fresh sessions.
        #[test]
        fn receive_matches_automerge(steps in proptest::collection::vec((0u8..3, 0u8..3, 0u8..10), 1..120)) {
            let id = [9u8; 16];
            let mut docs: Vec<Automerge> = (0..3u8)
                .map(|i| genesis(&id, SCHEMA).0.with_actor(ActorId::from([i + 1; 16].as_slice())))
                .collect();
            let items = genesis(&id, SCHEMA).1[0][0].clone();
            // states[i][j]: i's state for peer j.
            let mut states: Vec<Vec<sync::State>> =
                (0..3).map(|_| (0..3).map(|_| sync::State::new()).collect()).collect();
            for (n, (from, to, op)) in steps.into_iter().enumerate() {
                let (from, to) = (from as usize, to as usize);
                if from == to || op >= 8 {
                    // A write on `from` (or, for op 9, a new session).
                    if op == 9 && from != to {
                        states[from][to] = sync::State::new();
                        states[to][from] = sync::State::new();
                        continue;
                    }
                    let mut tx = docs[from].transaction();
                    tx.insert(&items, 0, ScalarValue::Bytes(vec![n as u8])).unwrap();
                    tx.commit();
                    continue;
                }
                let Some(msg) = docs[from].generate_sync_message(&mut states[from][to]) else {
                    continue;
                };
                if op == 7 {
                    continue; // dropped
                }
                let bytes = msg.encode();
                let mut theirs_doc = docs[to].clone();
                let mut theirs_state = states[to][from].clone();
                theirs_doc
                    .receive_sync_message(&mut theirs_state, sync::Message::decode(&bytes).unwrap())
                    .unwrap();
                let mut log = PatchLog::inactive();
                receive_sync_message(
                    &mut docs[to],
                    &mut states[to][from],
                    sync::Message::decode(&bytes).unwrap(),
                    &mut log,
                )
                .unwrap();
                proptest::prop_assert_eq!(docs[to].get_heads(), theirs_doc.get_heads());
                // `sent_hashes` may keep more than Automerge's, but only
                // changes the peer's stated heads cover (changes it has).
                let ours = &states[to][from];
                proptest::prop_assert!(ours.sent_hashes.is_superset(&theirs_state.sent_hashes));
                let covered: std::collections::HashSet<ChangeHash> = {
                    let heads: Vec<ChangeHash> = ours.their_heads.clone().unwrap_or_default()
                        .into_iter()
                        .filter(|h| docs[to].get_change_meta_by_hash(h).is_some())
                        .collect();
                    let all: Vec<ChangeHash> = docs[to].get_changes_meta(&[]).into_iter().map(|m| m.hash).collect();
                    let uncovered: std::collections::HashSet<ChangeHash> = docs[to].get_changes_meta(&heads).into_iter().map(|m| m.hash).collect();
                    all.into_iter().filter(|h| !uncovered.contains(h)).collect()
                };
                for h in ours.sent_hashes.difference(&theirs_state.sent_hashes) {
                    proptest::prop_assert!(covered.contains(h), "kept a change the peer lacks");
                }
                let mut ours_rest = ours.clone();
                ours_rest.sent_hashes = theirs_state.sent_hashes.clone();
                proptest::prop_assert!(same_state(&ours_rest, &theirs_state));
            }
        }
    }

    #[test]
    fn trim_sent_is_exact_above_its_bound() {
        let id = [9u8; 16];
        let (doc, roots) = genesis(&id, SCHEMA);
        let mut doc = doc.with_actor(ActorId::from([1u8; 16].as_slice()));
        let mut hashes = Vec::new();
        for i in 0..(SENT_EXACT_TRIM + 100) {
            let mut tx = doc.transaction();
            tx.insert(&roots[0][0], 0, ScalarValue::Bytes(vec![i as u8]))
                .unwrap();
            tx.commit();
            hashes.push(doc.get_heads()[0]);
        }
        let mut sent: std::collections::BTreeSet<ChangeHash> = hashes.iter().copied().collect();
        // The peer has the first 500: everything after stays.
        trim_sent(&doc, &[hashes[499]], &mut sent);
        let expected: std::collections::BTreeSet<ChangeHash> =
            hashes[500..].iter().copied().collect();
        assert_eq!(sent, expected);
        // Below the bound only the stated head itself goes.
        trim_sent(&doc, &[hashes[600]], &mut sent);
        assert_eq!(sent.len(), expected.len() - 1);
        assert!(!sent.contains(&hashes[600]));
        // Level: everything goes.
        trim_sent(&doc, &doc.get_heads(), &mut sent);
        assert!(sent.is_empty());
    }

    #[test]
    fn persisted_chunks_reload() {
        let id = [1u8; 16];
        let actor = ActorId::from([2u8; 16].as_slice());
        let mut a = Replica::new(&id, SCHEMA, &actor);
        let mut chunks = Vec::new();
        for i in 0..5u8 {
            a.insert(1000, 0, 0, vec![i]).unwrap();
            a.put(1000, 1, 0, &format!("k{i}"), vec![i]).unwrap();
            match a.take_persist().unwrap() {
                Persist::Chunk { seq, bytes } => chunks.push((seq, bytes)),
                Persist::Snapshot { .. } => unreachable!("tiny document"),
            }
        }
        let (b, entries) = Replica::load(&id, SCHEMA, &actor, None, &chunks).unwrap();
        assert_eq!(b.heads(), a.heads());
        assert_eq!(entries.len(), 10);
        let (c, _) = Replica::load(&id, SCHEMA, &actor, Some(&a.save()), &[]).unwrap();
        assert_eq!(c.heads(), a.heads());
    }

    #[test]
    fn sharded_roots_merge_and_report_their_entries() {
        let id = [5u8; 16];
        let mut a = Replica::new(&id, SHARDED, &ActorId::from([2u8; 16].as_slice()));
        let mut b = Replica::new(&id, SHARDED, &ActorId::from([3u8; 16].as_slice()));
        assert_eq!(a.heads(), b.heads(), "one genesis");
        for i in 0..8u8 {
            a.insert(1000, 0, usize::from(i), vec![i]).unwrap();
            b.put(1000, 1, usize::from(i), &format!("k{i}"), vec![i])
                .unwrap();
        }
        assert!(b.contains_key(1, 5, "k5"));
        assert!(!b.contains_key(1, 4, "k5"), "a key lives in its shard");
        let mut state = sync::State::new();
        let mut got = Vec::new();
        let mut a_state = sync::State::new();
        loop {
            let m1 = a.generate_sync(&mut a_state);
            if let Some(m) = &m1 {
                got.extend(b.receive_sync(&mut state, m).unwrap());
            }
            let m2 = b.generate_sync(&mut state);
            if let Some(m) = &m2 {
                a.receive_sync(&mut a_state, m).unwrap();
            }
            if m1.is_none() && m2.is_none() {
                break;
            }
        }
        assert_eq!(a.heads(), b.heads());
        let mut items: Vec<Vec<u8>> = got
            .into_iter()
            .map(|e| match e {
                Entry::Item { root: 0, value } => value,
                other => panic!("unexpected entry {other:?}"),
            })
            .collect();
        items.sort();
        assert_eq!(items, (0..8u8).map(|i| vec![i]).collect::<Vec<_>>());
        let (c, entries) = Replica::load(
            &id,
            SHARDED,
            &ActorId::from([4u8; 16].as_slice()),
            Some(&a.save()),
            &[],
        )
        .unwrap();
        assert_eq!(c.heads(), a.heads());
        assert_eq!(entries.len(), 16);
    }
}
