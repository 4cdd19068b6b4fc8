//! A conversation: its header, its replicated document, and the rendered
//! index built from it.
//!
//! Document schema (protocol/sync.md §7.2): root `msgs` holding signed
//! message bytes, root `receipts` holding signed receipt bytes; since header
//! version 2 each is spread over 32 shards, so receiving a message into a
//! long conversation costs a fraction of what one list would.
//!
//! Invariants:
//! - The index holds only messages whose signature verifies for this
//!   conversation; it is ordered by (HLC, message id), so every device
//!   renders the same history in the same order.
//! - Indexing is incremental: a new entry costs O(log n).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::ObjType;

use crate::crypto::DeviceKey;
use crate::header::ConversationHeader;
use crate::hlc::Hlc;
use crate::ids::{ConversationId, DeviceId, MemberId, MessageId, Millis};
use crate::message::{Message, Receipt, ReceiptKind};
use crate::replica::{Entry, Persist, Replica, ReplicaError, Root, Schema};

/// Shards per root in the version-2 schema. More shards make each smaller
/// (Automerge applies a remote change by walking the touched object), but
/// a document freshly loaded from a snapshot pays for every shard that a
/// batch of changes touches: at 256 shards a 1k-change catch-up into a
/// loaded 100k conversation took 3.9 s instead of 0.45 s; at 32, 0.40 s
/// (BENCHMARKS.md, finding F).
pub const SHARDS: u16 = 32;

/// The schema of conversations with a version-2 header (every one this
/// binary creates): 32 message lists and 32 receipt maps.
pub const SCHEMA: Schema = Schema {
    roots: &[
        Root::sharded("msgs", ObjType::List, SHARDS),
        Root::sharded("receipts", ObjType::Map, SHARDS),
    ],
};
/// The schema of conversations with a version-1 header: one list, one map.
pub const SCHEMA_V1: Schema = Schema {
    roots: &[
        Root::flat("msgs", ObjType::List),
        Root::flat("receipts", ObjType::Map),
    ],
};
const MSGS: usize = 0;
const RECEIPTS: usize = 1;

/// The document schema a header's version calls for.
pub fn schema(header: &ConversationHeader) -> Schema {
    match header.version {
        1 => SCHEMA_V1,
        _ => SCHEMA,
    }
}

/// The shard a message is written to: the first byte of its id, modulo
/// [`SHARDS`].
pub fn message_shard(id: &MessageId) -> usize {
    usize::from(id.0[0]) % usize::from(SHARDS)
}

/// The shard a receipt is written to: the first byte of the SHA-256 of its
/// document key, modulo [`SHARDS`].
pub fn receipt_shard(doc_key: &str) -> usize {
    usize::from(crate::crypto::sha256(&[doc_key.as_bytes()])[0]) % usize::from(SHARDS)
}

/// Receipts as signed: per signing device, with the member it names. A
/// receipt counts for that member only where the team directory binds the
/// device to the member (see `Node::history`), so one member's device cannot
/// acknowledge in another member's name.
#[derive(Clone, Debug, Default)]
pub struct ReceiptIndex {
    /// Highest delivered / read cursor per device.
    pub delivered: BTreeMap<DeviceId, (MemberId, (Hlc, MessageId))>,
    pub read: BTreeMap<DeviceId, (MemberId, (Hlc, MessageId))>,
    /// Who acknowledged each message: (signing device, member named).
    pub acks: HashMap<MessageId, BTreeSet<(DeviceId, MemberId)>>,
}

/// What applying new entries changed.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub messages: Vec<Message>,
    pub receipts: Vec<Receipt>,
    /// Entries that failed to decode or verify (dropped), by
    /// [`entry_hash`], so the node can remember them across restarts.
    pub rejected: Vec<[u8; 16]>,
}

/// How far to trust entries being indexed.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// From the network: verify every signature.
    Verify,
    /// From our own store: every entry was verified when it arrived, and the
    /// ones that failed are listed here, so signatures are not checked again
    /// (a 100k-message conversation loads in milliseconds, not seconds).
    Stored(&'a BTreeSet<[u8; 16]>),
}

