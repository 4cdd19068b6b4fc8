//! Sealed relaying on the node (protocol/sealed.md); `carry.rs` carries
//! envelopes, `open.rs` opens those sealed to us: a change we write to
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

mod carry;
mod open;

use carry::{send_done, send_ids};

use std::collections::{BTreeMap, BTreeSet};

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

/// A change pushed this recently to a member device that then left, and
/// not shown held by it, may have been lost with the link.
const IN_FLIGHT_MS: Millis = 10_000;
/// Recent changes remembered per conversation.
const MAX_RECENT: usize = 64;

/// Bytes of changes in one envelope of a conversation's history.
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
    /// Envelopes we sealed (this run): the conversation, each slot's device
    /// and done secret, the changes. A recipient we meet directly gets the
    /// changes by sync, not the envelope, and we show its secret for it
    /// once its sync state shows it holds them (`mail_retire`).
    own: BTreeMap<Id, Own>,
    /// Changes written to conversations while some member devices were out
    /// of reach, sealed together when `Timer::Seal` fires: one envelope for
    /// a message and the receipts around it, not one each.
    pending: BTreeMap<ConversationId, Pending>,
    /// When the pending changes are to be sealed.
    seal_due: Option<Millis>,
    /// Announcements and done secrets for each peer, sent together when
    /// `Timer::Seal` fires (within `OUTBOX_DELAY_MS`): one frame of each
    /// per peer for a burst, not one per envelope.
    outbox: BTreeMap<DeviceId, (Vec<Id>, Vec<MailDoneEntry>)>,
    /// When `Timer::Seal` is set for.
    timer_at: Option<Millis>,
    /// Our changes of the last `IN_FLIGHT_MS`, per conversation: what a
    /// member device that leaves may not have received.
    recent: BTreeMap<ConversationId, std::collections::VecDeque<(Millis, ChangeHash)>>,
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
            own: BTreeMap::new(),
            pending: BTreeMap::new(),
            recent: BTreeMap::new(),
            queued: stored.mail_queue.clone(),
            seal_due: None,
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

