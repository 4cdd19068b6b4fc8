//! Carrying envelopes (protocol/sealed.md §4): the mailbox written and
//! flushed, what peers hold, our own envelopes pushed to every proven peer,
//! others' announced (`MailIds`) and sent to whoever asks (`MailWant`), and
//! done secrets passed on to the peers known to hold an envelope.

use super::*;
use crate::sendq::{Prio, Rank};

impl Node {
    /// Takes an envelope into the mailbox and writes it; its id if it was new.
    pub(in crate::node) fn mail_take(
        &mut self,
        now: Millis,
        bytes: Vec<u8>,
        env: Envelope,
        from: [u8; 32],
        fx: &mut Fx,
    ) -> Option<Id> {
        let id = Envelope::id_of(&bytes);
        match self.mail.mailbox.offer(now, bytes, env, from) {
            Offer::Taken { dropped } => {
                for d in dropped {
                    tracing::warn!("the mailbox is full: an older envelope was dropped");
                    fx.persist.push(StoreOp::Delete {
                        key: keys::mail(&d),
                    });
                }
                self.mail_write(&id, fx);
                Some(id)
            }
            Offer::Full => {
                tracing::warn!("the mailbox is full: an envelope was not taken");
                None
            }
            Offer::Known | Offer::Stale => None,
        }
    }

    pub(in crate::node) fn mail_write(&mut self, id: &Id, fx: &mut Fx) {
        let op = match self.mail.mailbox.record(id) {
            Some(value) => StoreOp::Put {
                key: keys::mail(id),
                value,
            },
            None => StoreOp::Delete {
                key: keys::mail(id),
            },
        };
        fx.persist.push(op);
    }

    /// The proven peers but `except`.
    pub(in crate::node) fn mail_peers(&self, except: Option<DeviceId>) -> Vec<DeviceId> {
        self.peers
            .iter()
            .filter(|(d, p)| p.member().is_some() && Some(**d) != except)
            .map(|(d, _)| *d)
            .collect()
    }

    /// Hands `ids` (envelopes we sealed) to every proven peer.
    pub(in crate::node) fn mail_forward(
        &mut self,
        ids: &[Id],
        except: Option<DeviceId>,
        fx: &mut Fx,
    ) {
        if ids.is_empty() {
            return;
        }
        for peer in self.mail_peers(except) {
            self.mail_send(peer, ids, fx);
        }
    }

    /// Tells every proven peer but `except` not known to hold them that we
    /// have `ids` (envelopes we carry): each asks for those it lacks, of
    /// one peer, so an envelope crosses each link about once.
    pub(in crate::node) fn mail_announce(
        &mut self,
        now: Millis,
        ids: &[Id],
        except: Option<DeviceId>,
        fx: &mut Fx,
    ) {
        if ids.is_empty() {
            return;
        }
        for peer in self.mail_peers(except) {
            let has = self.mail.has.get(&peer);
            let ids: Vec<Id> = ids
                .iter()
                .filter(|id| !has.is_some_and(|h| h.contains(*id)))
                .copied()
                .collect();
            self.mail.outbox.entry(peer).or_default().0.extend(ids);
        }
        self.mail_wake(now + OUTBOX_DELAY_MS, fx);
    }

