//! A conversation: its header, its replicated document, and the rendered
//! index built from it.
//!
//! Document schema (protocol/sync.md): root list `msgs` of signed message
//! bytes, root map `receipts` of signed receipt bytes.
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
use crate::replica::{entry_digest, Entry, Persist, Replica, ReplicaError, Schema};

pub const SCHEMA: Schema = Schema {
    roots: &[("msgs", ObjType::List), ("receipts", ObjType::Map)],
    page_len: PAGE_LEN,
};
/// Messages per page of `msgs` (sync.md §7.2): receiving a message walks
/// one page, so it costs the same in a 100k-message conversation as in a
/// small one (BENCHMARKS.md, finding F).
pub const PAGE_LEN: usize = 512;
const MSGS: usize = 0;
const RECEIPTS: usize = 1;

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
    /// Who marked each (reminder, occurrence) done.
    pub done: HashMap<(MessageId, u16), BTreeSet<(DeviceId, MemberId)>>,
    /// Each device's newest snooze of a (reminder, occurrence): (receipt
    /// time, until, member named).
    pub snoozed: HashMap<(MessageId, u16), Snoozes>,
}

/// One (reminder, occurrence)'s snoozes: per device, (receipt time, until,
/// member named).
pub type Snoozes = BTreeMap<DeviceId, (Hlc, Millis, MemberId)>;

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
    /// From the network, where the document's rules already verified the
    /// entries whose digests ([`crate::replica::entry_digest`]) are listed
    /// (sync.md §7.5): only the others are checked.
    Checked(&'a std::collections::HashSet<[u8; 16]>),
}

/// A short hash identifying an entry's bytes.
pub fn entry_hash(value: &[u8]) -> [u8; 16] {
    crate::crypto::sha256(&[value])[..16]
        .try_into()
        .expect("16 bytes")
}

#[derive(Clone)]
pub struct Conversation {
    pub header: ConversationHeader,
    replica: Replica,
    messages: BTreeMap<(Hlc, MessageId), Message>,
    ids: HashMap<MessageId, Hlc>,
    /// Escalation entries by (escalated message, level): their copies.
    escalations: HashMap<(MessageId, u8), BTreeSet<(Hlc, MessageId)>>,
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

/// What a peer may write into a conversation (sync.md §7.5): into `msgs`,
/// a message that verifies for this conversation (so every byte a peer
/// adds is a member's, signed); into `receipts`, a receipt that verifies
/// for it, under its own key, and that moves no cursor back (a device's
/// delivered and read cursors only move forward; an acknowledgement, once
/// there, stays).
fn entry_rule(id: ConversationId) -> crate::replica::Rule {
    use crate::replica::Write;
    std::sync::Arc::new(move |write, value| {
        let (key, current) = match write {
            Write::Insert { root: MSGS } => {
                let m = Message::decode(value)
                    .map_err(|e| format!("a message that does not decode: {e}"))?;
                return if m.verify(&id) {
                    Ok(())
                } else {
                    Err("a message whose signature does not verify for this conversation".into())
                };
            }
            Write::Put {
                root: RECEIPTS,
                key,
                current,
            } => (key, current),
            _ => return Err("a write outside the messages and the receipts".into()),
        };
        let r =
            Receipt::decode(value).map_err(|e| format!("a receipt that does not decode: {e}"))?;
        if r.doc_key() != key {
            return Err("a receipt under another receipt's key".into());
        }
        if !r.verify(&id) {
            return Err("a receipt whose signature does not verify".into());
        }
        // Under its own key every old value is this device's, of this kind.
        let back = current
            .iter()
            .filter_map(|v| Receipt::decode(v).ok())
            .any(|old| match r.kind {
                ReceiptKind::Snooze { .. } => r.at < old.at,
                _ => r.upto < old.upto,
            });
        if back {
            return Err("a receipt that moves a cursor back".into());
        }
        Ok(())
    })
}

impl Conversation {
    pub fn new(header: ConversationHeader, actor: &automerge::ActorId) -> Self {
        let replica = Replica::new(&header.id.0, SCHEMA, actor);
        Self::with_replica(header, replica)
    }