/// A short hash identifying an entry's bytes.
pub fn entry_hash(value: &[u8]) -> [u8; 16] {
    crate::crypto::sha256(&[value])[..16]
        .try_into()
        .expect("16 bytes")
}

pub struct Conversation {
    pub header: ConversationHeader,
    replica: Replica,
    messages: BTreeMap<(Hlc, MessageId), Message>,
    ids: HashMap<MessageId, Hlc>,
    pub receipts: ReceiptIndex,
    pub rejected: u64,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("id", &self.header.id)
            .field("messages", &self.messages.len())
            .finish()
    }
}

impl Conversation {
    pub fn new(header: ConversationHeader, actor: &automerge::ActorId) -> Self {
        let replica = Replica::new(&header.id.0, schema(&header), actor);
        Self::with_replica(header, replica)
    }

    fn with_replica(header: ConversationHeader, replica: Replica) -> Self {
        Conversation {
            header,
            replica,
            messages: BTreeMap::new(),
            ids: HashMap::new(),
            receipts: ReceiptIndex::default(),
            rejected: 0,
        }
    }

    pub fn load(
        header: ConversationHeader,
        actor: &automerge::ActorId,
        snapshot: Option<&[u8]>,
        chunks: &[(u64, Vec<u8>)],
        rejected: &BTreeSet<[u8; 16]>,
    ) -> Result<(Self, Applied), ReplicaError> {
        let (replica, entries) =
            Replica::load(&header.id.0, schema(&header), actor, snapshot, chunks)?;
        let mut c = Self::with_replica(header, replica);
        let applied = c.index(entries, Trust::Stored(rejected));
        Ok((c, applied))
    }

