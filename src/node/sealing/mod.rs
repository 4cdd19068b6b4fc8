//! Sealed relaying on the node (protocol/sealed.md); `carry.rs` carries
//! envelopes, `open.rs` opens those sealed to us, `repair.rs` asks for
//! and answers what opened envelopes wait on: a change we write to
//! a conversation is sealed to every member device not connected to us at
//! that moment; every team device keeps envelopes in its mailbox, hands
//! each peer the ones it lacks (its own pushed, others' announced with
//! `MailIds` and sent on `MailWant`), and opens those sealed to it, taking their changes
//! as if the sealer had sent them, under the same checks; a recipient shows
//! its done secret once it holds every change of the envelope, and carriers
//! delete an envelope once every recipient did.
//!
//! Invariants:
//! - Envelopes go only to peers that proved a certificate of our team (and
//!   are not revoked: `enforce_membership` cuts those), members or not;
//!   nothing else of a conversation we hold goes to a non-member.
//! - An opened envelope's changes count only if the device that sealed it
//!   (Noise authenticated its key) is in the directory, not revoked, and
//!   admitted by the header the envelope carries, which must be the
//!   conversation's and must admit us.
//! - Everything from a peer here is bounded: frames by `wire`, the mailbox
//!   by its limits, what we remember a peer holds by the mailbox's size.

pub(in crate::node) mod carry;
mod defer;
mod open;
mod repair;

use carry::{send_done, send_ids};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;
use rand_core::SeedableRng;

use super::{Event, Fx, Node, NodeConfig};
use crate::header::ConversationHeader;
use crate::ids::{ConversationId, DeviceId, Millis};
use crate::replica::LocalPush;
use crate::sealed::mailbox::{Done, Id, Mailbox, Offer, OURS};
use crate::sealed::{self, Body, Class, Envelope, Opened};
use crate::store::{keys, StoreOp, Stored};
use crate::wire::{
    Frame, MailDoneEntry, Reason, MAX_FRAME_LEN, MAX_MAIL_DONE, MAX_MAIL_IDS, MAX_SEALED_PER_FRAME,
};

/// An envelope asked for and not received by then is asked for again of
/// the next peer that says it has it.
const WANT_RETRY_MS: Millis = 5_000;

/// Changes written within this long of each other go in one envelope
/// (urgent and STAT ones at once, with whatever waits).
const SEAL_DELAY_MS: Millis = 3_000;

/// Announcements and done secrets wait this long for others to go with.
const OUTBOX_DELAY_MS: Millis = 200;

/// Bytes of changes in one envelope.
const HISTORY_BODY: usize = 192 * 1024;

/// The node's part of sealed relaying.
#[derive(Clone)]
pub(crate) struct Mail {
    pub(super) mailbox: Mailbox,
    x_secret: zeroize::Zeroizing<[u8; 32]>,
    rng: rand_chacha::ChaCha20Rng,
    /// X25519 key → device, for the directory of `x_index_of` entries.
    x_index: BTreeMap<[u8; 32], DeviceId>,
    x_index_of: usize,
    /// Per connected peer: envelopes it holds or deleted, as far as we know.
    has: BTreeMap<DeviceId, BTreeSet<Id>>,
    /// Envelopes sealed to us by devices our directory lacked
    /// (`mail_retry_unknown`).
    unknown: BTreeSet<Id>,
    /// Per connected peer: envelopes we sent it this session (each once).
    sent: BTreeMap<DeviceId, BTreeSet<Id>>,
    /// Envelopes asked for (`MailWant`), from whom and when: asked again
    /// of another peer that has one only after `WANT_RETRY_MS`.
    wanted: BTreeMap<Id, (DeviceId, Millis)>,
    /// Envelopes opened whose changes wait for others: (slot, secret, the
    /// changes), by conversation.
    waiting: BTreeMap<ConversationId, BTreeMap<Id, Waiting>>,
    /// What we asked for of what waits, and whom we answered
    /// (`repair.rs`).
    repair: repair::Repair,
    /// `mail_start` is trying the held envelopes again.
    starting: bool,
    /// Envelopes we sealed (this run): the conversation, each slot's device
    /// and done secret, the changes. A recipient we meet directly gets the
    /// changes by sync, not the envelope, and we show its secret for it
    /// once its sync state shows it holds them (`mail_retire`).
    own: BTreeMap<Id, Own>,
    /// Announcements and done secrets for each peer, sent together when
    /// `Timer::Seal` fires (within `OUTBOX_DELAY_MS`): one frame of each
    /// per peer for a burst, not one per envelope.
    outbox: BTreeMap<DeviceId, (Vec<Id>, Vec<MailDoneEntry>)>,
    /// When `Timer::Seal` is set for.
    timer_at: Option<Millis>,
    /// What member devices that left us recently (within `seal_grace_ms`) are
    /// owed, sealed to them if they stay away (`defer.rs`).
    behind: defer::Behind,
    /// Conversations whose changes were written and not sealed when the
    /// node stopped, with the heads before them: sealed at start.
    queued: Vec<([u8; 16], Vec<u8>)>,
    /// Records that did not read at start, deleted by `on_start`.
    broken: Vec<Id>,
    /// Envelopes sealed to us whose contents we refused.
    pub(super) refused: u64,
}

