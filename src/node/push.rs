//! Sending a document's sync data to peers: what the sync protocol says a
//! peer should get ([`Node::push_doc_if`]), the push of a change we just
//! wrote ([`Node::push_local`]), and the scheduling of announcements for
//! changes we received.
//!
//! Invariant: every function here that puts a document's bytes into a frame
//! asks `Node::may_share` first.

use std::collections::BTreeMap;

use crate::ids::{ConversationId, DeviceId, Millis};
use crate::team::TEAM_DOC_ID;

use super::contain::guarded;
use super::io::Timer;
use super::sealing::carry;
use super::{docs, Fx, Node};
use crate::sendq::{Prio, Rank};
use crate::wire::{Frame, SYNC_CHUNK_LEN};

/// Which sync message [`Node::push_doc_if`] may send.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Send {
    /// Whatever the sync protocol has to say.
    Any,
    /// A reply giving a peer what it asked for: without the changes we
    /// need (those we ask for apart, `Timer::Answer`).
    Reply,
}

/// How long a conversation's sync messages keep the rank of an urgent or
/// STAT change written or received in it: a catch-up after a partition
/// of up to this long goes before other conversations' (transport.md §5.1).
const RANK_MEMO_MS: Millis = 3_600_000;
/// Conversations remembered so (the oldest noted is forgotten first).
const RANK_MEMO_MAX: usize = 256;

/// Conversations with an urgent or STAT change lately, and when.
#[derive(Clone, Debug, Default)]
pub(crate) struct DocRanks {
    recent: BTreeMap<[u8; 16], (Rank, Millis)>,
}

impl DocRanks {
    /// A change of `rank` was written or received in `doc` at `now`.
    pub(crate) fn note(&mut self, doc: [u8; 16], rank: Rank, now: Millis) {
        if rank <= Rank::Routine {
            return;
        }
        let e = self.recent.entry(doc).or_insert((rank, now));
        *e = (e.0.max(rank), e.1.max(now));
        if self.recent.len() > RANK_MEMO_MAX {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(d, _)| *d);
            if let Some(d) = oldest {
                self.recent.remove(&d);
            }
        }
    }

    /// `base`, or higher if `doc` had a pressing change within
    /// [`RANK_MEMO_MS`] before `now`.
    pub(crate) fn rank(&self, doc: &[u8; 16], base: Rank, now: Millis) -> Rank {
        match self.recent.get(doc) {
            Some((r, at)) if now.saturating_sub(*at) <= RANK_MEMO_MS => base.max(*r),
            _ => base,
        }
    }
}

impl Node {
    /// Sends `peer` whatever the sync protocol says it should get for `doc`:
    /// catching up, so after what we write now (`sendq.rs`).
    pub(super) fn push_doc(&mut self, doc: &[u8; 16], peer: DeviceId, fx: &mut Fx) {
        self.push_doc_if(doc, peer, Send::Any, Rank::History, fx);
    }