#[derive(Clone, Default)]
struct Pending {
    changes: Vec<automerge::Change>,
    class: Option<Class>,
}

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
        }
    }

    /// `push`, a change we just wrote to conversation `doc`, is to be
    /// sealed to every member device not connected to us: at once if it is
    /// urgent or STAT, else within `SEAL_DELAY_MS`, with what else we write
    /// meanwhile.
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
        let recent = self.mail.recent.entry(id).or_default();
        recent.retain(|(at, _)| now < at + IN_FLIGHT_MS);
        recent.extend(push.raw_changes().iter().map(|c| (now, c.hash())));
        while recent.len() > MAX_RECENT {
            recent.pop_front();
        }
        let Some(header) = self.header_of(&id) else {
            return;
        };
        let any = self
            .directory()
            .any(|cert| header.admits(cert) && self.out_of_reach(now, cert));
        if !any {
            return;
        }
        let p = self.mail.pending.entry(id).or_default();
        if p.changes.is_empty() && p.class.is_none() {
            // Written in this step, with the change: a crash before the
            // envelope is sealed leaves this for the next start.
            fx.persist.push(StoreOp::Put {
                key: keys::mail_queue(doc),
                value: before.iter().flat_map(|h| h.0).collect(),
            });
        }
        p.changes.extend(push.raw_changes().iter().cloned());
        p.class = p.class.max(Some(class));
        if class > Class::Routine {
            self.seal_pending(now, fx);
        } else if self.mail.seal_due.is_none() {
            self.mail.seal_due = Some(now + SEAL_DELAY_MS);
            self.mail_wake(now + SEAL_DELAY_MS, fx);
        }
    }

    /// Makes `Timer::Seal` fire by `at`.
    fn mail_wake(&mut self, at: Millis, fx: &mut Fx) {
        if self.mail.timer_at.is_none_or(|t| at < t) {
            self.mail.timer_at = Some(at);
            fx.timers.push((super::Timer::Seal, at));
        }
    }

    /// `Timer::Seal`: sends the outbox, and seals what is due.
    pub(in crate::node) fn on_mail_timer(&mut self, now: Millis, fx: &mut Fx) {
        self.mail.timer_at = None;
        match self.mail.seal_due {
            Some(due) if due <= now => self.seal_pending(now, fx),
            Some(due) => self.mail_wake(due, fx),
            None => {}
        }
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

    /// Seals every conversation's pending changes to its member devices
    /// out of reach now.
    pub(in crate::node) fn seal_pending(&mut self, now: Millis, fx: &mut Fx) {
        self.mail.seal_due = None;
        for (id, p) in std::mem::take(&mut self.mail.pending) {
            let Some(header) = self.header_of(&id) else {
                continue;
            };
            let Some(heads) = self.replica_of(&id.0).map(crate::replica::Replica::heads) else {
                // Being read back after a contained panic: sealed once it is.
                self.mail.pending.insert(id, p);
                self.mail.seal_due = Some(now + SEAL_DELAY_MS);
                self.mail_wake(now + SEAL_DELAY_MS, fx);
                continue;
            };
            let devices: Vec<DeviceId> = self
                .directory()
                .filter(|cert| header.admits(cert) && self.out_of_reach(now, cert))
                .map(|cert| cert.device)
                .collect();
            // Within the body's bound: a long burst goes in several.
            let mut groups: Vec<Vec<automerge::Change>> = vec![Vec::new()];
            let mut len = 0;
            for c in p.changes {
                let n = c.raw_bytes().len();
                if len + n > HISTORY_BODY && !groups.last().is_some_and(Vec::is_empty) {
                    groups.push(Vec::new());
                    len = 0;
                }
                len += n;
                groups.last_mut().expect("one group").push(c);
            }
            for changes in groups {
                let push = LocalPush::of(changes, heads.clone());
                self.seal_for(
                    now,
                    id,
                    &push,
                    p.class.unwrap_or(Class::Routine),
                    &devices,
                    fx,
                );
            }
            fx.persist.push(StoreOp::Delete {
                key: keys::mail_queue(&id.0),
            });
        }
    }

    /// A member device left: what we wrote in the last `IN_FLIGHT_MS` that
    /// it has not shown us it holds (pushed while the link broke, say) is
    /// sealed to it, since it may never meet us again. A change it does
    /// hold costs an envelope it opens, finds applied, and shows done.
    pub(in crate::node) fn seal_unconfirmed(
        &mut self,
        now: Millis,
        device: DeviceId,
        peer: &super::peer::Peer,
        fx: &mut Fx,
    ) {
        let Some(cert) = peer.member().cloned() else {
            return;
        };
        // In document order: the envelopes' random draws must not depend on
        // a hash map's (the simulator replays a seed exactly).
        let mut docs: Vec<(&[u8; 16], &automerge::sync::State)> = peer.sync.iter().collect();
        docs.sort_by_key(|(d, _)| **d);
        for (doc, state) in docs {
            let id = ConversationId(*doc);
            if !self.header_of(&id).is_some_and(|h| h.admits(&cert)) {
                continue;
            }
            let Some(replica) = self.replica_of(doc) else {
                continue;
            };
            let Some(recent) = self.mail.recent.get(&id) else {
                continue;
            };
            let hashes: Vec<ChangeHash> = recent
                .iter()
                .filter(|(at, _)| now < at + IN_FLIGHT_MS)
                .map(|(_, h)| *h)
                .filter(|h| !replica.covers(&state.shared_heads, &[*h]))
                .collect();
            let ours = replica.changes_by_hash(&hashes);
            if ours.is_empty() {
                continue;
            }
            let heads = replica.heads();
            let push = LocalPush::of(ours, heads);
            self.seal_for(now, id, &push, Class::Routine, &[device], fx);
        }
    }

    /// Not us, not connected as a proven member, valid and not revoked: a
    /// device a change must be sealed to.
    fn out_of_reach(&self, now: Millis, cert: &crate::membership::Certificate) -> bool {
        let connected = self
            .peers
            .get(&cert.device)
            .is_some_and(|p| p.member().is_some());
        cert.device != self.device
            && !connected
            && cert.expires > now
            && !self.is_revoked(&cert.device, &cert.member)
    }

    /// Certificates new to our directory: every conversation we hold that
    /// admits one of them is sealed to it whole (the changes made before
    /// we knew it are what its later changes depend on).
    pub(in crate::node) fn seal_history_for(
        &mut self,
        now: Millis,
        certs: &[crate::membership::Certificate],
        fx: &mut Fx,
    ) {
        let convs: Vec<ConversationId> = self.convs.keys().copied().collect();
        for cert in certs {
            if !self.out_of_reach(now, cert) {
                continue;
            }
            for id in &convs {
                if !self.header_of(id).is_some_and(|h| h.admits(cert)) {
                    continue;
                }
                let Some(pushes) = self
                    .conversation(id)
                    .map(|c| c.replica().history_pushes(HISTORY_BODY))
                else {
                    continue;
                };
                for push in &pushes {
                    self.seal_for(now, *id, push, Class::Routine, &[cert.device], fx);
                }
            }
        }
    }

    /// Seals `push` of conversation `id` to `devices`, into our mailbox,
    /// and hands it to our peers.
    fn seal_for(
        &mut self,
        now: Millis,
        id: ConversationId,
        push: &LocalPush,
        class: Class,
        devices: &[DeviceId],
        fx: &mut Fx,
    ) {
        let Some(header) = self.header_of(&id).cloned() else {
            return;
        };
        let (devices, to): (Vec<DeviceId>, Vec<[u8; 32]>) = devices
            .iter()
            .filter_map(|d| sealed::device_x25519_public(d).map(|x| (*d, x)))
            .unzip();
        if to.is_empty() {
            return;
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
                    return;
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