impl Mail {
    pub(in crate::node) fn new(
        key: &crate::crypto::DeviceKey,
        config: &NodeConfig,
        stored: &Stored,
        rng: &mut dyn rand_core::RngCore,
    ) -> Mail {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut mailbox = Mailbox::new(config.mailbox);
        let mut broken = Vec::new();
        for (id, record) in &stored.mail {
            if let Err(e) = mailbox.restore(0, *id, record) {
                tracing::warn!("a mailbox record does not read and is deleted: {e}");
                broken.push(*id);
            }
        }
        Mail {
            mailbox,
            x_secret: sealed::device_x25519_secret(key),
            rng: rand_chacha::ChaCha20Rng::from_seed(seed),
            x_index: BTreeMap::new(),
            x_index_of: 0,
            has: BTreeMap::new(),
            wanted: BTreeMap::new(),
            sent: BTreeMap::new(),
            unknown: BTreeSet::new(),
            waiting: BTreeMap::new(),
            repair: repair::Repair::default(),
            starting: false,
            own: BTreeMap::new(),
            behind: defer::Behind::default(),
            queued: stored.mail_queue.clone(),
            outbox: BTreeMap::new(),
            timer_at: None,
            broken,
            refused: 0,
        }
    }

    pub(in crate::node) fn peer_gone(&mut self, peer: &DeviceId) {
        self.has.remove(peer);
        self.sent.remove(peer);
        self.outbox.remove(peer);
        self.wanted.retain(|_, (p, _)| p != peer);
    }
}

/// An opened envelope of ours whose changes wait for others: our slot, its
/// done secret, the changes.
type Waiting = (u16, [u8; 32], Vec<ChangeHash>);

#[derive(Clone)]
struct Own {
    conversation: ConversationId,
    slots: Vec<(DeviceId, [u8; 32])>,
    changes: Vec<ChangeHash>,
}

/// What a node's mailbox holds and has done (`GET /v1/status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MailStats {
    pub envelopes: usize,
    pub bytes: usize,
    /// Envelopes deleted as delivered, remembered until they would expire.
    pub delivered: usize,
    pub dropped: crate::sealed::mailbox::Dropped,
    /// Envelopes sealed to us whose contents were refused.
    pub refused: u64,
    /// Envelopes opened whose changes wait for others to arrive.
    pub waiting: usize,
}

impl Node {
    pub fn mail_stats(&self) -> MailStats {
        let (envelopes, bytes) = self.mail.mailbox.usage();
        MailStats {
            envelopes,
            bytes,
            delivered: self.mail.mailbox.gone_len(),
            dropped: self.mail.mailbox.dropped,
            refused: self.mail.refused,
            waiting: self.mail.waiting.values().map(BTreeMap::len).sum(),
        }
    }