    fn with_replica(header: ConversationHeader, replica: Replica) -> Self {
        let replica = replica.with_rule(entry_rule(header.id));
        Conversation {
            header,
            replica,
            messages: BTreeMap::new(),
            ids: HashMap::new(),
            escalations: HashMap::new(),
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
        let (replica, entries) = Replica::load(&header.id.0, SCHEMA, actor, snapshot, chunks)?;
        // Stored entries were verified when they arrived, but entries in an
        // object a member hid (by a put or a deletion under its key) reached
        // this device by a path of their own: verified again, whatever the
        // markers say. Such objects exist only under attack.
        let hidden = replica.hidden_entries();
        let (suspect, stored): (Vec<Entry>, Vec<Entry>) = if hidden.is_empty() {
            (Vec::new(), entries) // no digest per entry for an honest store
        } else {
            entries
                .into_iter()
                .partition(|e| hidden.contains(&entry_digest(e)))
        };
        let mut c = Self::with_replica(header, replica);
        let mut applied = c.index(stored, Trust::Stored(rejected));
        if !suspect.is_empty() {
            let more = c.index(suspect, Trust::Verify);
            applied.messages.extend(more.messages);
            applied.receipts.extend(more.receipts);
            applied.rejected.extend(more.rejected);
        }
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
            Trust::Verify | Trust::Checked(_) => true,
            Trust::Stored(rejected) => !rejected.is_empty(),
        };
        // Per candidate: already verified by the document's rules.
        let mut pre_verified: Vec<bool> = Vec::new();
        for e in entries {
            let pre = matches!(trust, Trust::Checked(v) if v.contains(&entry_digest(&e)));
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
                Some(c) => {
                    candidates.push((c, hash));
                    pre_verified.push(pre);
                }
                None => applied.rejected.push(hash),
            }
        }
        // Pass 2: signatures (or, for our own store, the recorded verdicts).
        fn signed<'a>(c: &'a Candidate, conv: &ConversationId) -> crate::crypto::SignedItem<'a> {
            match c {
                Candidate::Message(m) => m.signed_item(conv),
                Candidate::Receipt(r) => r.signed_item(conv),
            }
        }
        // Which candidates to verify: all from the network, but those the
        // rules verified; from our store, only those marked. A mark is a
        // hash of the bytes alone, and the same bytes may be rejected in
        // one place (a copy under a wrong key) and be genuine in another: a
        // marked candidate is verified again, so a member's misplaced copy
        // cannot erase the original.
        let check: Vec<usize> = (0..candidates.len())
            .filter(|&i| match trust {
                Trust::Verify => true,
                Trust::Checked(_) => !pre_verified[i],
                Trust::Stored(rejected) => rejected.contains(&candidates[i].1),
            })
            .collect();
        let items: Vec<_> = check
            .iter()
            .map(|&i| signed(&candidates[i].0, &conv))
            .collect();
        let mut verdicts = vec![true; candidates.len()];
        for (i, ok) in check.into_iter().zip(crate::crypto::verify_many(&items)) {
            verdicts[i] = ok;
        }
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
                    self.note_escalation(&m, id);
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
            ReceiptKind::Done { occurrence } => self
                .receipts
                .done
                .entry((r.upto.1, occurrence))
                .or_default()
                .insert((r.device, r.member)),
            ReceiptKind::Snooze { occurrence, until } => {
                let per = self
                    .receipts
                    .snoozed
                    .entry((r.upto.1, occurrence))
                    .or_default();
                match per.get(&r.device) {
                    Some((at, ..)) if *at >= r.at => false,
                    _ => {
                        per.insert(r.device, (r.at, until, r.member));
                        true
                    }
                }
            }
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
        self.replica.insert(now, MSGS, m.encode())?;
        let id = m.id();
        self.ids.insert(id, m.hlc);
        self.note_escalation(m, id);
        self.messages.insert((m.hlc, id), m.clone());
        Ok(true)
    }

    fn note_escalation(&mut self, m: &Message, id: MessageId) {
        if let Some(e) = &m.fields.escalation {
            self.escalations
                .entry((e.message, e.level))
                .or_default()
                .insert((m.hlc, id));
        }
    }

    /// Every copy of escalation level `level` of `message` (entries signed
    /// by different devices are never byte-identical), in display order.
    pub fn escalation_copies(&self, message: &MessageId, level: u8) -> Vec<(Hlc, MessageId)> {
        self.escalations
            .get(&(*message, level))
            .map_or_else(Vec::new, |c| c.iter().copied().collect())
    }

    /// Is `m` shown? Every message is, but an escalation entry only as the
    /// first copy of its (message, level) in display order (sync.md §7.6),
    /// so each level of each message is shown once on every device.
    pub fn shown(&self, m: &Message) -> bool {
        match &m.fields.escalation {
            None => true,
            Some(e) => self
                .escalations
                .get(&(e.message, e.level))
                .and_then(|c| c.first())
                .is_none_or(|first| *first == m.order_key()),
        }
    }

    /// Records a receipt this device signed.
    pub fn put_receipt(&mut self, now: Millis, r: &Receipt) -> Result<(), ReplicaError> {
        self.replica.put(now, RECEIPTS, &r.doc_key(), r.encode())?;
        self.apply_receipt(r);
        Ok(())
    }

    /// Has `device` already acknowledged `message`?
    pub fn has_ack_from(&self, message: &MessageId, device: &DeviceId) -> bool {
        self.replica.contains_key(
            RECEIPTS,
            &format!("a{}{}", message, data_encoding::HEXLOWER.encode(&device.0)),
        )
    }

    pub fn messages(&self) -> impl DoubleEndedIterator<Item = &Message> + ExactSizeIterator {
        self.messages.values()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Up to `limit` messages in display order, ending just before `before`
    /// (or with the newest when `before` is `None`): a page read from the
    /// newest backwards, costing the page's length at any history length.
    /// `None` when `before` names no message here.
    pub fn page(&self, before: Option<&MessageId>, limit: usize) -> Option<Vec<&Message>> {
        let end = match before {
            Some(id) => std::ops::Bound::Excluded((*self.ids.get(id)?, *id)),
            None => std::ops::Bound::Unbounded,
        };
        let mut page: Vec<&Message> = self
            .messages
            .range((std::ops::Bound::Unbounded, end))
            .rev()
            .take(limit)
            .map(|(_, m)| m)
            .collect();
        page.reverse();
        Some(page)
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
        let verified = self.replica.take_verified();
        Ok(self.index(entries, Trust::Checked(&verified)))
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
    use automerge::transaction::Transactable;
    use rand_chacha::rand_core::SeedableRng;

    /// An entry that reached the store unverified (by whatever path) in an
    /// object a member hid is verified at load, not trusted for want of a
    /// marker.
    #[test]
    fn entries_in_a_hidden_object_are_verified_at_load() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let key = DeviceKey::generate(&mut rng);
        let ana = MemberId([1; 16]);
        let kind = ConversationKind::Group {
            title: "Ward 7".into(),
            members: [ana].into_iter().collect(),
        };
        let header = ConversationHeader::create(&key, kind, 5);
        let actor = automerge::ActorId::from([2u8; 16].as_slice());
        let mut c = Conversation::new(header.clone(), &actor);
        let draft = |body: &str, hlc: u64| Draft {
            author_member: ana,
            hlc: Hlc(hlc),
            priority: Priority::Routine,
            reply_to: None,
            body: body.into(),
            fields: Default::default(),
        };
        let genuine = Message::sign(&key, &header.id, draft("BP 80/40", 1 << 16));
        c.append(10, &genuine).unwrap();
        let mut forged = Message::sign(&key, &header.id, draft("all clear", 2 << 16));
        forged.body = "discharge bed 4".into(); // the signature no longer holds
        c.replica_mut().insert(10, MSGS, forged.encode()).unwrap();
        let stored = c.replica().save();
        let (plain, _) =
            Conversation::load(header.clone(), &actor, Some(&stored), &[], &BTreeSet::new())
                .unwrap();
        assert_eq!(
            plain.len(),
            2,
            "unhidden, stored entries are trusted: the premise"
        );

        c.replica_mut()
            .local(11, |tx| {
                tx.put_object(automerge::ROOT, "msgs", ObjType::List)
                    .map(|_| ())
            })
            .unwrap();
        let stored = c.replica().save();
        let (loaded, applied) =
            Conversation::load(header, &actor, Some(&stored), &[], &BTreeSet::new()).unwrap();
        let bodies: Vec<&str> = loaded.messages().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["BP 80/40"]);
        assert_eq!(applied.rejected.len(), 1);
    }
}
