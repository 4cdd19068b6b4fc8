//! Taking in a peer's sync messages: reassembling the `Sync` frames of one
//! message (bounded per peer), applying it to the document under the checks
//! and the containment, persisting and announcing what it added.
//!
//! Invariant: a message is applied only once whole, only for a document the
//! peer may share, and nothing of it is persisted unless Automerge and the
//! rules accepted it; a rule breach or a contained panic refuses the peer.

use super::contain::guarded;
use super::peer::Overflow;
use super::sealing::{self, carry};
use super::{Event, Fx, Node, Timer};
use crate::conversation::Applied;
use crate::ids::{ConversationId, DeviceId, Millis};
use crate::store::{keys, StoreOp};
use crate::team::TEAM_DOC_ID;
use crate::wire::Reason;

impl Node {
    pub(super) fn on_sync(
        &mut self,
        now: Millis,
        peer: DeviceId,
        doc: [u8; 16],
        more: bool,
        data: Vec<u8>,
        fx: &mut Fx,
    ) {
        if !self.may_share(&doc, &peer) || self.reloading(&doc) {
            tracing::debug!(peer = %peer.short(), "ignoring sync for a document we do not share with this peer");
            return;
        }
        let limit = self.config.max_reassembly_bytes;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let msg = match p.reassemble(doc, more, &data, limit) {
            Err(Overflow) => {
                self.refuse(peer, Reason::LimitExceeded, fx);
                return;
            }
            Ok(None) => return,
            Ok(Some(msg)) => msg,
        };
        let mut state = p.sync.remove(&doc).unwrap_or_default();
        // What it told us last time, to tell a stalled exchange (answer.rs).
        let told_before = state.their_heads.clone();

        let before;
        let result = if doc == TEAM_DOC_ID {
            let Some(m) = &mut self.membership else {
                return;
            };
            before = m.team.replica().heads_digest();
            m.team.replica_mut().check_rules(self.config.append_only);
            guarded(|| {
                m.team
                    .replica_mut()
                    .receive_sync(&mut state, &msg)
                    .map(|entries| {
                        let applied = m.team.index(entries);
                        (None, Some(applied))
                    })
            })
        } else {
            let id = ConversationId(doc);
            let append_only = self.config.append_only;
            let Some(c) = self.conversation_mut(&id) else {
                return;
            };
            before = c.replica().heads_digest();
            c.replica_mut().check_rules(append_only);
            guarded(|| c.receive_sync(&mut state, &msg).map(|a| (Some(a), None)))
        };
        let result = match result {
            Ok(r) => r,
            Err(why) => {
                self.contain_panic(doc, peer, &why, fx);
                return;
            }
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sync.insert(doc, state);
        }
        let (applied, team_applied) = match result {
            Ok(r) => r,
            Err(crate::replica::ReplicaError::Tainted(breach)) => {
                // Found once applied: this copy goes, the store's comes back.
                tracing::warn!(peer = %peer.short(), "refusing a change: {breach}");
                self.contain(doc, peer, Reason::ProtocolViolation, fx);
                return;
            }
            Err(crate::replica::ReplicaError::Breach(breach)) => {
                tracing::warn!(peer = %peer.short(), "refusing a change: {breach}");
                self.refuse(peer, Reason::ProtocolViolation, fx);
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %peer.short(), error = %e, "sync message rejected");
                let reason = match &e {
                    crate::replica::ReplicaError::Refused(c) if c.is_limit() => {
                        Reason::LimitExceeded
                    }
                    _ => Reason::Malformed,
                };
                self.refuse(peer, reason, fx);
                return;
            }
        };
        self.after_sync_message(now, doc, peer, fx);
        if let Some(a) = applied {
            // A peer's changes (and what we derive from them: the index
            // entry, the rejected set) claim nothing the peer cannot give
            // us again, so they need no flush of their own (`Fx::lazy`).
            let id = ConversationId(doc);
            let lazy = fx.persist.len() == fx.lazy;
            self.persist_conv(&id, fx);
            self.emit_applied(now, id, &a, fx);
            if lazy {
                fx.lazy = fx.persist.len();
            }
            // After the lazy part: a done secret shown is flushed first.
            self.mail_settle(now, &id, fx);
        }
        if let Some(t) = team_applied {
            self.persist_team(fx);
            for r in &t.revocations {
                fx.persist.push(StoreOp::Put {
                    key: keys::revocation(&r.key()),
                    value: r.encode(),
                });
                fx.emit.push(Event::Revoked { target: r.target });
            }
            if !t.revocations.is_empty() {
                self.enforce_membership(now, fx);
            }
            self.seal_history_for(now, &t.new_devices, fx);
            if !t.new_devices.is_empty() {
                self.mail_retry_unknown(now, fx);
            }
            if t.clinical || !t.certificates.is_empty() || !t.revocations.is_empty() {
                self.clinical_retrack(now, fx);
            }
        }
        let repeated = told_before.is_some()
            && self
                .peers
                .get(&peer)
                .and_then(|p| p.sync.get(&doc))
                .is_some_and(|st| st.their_heads == told_before);
        self.answer(now, &doc, peer, repeated, fx);
        // Anything new travels on by announcement (see schedule_announce).
        let after = self.replica_of(&doc).map(|r| r.heads_digest());
        if after != Some(before) {
            self.schedule_announce(now, doc, fx);
        }
    }
}

impl Node {
    /// Events for newly indexed entries of a conversation.
    pub(super) fn emit_applied(
        &mut self,
        now: Millis,
        id: ConversationId,
        applied: &Applied,
        fx: &mut Fx,
    ) {
        let me = self.member_id();
        let mut remote = false;
        for m in &applied.messages {
            self.clock.observe(now, m.hlc);
            remote |= Some(m.author_member) != me;
            fx.emit.push(Event::MessageAdded {
                conversation: id,
                message: m.id(),
                hlc: m.hlc,
                author: m.author_member,
                priority: m.priority,
                local: false,
            });
            let rank = carry::rank_of(sealing::class_of(m.priority));
            self.ranks.note(id.0, rank, now);
        }
        for m in &applied.messages {
            self.clinical_note(now, id, m, now, fx);
        }
        for r in &applied.receipts {
            self.clinical_receipt(now, id, r.upto.1, r.kind, fx);
        }
        if !applied.receipts.is_empty() {
            fx.emit.push(Event::ReceiptsChanged { conversation: id });
        }
        if !applied.rejected.is_empty() {
            tracing::warn!(conversation = %id, count = applied.rejected.len(), "dropped entries that do not verify");
            for h in &applied.rejected {
                fx.persist.push(StoreOp::Put {
                    key: keys::rejected(&id.0, h),
                    value: Vec::new(),
                });
            }
            fx.emit.push(Event::Rejected {
                conversation: Some(id),
                count: applied.rejected.len(),
            });
        }
        if remote {
            self.pending_receipts.insert(id);
            if !self.receipts_timer_set {
                self.receipts_timer_set = true;
                fx.timers
                    .push((Timer::Receipts, now + self.config.receipt_delay_ms));
            }
        }
    }
}