    /// `push`, a change we just wrote to conversation `doc` on top of
    /// `before`, is owed to every member device not connected to us
    /// (`defer.rs`): sealed at once if it is urgent or STAT; else within
    /// `SEAL_DELAY_MS` with what else we write meanwhile, or when the
    /// device's grace period ends.
    pub(in crate::node) fn seal_local(
        &mut self,
        now: Millis,
        doc: &[u8; 16],
        before: &[ChangeHash],
        push: &LocalPush,
        class: Class,
        fx: &mut Fx,
    ) {
        let id = ConversationId(*doc);
        self.mail.behind.note_class(now, push.raw_changes(), class);
        let Some(header) = self.header_of(&id) else {
            return;
        };
        let devices: Vec<DeviceId> = self
            .directory()
            .filter(|cert| header.admits(cert) && self.out_of_reach(now, cert))
            .map(|cert| cert.device)
            .collect();
        // A new conversation's envelope has no change: its header.
        let announce = push.raw_changes().is_empty();
        for d in devices {
            let due = if class > Class::Routine {
                now
            } else {
                (now + SEAL_DELAY_MS).max(self.grace_end(&d))
            };
            let owed = defer::Owed {
                since: before.to_vec(),
                all: false,
                announce,
                class,
                due,
            };
            self.defer_for(now, id, d, owed, fx);
        }
        if class > Class::Routine {
            self.seal_behind(now, fx);
        }
    }

    /// Makes `Timer::Seal` fire by `at`.
    pub(super) fn mail_wake(&mut self, at: Millis, fx: &mut Fx) {
        if self.mail.timer_at.is_none_or(|t| at < t) {
            self.mail.timer_at = Some(at);
            fx.timers.push((super::Timer::Seal, at));
        }
    }

    /// `Timer::Seal`: sends the outbox, and seals what is due.
    pub(in crate::node) fn on_mail_timer(&mut self, now: Millis, fx: &mut Fx) {
        self.mail.timer_at = None;
        self.seal_behind(now, fx);
        for (peer, (ids, done)) in std::mem::take(&mut self.mail.outbox) {
            // Only to a peer still proven and not revoked since it was queued.
            let proven = self.peers.get(&peer).and_then(|p| p.member()).cloned();
            if proven.is_none_or(|c| self.is_revoked(&c.device, &c.member)) {
                continue;
            }
            send_ids(peer, &ids, fx);
            send_done(peer, done, fx);
        }
    }

    /// Queues done secrets for `peers`.
    fn mail_post_done(
        &mut self,
        now: Millis,
        peers: &[DeviceId],
        done: &[MailDoneEntry],
        fx: &mut Fx,
    ) {
        if done.is_empty() || peers.is_empty() {
            return;
        }
        for p in peers {
            self.mail
                .outbox
                .entry(*p)
                .or_default()
                .1
                .extend_from_slice(done);
        }
        self.mail_wake(now + OUTBOX_DELAY_MS, fx);
    }

