//! When a node answers, announces and pulls (sync.md §5.2 (3), §5.5, §5.6):
//! the rules that keep a busy mesh from echoing every change back and forth
//! while still getting every change to every member.
//!
//! Invariant: a node never goes quiet on a document while a peer has told
//! it heads it lacks: it answers (at once, or `answer_delay_ms` later if it
//! still lacks them) or pulls, and a finished pull moves on to the next
//! peer whose heads it still lacks (pull.rs).

use automerge::{sync, ChangeHash};

use super::{Fx, Node, Timer};
use crate::ids::{ConversationId, DeviceId, Millis};
use crate::sendq::{Prio, Rank};
use crate::team::TEAM_DOC_ID;
use crate::wire::{
    Frame, HeadsEntry, HEADS_FRAME_SOFT_LEN, MAX_ANNOUNCED_HEADS, MAX_CATALOG_ENTRIES,
};

impl Node {
    /// A peer announced its heads (sync.md §5.5): if they are ours, we are
    /// level; if we hold them all, it is behind and learns our heads from
    /// our own announcements, so nothing is sent; if we lack some, we pull
    /// them from it — `answer_delay_ms` later and only if we still lack
    /// them, since they are usually on their way from their authors too.
    /// An entry listing no heads (too many to list) is pulled at once.
    pub(super) fn on_heads(
        &mut self,
        now: Millis,
        peer: DeviceId,
        entries: Vec<HeadsEntry>,
        fx: &mut Fx,
    ) {
        for e in entries {
            if !self.may_share(&e.doc, &peer) {
                // A correct peer sends the header first; drop it.
                continue;
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.known.insert(e.doc);
            }
            let theirs: Vec<ChangeHash> = e.heads.iter().map(|h| ChangeHash(*h)).collect();
            // Our heads from the index while the conversation is not loaded.
            let ours = if e.doc == TEAM_DOC_ID {
                self.replica_of(&e.doc).map(|r| r.heads())
            } else {
                self.conversation_heads(&ConversationId(e.doc))
            };
            let Some(ours) = ours else {
                continue;
            };
            if theirs.is_empty() {
                self.start_exchange(now, e.doc, peer, [0; 16], fx);
            } else if ours == theirs {
                self.mark_level(peer, &e.doc);
            } else if self.replica_of(&e.doc).is_some_and(|r| !r.has_all(&theirs)) {
                // Its heads as it told them: what a pull from it, now or
                // after another, is to bring (pull.rs).
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.sync.entry(e.doc).or_default().their_heads = Some(theirs);
                }
                self.lacking
                    .insert((e.doc, peer), super::Lacking::Announced);
                self.set_answer_timer(now, fx);
            }
        }
    }

    /// Answers a sync message from `peer` for `doc` (sync.md §5.2 (3)):
    /// - in full, if the peer asked for changes, or has changes we lack
    ///   (our answer says what we need) — but if its message brought
    ///   changes and is not the pull we opened, `answer_delay_ms` later and
    ///   only if we still lack them: on a busy mesh a change pushed by its
    ///   author often arrives before changes it depends on, which are on
    ///   their way from their own authors over other links;
    /// - if its message carried no changes (it is asking what we have) and
    ///   its heads are not ours, in full (a heads-only answer still tells it
    ///   our heads, so it can ask for what a Bloom filter false positive
    ///   kept from it);
    /// - not at all otherwise. A message that brought changes and left us
    ///   holding all the peer has needs no answer: what the peer lacks of
    ///   ours reaches it from its authors and by our announcements (§5.5).
    ///   Answering those on a busy document kept every pair of devices in
    ///   an exchange for as long as anyone wrote, each answer carrying the
    ///   changes that were already on their way from their authors.
    ///
    /// `repeated`: the message told the same heads as the peer's previous
    /// one. If it also brought no changes while we lack those heads, the
    /// exchange is stalled: the peer believes it sent what we lack (a
    /// change we dropped is in its `sent_hashes`, and Automerge never
    /// sends a change twice in a session), or it claims heads it will not
    /// give. The first stall asks again with Automerge's sync reset (the
    /// peer forgets what it sent); a second in a row waits for the answer
    /// timer, so a peer can never hold us in an exchange faster than one
    /// message per `answer_delay_ms` (sync.md §5.2 (3)).
    pub(super) fn answer(
        &mut self,
        now: Millis,
        doc: &[u8; 16],
        peer: DeviceId,
        repeated: bool,
        fx: &mut Fx,
    ) {
        let Some(r) = self.replica_of(doc) else {
            return;
        };
        let Some(state) = self.peers.get(&peer).and_then(|p| p.sync.get(doc)) else {
            return;
        };
        let theirs = state.their_heads.as_deref().unwrap_or_default();
        let needs = state.their_need.as_ref().is_some_and(|n| !n.is_empty());
        let level = state.their_heads.is_some() && theirs == r.heads().as_slice();
        let asked = r.received_changes() == 0;
        let our_pull = self.pulls.open.get(doc).is_some_and(|p| p.peer == peer);
        let lacking = !r.has_all(theirs);
        let stalls = match self.peers.get_mut(&peer) {
            Some(p) => p.note_stall(doc, repeated && asked && lacking),
            None => return,
        };
        if stalls > 0 {
            if let Some(state) = self.peers.get_mut(&peer).and_then(|p| p.sync.get_mut(doc)) {
                state.needs_reset = true;
            }
            if stalls > 1 {
                self.lacking.insert((*doc, peer), super::Lacking::Pushed);
                self.set_answer_timer(now, fx);
                return;
            }
        }
        let ask_now = lacking && (asked || our_pull);
        if needs || ask_now {
            // Giving what it asked for, we ask for nothing unless we must
            // now: its heads keep moving on a busy document, and a need in
            // every reply kept a pair replying to each other for as long as
            // anyone wrote.
            let rule = if ask_now {
                super::Send::Any
            } else {
                super::Send::Reply
            };
            self.push_doc_if(doc, peer, rule, Rank::History, fx);
        }
        if lacking && !ask_now {
            self.lacking.insert((*doc, peer), super::Lacking::Pushed);
            self.set_answer_timer(now, fx);
        } else if !needs && !lacking && asked && !level {
            self.push_doc_if(doc, peer, super::Send::Any, Rank::History, fx);
        }
    }

    fn set_answer_timer(&mut self, now: Millis, fx: &mut Fx) {
        if !self.answer_timer_set {
            self.answer_timer_set = true;
            fx.timers
                .push((Timer::Answer, now + self.config.answer_delay_ms));
        }
    }

    /// `Timer::Answer`: for each peer whose push or announcement left us
    /// lacking some of its heads, if we still lack them, answers its push
    /// (saying what we need) or pulls what it announced.
    pub(super) fn answer_lacking(&mut self, now: Millis, fx: &mut Fx) {
        for ((doc, peer), why) in std::mem::take(&mut self.lacking) {
            let Some(theirs) = self.lacks_from(&doc, &peer) else {
                continue;
            };
            match why {
                super::Lacking::Pushed => self.push_doc(&doc, peer, fx),
                super::Lacking::Announced => {
                    let digest = crate::replica::heads_digest(&theirs);
                    self.start_exchange(now, doc, peer, digest, fx);
                }
            }
        }
    }

    /// The heads `peer` last told us for `doc`, if we lack some of them.
    pub(super) fn lacks_from(&self, doc: &[u8; 16], peer: &DeviceId) -> Option<Vec<ChangeHash>> {
        let theirs = self.peers.get(peer)?.sync.get(doc)?.their_heads.clone()?;
        let lacks = self.replica_of(doc).is_some_and(|r| !r.has_all(&theirs));
        lacks.then_some(theirs)
    }

    /// Tells `peer` our heads of `doc` (a one-entry `Heads` frame).
    pub(super) fn send_heads(&mut self, peer: DeviceId, doc: &[u8; 16], fx: &mut Fx) {
        let Some(entry) = self.heads_entry(doc) else {
            return;
        };
        self.introduce(peer, doc, fx);
        let frame = Frame::Heads {
            entries: vec![entry],
        };
        fx.send.push((peer, frame.encode(), Prio::ANNOUNCE));
    }

    /// Our `Heads` entry for `doc` (no heads if there are too many to list).
    fn heads_entry(&self, doc: &[u8; 16]) -> Option<HeadsEntry> {
        let heads = self.replica_of(doc)?.heads();
        let heads = if heads.len() > MAX_ANNOUNCED_HEADS {
            Vec::new()
        } else {
            heads.iter().map(|h| h.0).collect()
        };
        Some(HeadsEntry { doc: *doc, heads })
    }

    /// Announces the heads of documents changed by relayed changes to every
    /// peer that may have them and is not known to be level with us.
    pub(super) fn announce_heads(&mut self, fx: &mut Fx) {
        let docs = std::mem::take(&mut self.announce);
        let peers: Vec<DeviceId> = self.peers.keys().copied().collect();
        for peer in peers {
            let mut entries = Vec::new();
            for doc in &docs {
                if !self.may_share(doc, &peer) {
                    continue;
                }
                let Some(heads) = self.replica_of(doc).map(|r| r.heads()) else {
                    continue;
                };
                let Some(p) = self.peers.get(&peer) else {
                    continue;
                };
                if p.sync
                    .get(doc)
                    .is_some_and(|s| s.their_heads.as_ref() == Some(&heads))
                {
                    continue;
                }
                self.introduce(peer, doc, fx);
                entries.extend(self.heads_entry(doc));
            }
            // Frames of at most ~HEADS_FRAME_SOFT_LEN bytes.
            let mut frame: Vec<HeadsEntry> = Vec::new();
            let mut len = 0;
            for e in entries {
                if !frame.is_empty()
                    && (len + e.encoded_len() > HEADS_FRAME_SOFT_LEN
                        || frame.len() == MAX_CATALOG_ENTRIES)
                {
                    let entries = std::mem::take(&mut frame);
                    fx.send
                        .push((peer, Frame::Heads { entries }.encode(), Prio::ANNOUNCE));
                    len = 0;
                }
                len += e.encoded_len();
                frame.push(e);
            }
            if !frame.is_empty() {
                fx.send.push((
                    peer,
                    Frame::Heads { entries: frame }.encode(),
                    Prio::ANNOUNCE,
                ));
            }
        }
    }

    /// The peer's heads equal ours: start the sync state from there, so that
    /// the next local change is pushed at once, in a single message.
    pub(super) fn mark_level(&mut self, peer: DeviceId, doc: &[u8; 16]) {
        let heads = if *doc == TEAM_DOC_ID {
            self.replica_of(doc).map(|r| r.heads())
        } else {
            self.conversation_heads(&ConversationId(*doc)) // from the index if unloaded
        };
        let (Some(heads), Some(p)) = (heads, self.peers.get_mut(&peer)) else {
            return;
        };
        let state = p.sync.entry(*doc).or_default();
        state.shared_heads = heads.clone();
        state.last_sent_heads = heads.clone();
        state.their_heads = Some(heads.clone());
        state.their_need = Some(Vec::new());
        state.their_have = Some(vec![sync::Have {
            last_sync: heads,
            bloom: Default::default(),
        }]);
        state.have_responded = true;
    }
}

/// Why a (document, peer) waits in `Node::lacking` for `Timer::Answer`.
#[derive(Clone, Debug)]
pub(crate) enum Lacking {
    /// Its push left us lacking some of its heads (in its sync state).
    Pushed,
    /// It announced heads (kept in its sync state) some of which we lack.
    Announced,
}
