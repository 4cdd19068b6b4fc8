//! One pull per document at a time.
//!
//! When several peers announce the same new changes at once (the devices
//! on one side of a healed partition each heard them from across the
//! split), pulling from all of them would bring every change once per
//! peer. So a node opens at most one exchange per document on its own
//! initiative — on a catalog or `Heads` mismatch — and defers the others
//! until that exchange has brought it everything the peer had. A deferred
//! peer whose announced heads are then ours costs nothing more; one that
//! still differs gets the next exchange.
//!
//! Invariant: answering a peer is never deferred (so every exchange
//! finishes), and a pull that does not finish within `pull_timeout_ms`
//! (the peer went quiet or away) stops blocking the others.

use std::collections::BTreeMap;

use super::{Fx, Node, Timer};
use crate::ids::{DeviceId, Millis};
use crate::team::TEAM_DOC_ID;

/// The exchange a node opened for one document.
#[derive(Clone)]
pub(crate) struct Pull {
    pub peer: DeviceId,
    pub since: Millis,
}

#[derive(Clone, Default)]
pub(crate) struct Pulls {
    pub open: BTreeMap<[u8; 16], Pull>,
    /// Peers whose heads differed while a pull was open, with the digest
    /// they announced.
    pub deferred: BTreeMap<[u8; 16], BTreeMap<DeviceId, [u8; 16]>>,
}

impl Node {
    /// Opens an exchange for `doc` with `peer`, whose heads digest is
    /// `theirs` — or defers it while another pull for `doc` is open.
    pub(super) fn start_exchange(
        &mut self,
        now: Millis,
        doc: [u8; 16],
        peer: DeviceId,
        theirs: [u8; 16],
        fx: &mut Fx,
    ) {
        if self.pulling_elsewhere(now, &doc, &peer) {
            self.pulls
                .deferred
                .entry(doc)
                .or_default()
                .insert(peer, theirs);
            return;
        }
        if let Some(d) = self.pulls.deferred.get_mut(&doc) {
            d.remove(&peer);
        }
        self.pulls.open.insert(doc, Pull { peer, since: now });
        fx.timers
            .push((Timer::Pull(doc), now + self.config.pull_timeout_ms));
        // What we last heard of them is stale: owe them a message even if we
        // sent our current heads before, and send no changes on the strength
        // of what they had then (they have usually heard much of it since);
        // their answer says what they have now.
        if let Some(state) = self.peers.get_mut(&peer).and_then(|p| p.sync.get_mut(&doc)) {
            state.have_responded = false;
            state.their_have = None;
        }
        self.push_doc(&doc, peer, fx);
    }

    /// Is a pull of `doc` from a peer other than `peer` open?
    pub(super) fn pulling_elsewhere(&self, now: Millis, doc: &[u8; 16], peer: &DeviceId) -> bool {
        self.pulls.open.get(doc).is_some_and(|p| {
            p.peer != *peer
                && self.peers.contains_key(&p.peer)
                && now < p.since + self.config.pull_timeout_ms
        })
    }

    /// A sync message from `peer` for `doc` was applied. If it was the pull
    /// and we now hold everything the peer said it has, the pull is done.
    /// If another pull is open and this peer has changes we lack, it waits
    /// its turn (our answers to it carry no `have` meanwhile, see push_doc,
    /// so it does not send them yet).
    pub(super) fn after_sync_message(
        &mut self,
        now: Millis,
        doc: [u8; 16],
        peer: DeviceId,
        fx: &mut Fx,
    ) {
        // Most messages concern neither a pull nor our certificate: skip the
        // dependency walk for them (it showed at 11 % of a busy node's CPU).
        let publish = doc == TEAM_DOC_ID && self.publish_pending;
        if !publish && !self.pulls.open.contains_key(&doc) {
            return;
        }
        let theirs = self
            .peers
            .get(&peer)
            .and_then(|p| p.sync.get(&doc))
            .and_then(|s| s.their_heads.clone());
        let have_all = match (theirs, self.replica_of(&doc)) {
            (Some(h), Some(r)) => r.has_all(&h),
            _ => true,
        };
        if have_all && doc == TEAM_DOC_ID {
            self.publish_certificate(now, fx);
        }
        if self.pulls.open.get(&doc).is_some_and(|p| p.peer == peer) {
            if have_all {
                self.finish_pull(now, doc, fx);
            }
        } else if !have_all && self.pulling_elsewhere(now, &doc, &peer) {
            // No digest we could match: it will get an exchange.
            self.pulls
                .deferred
                .entry(doc)
                .or_default()
                .entry(peer)
                .or_insert([0; 16]);
        }
    }

    /// Ends the pull for `doc` and takes up the deferred peers: those whose
    /// digest is now ours are marked level; one whose last stated heads
    /// (an announcement or a sync message) hold changes we still lack gets
    /// the next pull (the others wait behind it again); the others are told
    /// our heads (`Heads`), and pull if they are behind. (Pulling a peer we
    /// know only by a digest would stall if it is level with us by now: it
    /// has nothing to answer.)
    pub(super) fn finish_pull(&mut self, now: Millis, doc: [u8; 16], fx: &mut Fx) {
        self.pulls.open.remove(&doc);
        let Some(waiting) = self.pulls.deferred.remove(&doc) else {
            return;
        };
        let Some(ours) = self.replica_of(&doc).map(|r| r.heads_digest()) else {
            return;
        };
        for (peer, theirs) in waiting {
            if !self.may_share(&doc, &peer) {
                continue;
            }
            if ours == theirs {
                self.mark_level(peer, &doc);
                continue;
            }
            if let Some(heads) = self.lacks_from(&doc, &peer) {
                let digest = crate::replica::heads_digest(&heads);
                self.start_exchange(now, doc, peer, digest, fx);
                continue;
            }
            self.send_heads(peer, &doc, fx);
        }
    }

    /// The pull timer for `doc` fired: a pull still open since then is
    /// given up on (the exchange itself goes on if the peer answers).
    pub(super) fn pull_timer(&mut self, now: Millis, doc: [u8; 16], fx: &mut Fx) {
        let stale = self
            .pulls
            .open
            .get(&doc)
            .is_some_and(|p| now >= p.since + self.config.pull_timeout_ms);
        if stale {
            self.finish_pull(now, doc, fx);
        }
    }

    /// `peer` left: a pull from it ends.
    pub(super) fn peer_gone(&mut self, now: Millis, peer: DeviceId, fx: &mut Fx) {
        self.trail_peer_gone(&peer);
        self.mail.peer_gone(&peer);
        let docs: Vec<[u8; 16]> = self
            .pulls
            .open
            .iter()
            .filter(|(_, p)| p.peer == peer)
            .map(|(d, _)| *d)
            .collect();
        for doc in docs {
            self.finish_pull(now, doc, fx);
        }
        for d in self.pulls.deferred.values_mut() {
            d.remove(&peer);
        }
    }
}