    /// Seals `changes` of conversation `id` (held at `heads`) to
    /// `devices`, in envelopes within the body's bound.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal_changes(
        &mut self,
        now: Millis,
        id: ConversationId,
        changes: Vec<automerge::Change>,
        heads: &[ChangeHash],
        class: Class,
        devices: &[DeviceId],
        fx: &mut Fx,
    ) {
        {
            // Within the body's bound: a long burst goes in several.
            let mut groups: Vec<Vec<automerge::Change>> = vec![Vec::new()];
            let mut len = 0;
            for c in changes {
                let n = c.raw_bytes().len();
                if len + n > HISTORY_BODY && !groups.last().is_some_and(Vec::is_empty) {
                    groups.push(Vec::new());
                    len = 0;
                }
                len += n;
                groups.last_mut().expect("one group").push(c);
            }
            for changes in groups {
                let push = LocalPush::of(changes, heads.to_vec());
                self.seal_for(now, id, &push, class, devices, fx);
            }
        }
    }

    /// Not us, not connected as a proven member, valid and not revoked: a
    /// device a change must be sealed to.
    pub(super) fn out_of_reach(&self, now: Millis, cert: &crate::membership::Certificate) -> bool {
        let connected = self
            .peers
            .get(&cert.device)
            .is_some_and(|p| p.member().is_some());
        cert.device != self.device
            && !connected
            && cert.expires > now
            && !self.is_revoked(&cert.device, &cert.member)
    }

    /// Certificates new to our directory: every conversation that admits
    /// one of them is owed to it. The creator's device seals the whole
    /// history (the changes made before the device was known are what its
    /// later changes depend on), in one envelope for every device new to
    /// it: not every member that learns of the device, each its own copy
    /// (most such devices hold the history already, from members of their
    /// own site). Every other member seals its own changes: those the
    /// creator did not hold when it sealed (written on the far side of a
    /// partition by an author that did not know the device then) reach it
    /// from nobody else.
    pub(in crate::node) fn seal_history_for(
        &mut self,
        now: Millis,
        certs: &[crate::membership::Certificate],
        fx: &mut Fx,
    ) {
        let mut owed: Vec<(ConversationId, DeviceId, bool)> = Vec::new();
        for (id, slot) in &self.convs {
            let creator = slot.header.creator == self.device;
            // A conversation not loaded has no change of this session's
            // actor: nothing of ours to seal, and no reason to load it.
            if !creator && slot.if_loaded().is_none() {
                continue;
            }
            for cert in certs {
                if slot.header.admits(cert) && self.out_of_reach(now, cert) {
                    owed.push((*id, cert.device, creator));
                }
            }
        }
        for (id, d, creator) in owed {
            let o = defer::Owed {
                since: Vec::new(),
                all: creator,
                announce: creator,
                class: Class::Routine,
                due: (now + SEAL_DELAY_MS).max(self.grace_end(&d)),
            };
            if creator {
                self.defer_for(now, id, d, o, fx);
            } else {
                // Not written to `mailq/`: "everything after no heads" would
                // make a restart seal every author's history to every
                // member away. Lost with a crash, it comes by repair.
                self.defer_volatile(now, id, d, o, fx);
            }
        }
    }

    /// Seals `push` of conversation `id` to `devices`, into our mailbox,
    /// and hands it to our peers; the ids of the envelopes taken.
    fn seal_for(
        &mut self,
        now: Millis,
        id: ConversationId,
        push: &LocalPush,
        class: Class,
        devices: &[DeviceId],
        fx: &mut Fx,
    ) -> Vec<Id> {
        let Some(header) = self.header_of(&id).cloned() else {
            return Vec::new();
        };
        let (devices, to): (Vec<DeviceId>, Vec<[u8; 32]>) = devices
            .iter()
            .filter_map(|d| sealed::device_x25519_public(d).map(|x| (*d, x)))
            .unzip();
        if to.is_empty() {
            return Vec::new();
        }
        let body = Body {
            conversation: id,
            header: header.encode(),
            sync: push.message_for(&mut automerge::sync::State::new()),
        };
        let tag = sealed::tag(&header, now);
        let expires = now + sealed::MAX_LIFETIME_MS;
        let changes: Vec<ChangeHash> = push.changes();
        let mut new = Vec::new();
        for (chunk, devs) in to
            .chunks(sealed::MAX_SLOTS)
            .zip(devices.chunks(sealed::MAX_SLOTS))
        {
            let (env, secrets) = match Envelope::seal_with_secrets(
                &self.mail.x_secret,
                chunk,
                class,
                tag,
                expires,
                &body,
                &mut self.mail.rng,
            ) {
                Ok(sealed) => sealed,
                Err(e) => {
                    tracing::warn!(conversation = %id, "could not seal a change for members out of reach: {e}");
                    return new;
                }
            };
            let bytes = env.encode();
            let Some(eid) = self.mail_take(now, bytes.clone(), env, OURS, fx) else {
                // Our mailbox is full of what ranks above it: it still goes
                // to every proven peer but its recipients, never lost.
                let eid = Envelope::id_of(&bytes);
                for peer in self.mail_peers(None) {
                    if !devs.contains(&peer) && self.mail.sent.entry(peer).or_default().insert(eid)
                    {
                        fx.send.push((
                            peer,
                            Frame::Sealed {
                                envelopes: vec![bytes.clone()],
                            }
                            .encode(),
                            crate::sendq::Prio::mail(carry::rank_of(class)),
                        ));
                    }
                }
                continue;
            };
            {
                new.push(eid);
                let slots = devs.iter().copied().zip(secrets).collect();
                self.mail.own.insert(
                    eid,
                    Own {
                        conversation: id,
                        slots,
                        changes: changes.clone(),
                    },
                );
            }
        }
        self.mail_forward(&new, None, fx);
        new
    }
}

/// The class an envelope of a message of `priority` travels in.
pub(in crate::node) fn class_of(priority: crate::message::Priority) -> Class {
    match priority {
        crate::message::Priority::Routine => Class::Routine,
        crate::message::Priority::Urgent => Class::Urgent,
        crate::message::Priority::Stat => Class::Stat,
    }
}
