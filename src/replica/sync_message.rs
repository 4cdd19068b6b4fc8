//! Automerge's sync protocol as huddle runs it: `receive_sync_message`
//! without Automerge's cost on a long history, and the push of a single
//! local change.

use automerge::sync;
use automerge::{Automerge, ChangeHash, PatchLog};

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
pub(super) fn receive_sync_message(
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

/// The hashes of the changes a sync message carries (a sealed envelope's,
/// to tell when they are all applied). The message is checked first, like
/// any peer's (`check_sync_message`).
pub fn sync_change_hashes(bytes: &[u8]) -> Result<Vec<ChangeHash>, super::ReplicaError> {
    super::check_sync_message(bytes).map_err(super::ReplicaError::Refused)?;
    let msg =
        sync::Message::decode(bytes).map_err(|e| super::ReplicaError::SyncDecode(e.to_string()))?;
    msg.changes
        .iter()
        .map(|c| {
            automerge::Change::try_from(c)
                .map(|c| c.hash())
                .map_err(|e| super::ReplicaError::SyncDecode(e.to_string()))
        })
        .collect()
}

/// A change this replica just wrote, with the heads it left.
pub struct LocalPush {
    /// The change, after the page change it needed, if any.
    pub(super) changes: Vec<automerge::Change>,
    pub(super) heads: Vec<ChangeHash>,
    /// Changes we ask for (a repair request): sorted, unique.
    pub(super) need: Vec<ChangeHash>,
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
            need: self.need.clone(),
            have: Vec::new(),
            changes: self
                .changes
                .iter()
                .map(|c| c.raw_bytes().to_vec())
                .collect::<Vec<_>>()
                .into(),
            flags: Some(flags),
            version: if v2 {
                MessageVersion::V2
            } else {
                MessageVersion::V1
            },
        };
        state
            .sent_hashes
            .extend(self.changes.iter().map(automerge::Change::hash));
        state.last_sent_heads.clone_from(&self.heads);
        state.have_responded = true;
        state.in_flight = true;
        msg.encode()
    }

    pub fn heads(&self) -> &[ChangeHash] {
        &self.heads
    }

    /// A push of `changes` (in the order written) with our `heads`.
    pub fn of(changes: Vec<automerge::Change>, heads: Vec<ChangeHash>) -> LocalPush {
        LocalPush {
            changes,
            heads,
            need: Vec::new(),
        }
    }

    /// The changes pushed.
    pub fn raw_changes(&self) -> &[automerge::Change] {
        &self.changes
    }

    /// A push of no change: our heads only (what a sealed envelope carries
    /// to tell a member of a conversation it has not seen yet).
    pub fn heads_only(heads: Vec<ChangeHash>) -> LocalPush {
        LocalPush {
            changes: Vec::new(),
            heads,
            need: Vec::new(),
        }
    }

    /// No change, our heads, and the changes we ask for (`need`, sorted
    /// and unique): what a repair request carries (protocol/sealed.md §3.1).
    pub fn request(heads: Vec<ChangeHash>, need: Vec<ChangeHash>) -> LocalPush {
        LocalPush {
            changes: Vec::new(),
            heads,
            need,
        }
    }

    /// The hashes of the changes pushed.
    pub fn changes(&self) -> Vec<ChangeHash> {
        self.changes.iter().map(automerge::Change::hash).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::genesis;
    use super::super::tests::SCHEMA;
    use super::*;
    use automerge::sync::SyncDoc;
    use automerge::transaction::Transactable;
    use automerge::{ActorId, ScalarValue};

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
            let items = genesis(&id, SCHEMA).1[0].clone();
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
            tx.insert(&roots[0], 0, ScalarValue::Bytes(vec![i as u8]))
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
}