    /// Sends `peer` those of `ids` it is not known to hold, in frames
    /// within the bounds, and the done secrets we know for them.
    pub(in crate::node) fn mail_send(&mut self, peer: DeviceId, ids: &[Id], fx: &mut Fx) {
        let has = self.mail.has.entry(peer).or_default();
        // Only envelopes held go in: bounded by the mailbox.
        let sent = self.mail.sent.entry(peer).or_default();
        let mut frame: Vec<Vec<u8>> = Vec::new();
        let mut len = 0;
        let mut done = Vec::new();
        for id in ids {
            let Some(h) = self.mail.mailbox.get(id) else {
                continue;
            };
            // A recipient we meet gets the changes by sync (`mail_retire`).
            if self
                .mail
                .own
                .get(id)
                .is_some_and(|o| o.slots.iter().any(|(d, _)| *d == peer))
            {
                continue;
            }
            if has.contains(id) || !sent.insert(*id) {
                continue;
            }
            if frame.len() == MAX_SEALED_PER_FRAME || len + h.bytes.len() + 8 > MAX_FRAME_LEN - 64 {
                let envelopes = std::mem::take(&mut frame);
                let prio = sealed_prio(&envelopes);
                fx.send
                    .push((peer, Frame::Sealed { envelopes }.encode(), prio));
                len = 0;
            }
            len += h.bytes.len() + 8;
            frame.push(h.bytes.clone());
            done.extend(done_entries(
                id,
                h.done
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| s.map(|s| (i as u16, s))),
            ));
        }
        if !frame.is_empty() {
            let prio = sealed_prio(&frame);
            fx.send
                .push((peer, Frame::Sealed { envelopes: frame }.encode(), prio));
        }
        send_done(peer, done, fx);
    }

    /// A peer proved membership: tell it what we hold, so that it sends
    /// what we lack.
    pub(in crate::node) fn mail_hello(&mut self, peer: DeviceId, fx: &mut Fx) {
        self.mail_met(&peer);
        // What we hold (a peer holding one we deleted lists it, and we
        // answer with its done secrets), but not our own envelopes sealed
        // to it: it gets those changes by sync.
        let ids: Vec<Id> = self
            .mail
            .mailbox
            .held_ids()
            .iter()
            .filter(|id| {
                !self
                    .mail
                    .own
                    .get(*id)
                    .is_some_and(|o| o.slots.iter().any(|(d, _)| *d == peer))
            })
            .copied()
            .collect();
        send_ids(peer, &ids, fx);
    }

    /// A peer has these envelopes: ask it for those we lack and nobody
    /// else is asked for, and tell it the done secrets we know of them.
    pub(in crate::node) fn on_mail_ids(
        &mut self,
        now: Millis,
        peer: DeviceId,
        ids: Vec<Id>,
        fx: &mut Fx,
    ) {
        let limit = self.config.mailbox.envelopes + self.config.mailbox.gone;
        let mut done = Vec::new();
        let mut want = Vec::new();
        if self.mail.wanted.len() >= limit {
            // Asks nobody answered make room (a peer listing ids it does not
            // send must not stop us asking anyone else).
            self.mail
                .wanted
                .retain(|_, (_, at)| now < *at + WANT_RETRY_MS);
        }
        for id in ids {
            // Each id once a session: a peer repeating ids gets nothing more.
            let has = self.mail.has.entry(peer).or_default();
            if has.contains(&id) {
                continue;
            }
            if has.len() < limit {
                has.insert(id);
            }
            if let Some(g) = self.mail.mailbox.gone(&id) {
                done.extend(done_entries(&id, g.secrets.iter().copied()));
            } else if let Some(h) = self.mail.mailbox.get(&id) {
                done.extend(done_entries(
                    &id,
                    h.done
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.map(|s| (i as u16, s))),
                ));
            } else {
                let asked = self
                    .mail
                    .wanted
                    .get(&id)
                    .is_some_and(|(_, at)| now < *at + WANT_RETRY_MS);
                if !asked && self.mail.wanted.len() < limit {
                    self.mail.wanted.insert(id, (peer, now));
                    want.push(id);
                }
            }
            if done.len() >= MAX_MAIL_DONE {
                break;
            }
        }
        send_done(peer, done, fx);
        for chunk in want.chunks(MAX_MAIL_IDS) {
            fx.send.push((
                peer,
                Frame::MailWant {
                    ids: chunk.to_vec(),
                }
                .encode(),
                Prio::mail(Rank::Routine),
            ));
        }
    }

    pub(in crate::node) fn on_sealed(
        &mut self,
        now: Millis,
        peer: DeviceId,
        envelopes: Vec<Vec<u8>>,
        fx: &mut Fx,
    ) {
        let mut new = Vec::new();
        for bytes in envelopes {
            let env = match Envelope::decode(&bytes) {
                Ok(env) => env,
                Err(e) => {
                    tracing::warn!(peer = %peer.short(), error = %e, "an envelope does not decode");
                    self.refuse(peer, Reason::Malformed, fx);
                    return;
                }
            };
            let id = Envelope::id_of(&bytes);
            let limit = self.config.mailbox.envelopes + self.config.mailbox.gone;
            let has = self.mail.has.entry(peer).or_default();
            if has.len() < limit {
                has.insert(id);
            }
            self.mail.wanted.remove(&id);
            if let Some(id) = self.mail_take(now, bytes, env, peer.0, fx) {
                new.push(id);
            }
        }
        self.mail_announce(now, &new, Some(peer), fx);
        for id in new {
            self.mail_open(now, id, fx);
        }
        // Unlike a peer's changes, an envelope is flushed: the device that
        // handed it over may never be met again.
    }

    pub(in crate::node) fn on_mail_done(
        &mut self,
        now: Millis,
        peer: DeviceId,
        done: Vec<MailDoneEntry>,
        fx: &mut Fx,
    ) {
        let mut news = Vec::new();
        for d in done {
            // Who handed it to us, before a complete set deletes it.
            let from = self.mail.mailbox.get(&d.id).map(|h| h.from);
            match self.mail.mailbox.done(&d.id, d.slot, d.secret) {
                Done::Bad => {
                    tracing::warn!(peer = %peer.short(), "a done secret that does not open its slot");
                    self.refuse(peer, Reason::ProtocolViolation, fx);
                    return;
                }
                Done::Nothing => {}
                Done::Progress | Done::Complete => {
                    self.mail_write(&d.id, fx);
                    news.push((d, from));
                }
            }
        }
        // On along the envelope's own tree: to the peer that handed it to
        // us and those we handed it to this session, so that a secret
        // crosses each holder once, not every pair of holders. The others
        // learn the secrets when they next list it (`on_mail_ids`).
        for p in self.mail_peers(Some(peer)) {
            let sent = self.mail.sent.get(&p);
            let to: Vec<MailDoneEntry> = news
                .iter()
                .filter(|(d, from)| *from == Some(p.0) || sent.is_some_and(|s| s.contains(&d.id)))
                .map(|(d, _)| d.clone())
                .collect();
            self.mail_post_done(now, &[p], &to, fx);
        }
    }
}