    pub fn id(&self) -> ConversationId {
        self.header.id
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// Verifies (per `trust`) and indexes entries; duplicates are skipped,
    /// invalid ones dropped and reported.
    pub fn index(&mut self, entries: Vec<Entry>, trust: Trust<'_>) -> Applied {
        enum Candidate {
            Message(Message),
            Receipt(Receipt),
        }
        let conv = self.header.id;
        let mut applied = Applied::default();
        // Pass 1: decode, skip duplicates, drop what can never be genuine.
        let mut candidates: Vec<(Candidate, [u8; 16])> = Vec::new();
        // Hashes are only needed to record or look up rejections; loading
        // a store with none skips them (SHA-256 is a third of indexing).
        let need_hash = match trust {
            Trust::Verify => true,
            Trust::Stored(rejected) => !rejected.is_empty(),
        };
        for e in entries {
            let hash = match &e {
                Entry::Item { value, .. } | Entry::Keyed { value, .. } if need_hash => {
                    entry_hash(value)
                }
                _ => [0; 16],
            };
            let candidate = match e {
                Entry::Item { root: MSGS, value } => match Message::decode(&value) {
                    Ok(m) => {
                        let id = m.id();
                        // Same id, same bytes: a duplicate. Same id, other
                        // bytes: an altered copy (the id is the hash of the
                        // signature), which can never be genuine.
                        match self
                            .ids
                            .get(&id)
                            .map(|h| self.messages.get(&(*h, id)) == Some(&m))
                        {
                            Some(true) => continue,
                            Some(false) => None,
                            None => Some(Candidate::Message(m)),
                        }
                    }
                    Err(_) => None,
                },
                Entry::Keyed {
                    root: RECEIPTS,
                    key,
                    value,
                } => match Receipt::decode(&value) {
                    Ok(r) if r.doc_key() == key => Some(Candidate::Receipt(r)),
                    _ => None,
                },
                _ => None,
            };
            match candidate {
                Some(c) => candidates.push((c, hash)),
                None => applied.rejected.push(hash),
            }
        }
        // Pass 2: signatures (or, for our own store, the recorded verdicts).
        let verdicts: Vec<bool> = match trust {
            Trust::Verify => {
                let items: Vec<_> = candidates
                    .iter()
                    .map(|(c, _)| match c {
                        Candidate::Message(m) => m.signed_item(&conv),
                        Candidate::Receipt(r) => r.signed_item(&conv),
                    })
                    .collect();
                crate::crypto::verify_many(&items)
            }
            Trust::Stored(rejected) => candidates
                .iter()
                .map(|(_, h)| !rejected.contains(h))
                .collect(),
        };
        // Pass 3: index in order.
        for ((c, hash), genuine) in candidates.into_iter().zip(verdicts) {
            if !genuine {
                applied.rejected.push(hash);
                continue;
            }
            match c {
                Candidate::Message(m) => {
                    let id = m.id();
                    if self.ids.contains_key(&id) {
                        continue; // the same message twice in one batch
                    }
                    self.ids.insert(id, m.hlc);
                    self.messages.insert((m.hlc, id), m.clone());
                    applied.messages.push(m);
                }
                Candidate::Receipt(r) => {
                    if self.apply_receipt(&r) {
                        applied.receipts.push(r);
                    }
                }
            }
        }
        self.rejected += applied.rejected.len() as u64;
        applied
    }

    fn apply_receipt(&mut self, r: &Receipt) -> bool {
        match r.kind {
            ReceiptKind::Ack => self
                .receipts
                .acks
                .entry(r.upto.1)
                .or_default()
                .insert((r.device, r.member)),
            kind => {
                let map = if kind == ReceiptKind::Read {
                    &mut self.receipts.read
                } else {
                    &mut self.receipts.delivered
                };
                let cur = map.entry(r.device).or_insert((r.member, r.upto));
                if r.upto > cur.1 {
                    *cur = (r.member, r.upto);
                    true
                } else {
                    cur.1 == r.upto
                }
            }
        }
    }

    /// Appends a message this device signed; returns false if it was already there.
    pub fn append(&mut self, now: Millis, m: &Message) -> Result<bool, ReplicaError> {
        if self.ids.contains_key(&m.id()) {
            return Ok(false);
        }
        let id = m.id();
        self.replica
            .insert(now, MSGS, message_shard(&id), m.encode())?;
        self.ids.insert(id, m.hlc);
        self.messages.insert((m.hlc, id), m.clone());
        Ok(true)
    }

    /// Records a receipt this device signed.
    pub fn put_receipt(&mut self, now: Millis, r: &Receipt) -> Result<(), ReplicaError> {
        let key = r.doc_key();
        self.replica
            .put(now, RECEIPTS, receipt_shard(&key), &key, r.encode())?;
        self.apply_receipt(r);
        Ok(())
    }

    /// Has `device` already acknowledged `message`?
    pub fn has_ack_from(&self, message: &MessageId, device: &DeviceId) -> bool {
        let key = format!("a{}{}", message, data_encoding::HEXLOWER.encode(&device.0));
        self.replica
            .contains_key(RECEIPTS, receipt_shard(&key), &key)
    }

    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &Message> + ExactSizeIterator {
        self.messages.values()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn get(&self, id: &MessageId) -> Option<&Message> {
        let hlc = self.ids.get(id)?;
        self.messages.get(&(*hlc, *id))
    }

    /// The position of the newest message in display order.
    pub fn last_position(&self) -> Option<(Hlc, MessageId)> {
        self.messages.keys().next_back().copied()
    }

    pub fn receive_sync(
        &mut self,
        state: &mut automerge::sync::State,
        bytes: &[u8],
    ) -> Result<Applied, ReplicaError> {
        let entries = self.replica.receive_sync(state, bytes)?;
        Ok(self.index(entries, Trust::Verify))
    }

    pub fn take_persist(&mut self) -> Option<Persist> {
        self.replica.take_persist()
    }

    /// A digest of the rendered history (ids in display order): equal on two
    /// devices iff they render the same messages in the same order.
    pub fn history_digest(&self) -> [u8; 32] {
        let ids: Vec<[u8; 16]> = self.messages.keys().map(|(_, id)| id.0).collect();
        let parts: Vec<&[u8]> = ids.iter().map(|i| i.as_slice()).collect();
        crate::crypto::sha256(&parts)
    }

    /// Signs a receipt for this conversation.
    pub fn sign_receipt(
        &self,
        key: &DeviceKey,
        kind: ReceiptKind,
        member: MemberId,
        upto: (Hlc, MessageId),
        at: Hlc,
    ) -> Receipt {
        Receipt::sign(key, &self.header.id, kind, member, upto, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::ConversationKind;
    use crate::message::{Draft, Priority};
    use automerge::{ReadDoc, ROOT};
    use rand_chacha::rand_core::SeedableRng;

    /// Two devices write one message each into a conversation of header
    /// `version`, sync, and both render both; returns the saved document.
    fn two_writers(version: u8) -> (automerge::Automerge, Vec<Message>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let keys = [DeviceKey::generate(&mut rng), DeviceKey::generate(&mut rng)];
        let mut header = ConversationHeader::sign(
            &keys[0],
            ConversationId([4; 16]),
            ConversationKind::Role {
                role: "nurse".into(),
            },
            1,
        );
        header.version = version;
        let mut convs: Vec<Conversation> = (0..2u8)
            .map(|i| {
                Conversation::new(
                    header.clone(),
                    &automerge::ActorId::from([i + 1; 16].as_slice()),
                )
            })
            .collect();
        let mut sent = Vec::new();
        for (i, (c, key)) in convs.iter_mut().zip(&keys).enumerate() {
            let m = Message::sign(
                key,
                &header.id,
                Draft {
                    author_member: MemberId([i as u8; 16]),
                    hlc: Hlc::new(1000 + i as u64, 0),
                    priority: Priority::Routine,
                    reply_to: None,
                    body: format!("message {i}"),
                },
            );
            assert!(c.append(1000, &m).unwrap());
            sent.push(m);
        }
        let (a, b) = convs.split_at_mut(1);
        let (a, b) = (&mut a[0], &mut b[0]);
        let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
        loop {
            let m1 = a.replica().generate_sync(&mut sa);
            if let Some(m) = &m1 {
                b.receive_sync(&mut sb, m).unwrap();
            }
            let m2 = b.replica().generate_sync(&mut sb);
            if let Some(m) = &m2 {
                a.receive_sync(&mut sa, m).unwrap();
            }
            if m1.is_none() && m2.is_none() {
                break;
            }
        }
        assert_eq!(a.len(), 2);
        assert_eq!(a.history_digest(), b.history_digest());
        (
            automerge::Automerge::load(&a.replica().save()).unwrap(),
            sent,
        )
    }

    #[test]
    fn version_2_puts_each_message_in_its_shard() {
        let (doc, sent) = two_writers(2);
        let (_, msgs) = doc.get(ROOT, "msgs").unwrap().unwrap();
        for m in &sent {
            let key = crate::replica::shard_key(message_shard(&m.id()));
            let (_, shard) = doc.get(&msgs, key.as_str()).unwrap().unwrap();
            let held: Vec<Vec<u8>> = doc
                .list_range(&shard, ..)
                .filter_map(|i| match i.value {
                    automerge::ValueRef::Scalar(automerge::ScalarValueRef::Bytes(b)) => {
                        Some(b.to_vec())
                    }
                    _ => None,
                })
                .collect();
            assert!(held.contains(&m.encode()), "message in shard {key}");
        }
    }

    #[test]
    fn version_1_keeps_one_list() {
        let (doc, _) = two_writers(1);
        let (_, msgs) = doc.get(ROOT, "msgs").unwrap().unwrap();
        assert_eq!(doc.object_type(&msgs).unwrap(), ObjType::List);
        assert_eq!(doc.length(&msgs), 2);
    }
}