    /// [`Node::push_doc`], shaped by `rule`, sent at `rank`.
    pub(super) fn push_doc_if(
        &mut self,
        doc: &[u8; 16],
        peer: DeviceId,
        rule: Send,
        rank: Rank,
        fx: &mut Fx,
    ) {
        if !self.may_share(doc, &peer) {
            return;
        }
        if *doc != TEAM_DOC_ID {
            self.conversation(&ConversationId(*doc)); // loads it
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let state = p.sync.entry(*doc).or_default();
        let replica = if *doc == TEAM_DOC_ID {
            self.membership.as_ref().map(|m| m.team.replica())
        } else {
            self.convs
                .get(&ConversationId(*doc))
                .and_then(docs::Slot::if_loaded)
                .map(|c| c.replica())
        };
        let Some(replica) = replica else { return };
        let msg = match guarded(|| match rule {
            Send::Any | Send::Reply => replica.generate_sync(state),
        }) {
            Ok(msg) => msg,
            Err(why) => {
                self.contain_panic(*doc, peer, &why, fx);
                return;
            }
        };
        self.introduce(peer, doc, fx);
        let Some(mut msg) = msg else { return };
        // While we pull `doc` from someone else, we tell this peer nothing of
        // what we have, so it does not send us the same changes too; it gets
        // its turn when the pull is done (pull.rs).
        let pulling_elsewhere = self
            .pulls
            .open
            .get(doc)
            .is_some_and(|p| p.peer != peer && self.peers.contains_key(&p.peer));
        let reply = matches!(rule, Send::Reply);
        if pulling_elsewhere || reply {
            if let Ok(mut m) = automerge::sync::Message::decode(&msg) {
                if (pulling_elsewhere && !m.have.is_empty()) || (reply && !m.need.is_empty()) {
                    if pulling_elsewhere {
                        m.have.clear();
                    }
                    if reply {
                        m.need.clear();
                    }
                    msg = m.encode();
                }
            }
        }
        let rank = self.ranks.rank(doc, rank, self.clinical.seen);
        push_sync_frames(peer, *doc, &msg, rank, &mut fx.send);
    }

    /// Schedules an announcement of `doc`'s heads to every peer that may
    /// lack them. Changes we write are pushed at once (`push_doc_to_all`);
    /// changes we receive travel on by announcement, because most peers
    /// have usually heard them from the author too, and pushing every
    /// change to every peer costs the mesh a copy per pair.
    pub(super) fn schedule_announce(&mut self, now: Millis, doc: [u8; 16], fx: &mut Fx) {
        self.announce.insert(doc);
        if !self.announce_timer_set {
            self.announce_timer_set = true;
            fx.timers
                .push((Timer::Announce, now + self.config.announce_delay_ms));
        }
    }

    /// After a change we wrote on top of `before`: pushes just that change
    /// to every connected peer allowed to have it (sync.md §5.2 (2)). The
    /// peer lacks it for sure; whatever else it may lack of ours reaches it
    /// from its authors or by announcement, and a peer that lacks what the
    /// change depends on asks us for it (`Node::answer`). So a push costs
    /// one small message per peer, however stale our view of the peer.
    /// A conversation's change is also sealed, in `class`, to its member
    /// devices not connected now (`sealing.rs`).
    pub(super) fn push_local(
        &mut self,
        now: Millis,
        doc: &[u8; 16],
        before: &[automerge::ChangeHash],
        class: Option<crate::sealed::Class>,
        fx: &mut Fx,
    ) {
        let Some(push) = self.replica_of(doc).and_then(|r| r.local_push()) else {
            return;
        };
        if let Some(class) = class {
            self.ranks.note(*doc, carry::rank_of(class), now);
        }
        let peers: Vec<DeviceId> = self.peers.keys().copied().collect();
        for peer in peers {
            if !self.may_share(doc, &peer) {
                continue;
            }
            self.introduce(peer, doc, fx);
            let Some(state) = self
                .peers
                .get_mut(&peer)
                .map(|p| p.sync.entry(*doc).or_default())
            else {
                continue;
            };
            let msg = push.message_for(state);
            // The link is ordered: once it reads this message, a peer that
            // was at `before` is at our heads (plus whatever it wrote
            // meanwhile, which it will push to us).
            if state.their_heads.as_deref() == Some(before) {
                state.their_heads = Some(push.heads().to_vec());
            }
            let rank = class.map_or(Rank::Routine, carry::rank_of);
            push_sync_frames(peer, *doc, &msg, rank, &mut fx.send);
        }
        if let Some(class) = class {
            self.seal_local(now, doc, before, &push, class, fx);
        }
    }

    /// Pushes `doc` to every connected peer allowed to have it, at `rank`
    /// (something we just did: a new conversation, a revocation).
    pub(super) fn push_doc_to_all(&mut self, doc: &[u8; 16], rank: Rank, fx: &mut Fx) {
        let peers: Vec<DeviceId> = self.peers.keys().copied().collect();
        for p in peers {
            self.push_doc_if(doc, p, Send::Any, rank, fx);
        }
    }
}

/// Splits an encoded sync message into `Sync` frames.
pub(crate) fn push_sync_frames(
    peer: DeviceId,
    doc: [u8; 16],
    msg: &[u8],
    rank: Rank,
    send: &mut Vec<(DeviceId, Vec<u8>, Prio)>,
) {
    let rank = if doc == TEAM_DOC_ID { Rank::Stat } else { rank };
    let mut chunks = msg.chunks(SYNC_CHUNK_LEN).peekable();
    while let Some(chunk) = chunks.next() {
        let frame = Frame::Sync {
            doc,
            more: chunks.peek().is_some(),
            data: chunk.to_vec(),
        };
        send.push((peer, frame.encode(), Prio::doc(doc, rank)));
    }
}