pub(in crate::node) fn done_entries(
    id: &Id,
    secrets: impl Iterator<Item = (u16, [u8; 32])>,
) -> Vec<MailDoneEntry> {
    secrets
        .map(|(slot, secret)| MailDoneEntry {
            id: *id,
            slot,
            secret,
        })
        .collect()
}

/// `MailIds` for `ids`, in frames within the bound.
pub(in crate::node) fn send_ids(peer: DeviceId, ids: &[Id], fx: &mut Fx) {
    for chunk in ids.chunks(MAX_MAIL_IDS) {
        let frame = Frame::MailIds {
            ids: chunk.to_vec(),
        };
        fx.send
            .push((peer, frame.encode(), Prio::mail(Rank::Routine)));
    }
}

pub(in crate::node) fn send_done(peer: DeviceId, done: Vec<MailDoneEntry>, fx: &mut Fx) {
    for chunk in done.chunks(MAX_MAIL_DONE) {
        fx.send.push((
            peer,
            Frame::MailDone {
                done: chunk.to_vec(),
            }
            .encode(),
            Prio::mail(Rank::Routine),
        ));
    }
}

/// A `Sealed` frame goes in the mail lane at the rank of its highest class
/// (carriers hand STAT and urgent envelopes on first, sealed.md §4).
pub(in crate::node) fn sealed_prio(envelopes: &[Vec<u8>]) -> Prio {
    let class = envelopes
        .iter()
        .filter_map(|e| e.get(1).and_then(|&c| Class::from_code(c).ok()))
        .max()
        .unwrap_or(Class::Routine);
    Prio::mail(rank_of(class))
}

/// The send rank of a change of `class`.
pub(in crate::node) fn rank_of(class: Class) -> Rank {
    match class {
        Class::Routine => Rank::Routine,
        Class::Urgent => Rank::Urgent,
        Class::Stat => Rank::Stat,
    }
}
