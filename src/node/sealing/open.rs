//! Opening envelopes sealed to us (protocol/sealed.md §2.2): the checks on
//! the sealer and the header, the changes applied from a fresh sync state,
//! the done secret shown once every change is held, and what is retried
//! at start; expiry, and the sealer's showing of secrets for recipients it
//! met directly.

use automerge::ChangeHash;

use super::super::contain::guarded;
use super::*;

/// Why an opened envelope's contents are not taken.
pub(in crate::node) enum Refusal {
    /// Sealed by a device our directory does not hold (yet).
    Unknown,
    /// For good: the sealer or header does not qualify, or the contents
    /// broke the rules.
    Final(String),
}

impl From<&str> for Refusal {
    fn from(s: &str) -> Refusal {
        Refusal::Final(s.to_owned())
    }
}

impl From<String> for Refusal {
    fn from(s: String) -> Refusal {
        Refusal::Final(s)
    }
}

impl Node {
    /// Envelopes sealed by devices our directory lacked, tried again now
    /// that it grew.
    pub(in crate::node) fn mail_retry_unknown(&mut self, now: Millis, fx: &mut Fx) {
        for id in std::mem::take(&mut self.mail.unknown) {
            self.mail_open(now, id, fx);
        }
    }

    /// Opens envelope `id` if it is sealed to us, and takes its changes.
    pub(in crate::node) fn mail_open(&mut self, now: Millis, id: Id, fx: &mut Fx) {
        let Some(h) = self.mail.mailbox.get(&id) else {
            return;
        };
        if h.settled.is_some() {
            return;
        }
        let alone = h.head.dones.len() == 1;
        // Decoded when it was taken: it decodes again.
        let opened = Envelope::decode(&h.bytes)
            .ok()
            .and_then(|env| env.open(&self.mail.x_secret));
        let Some(o) = opened else {
            if let Some(h) = self.mail.mailbox.get_mut(&id) {
                h.settled = Some(false);
            }
            self.mail_write(&id, fx);
            return;
        };
        let conv = o.body.conversation;
        match self.mail_apply(now, &o, fx) {
            Err(Refusal::Unknown) => {
                // Its sealer may be in a team document we have not seen yet:
                // tried again when the directory grows.
                self.mail.unknown.insert(id);
            }
            Err(Refusal::Final(why)) => {
                tracing::warn!(conversation = %conv, "an envelope sealed to us is refused: {why}");
                self.mail.refused += 1;
                if let Some(h) = self.mail.mailbox.get_mut(&id) {
                    h.settled = Some(false);
                }
                self.mail_write(&id, fx);
            }
            Ok(changes) => {
                if changes.is_empty() && alone {
                    // A request for what the sealer lacks (`repair.rs`),
                    // or a new conversation's announcement.
                    if let Some(asker) = self.mail_sender(&o.sender) {
                        self.repair_answer(now, conv, asker, &o.body.sync, fx);
                    }
                }
                self.mail
                    .waiting
                    .entry(conv)
                    .or_default()
                    .insert(id, (o.slot as u16, o.done_secret, changes));
                self.mail_settle(now, &conv, fx);
            }
        }
    }

    /// Shows the done secret of every opened envelope of `conv` whose
    /// changes the document now holds.
    pub(in crate::node) fn mail_settle(&mut self, now: Millis, conv: &ConversationId, fx: &mut Fx) {
        let Some(waiting) = self.mail.waiting.get(conv) else {
            return;
        };
        let Some(replica) = self.replica_of(&conv.0) else {
            return;
        };
        let ready: Vec<(Id, u16, [u8; 32])> = waiting
            .iter()
            .filter(|(_, (_, _, changes))| replica.has_all(changes))
            .map(|(id, (slot, secret, _))| (*id, *slot, *secret))
            .collect();
        if let Some(w) = self.mail.waiting.get_mut(conv) {
            for (id, _, _) in &ready {
                w.remove(id);
            }
            if w.is_empty() {
                self.mail.waiting.remove(conv);
            }
        }
        let mut done = Vec::new();
        for (id, slot, secret) in ready {
            if let Some(h) = self.mail.mailbox.get_mut(&id) {
                h.settled = Some(true);
            }
            self.mail.mailbox.done(&id, slot, secret);
            self.mail_write(&id, fx);
            done.push(MailDoneEntry { id, slot, secret });
        }
        if done.is_empty() {
            return;
        }
        let peers = self.mail_peers(None);
        self.mail_post_done(now, &peers, &done, fx);
    }

    /// Takes an opened envelope's changes; the changes it carried.
    pub(in crate::node) fn mail_apply(
        &mut self,
        now: Millis,
        o: &Opened,
        fx: &mut Fx,
    ) -> Result<Vec<ChangeHash>, Refusal> {
        let sender = self.mail_sender(&o.sender).ok_or(Refusal::Unknown)?;
        let m = self.membership.as_ref().ok_or("we are not a member")?;
        let cert = m
            .team
            .directory
            .get(&sender)
            .cloned()
            .ok_or(Refusal::Unknown)?;
        if m.team.revoked.is_revoked(&cert.device, &cert.member) {
            return Err("sealed by a revoked device".into());
        }
        if cert.expires <= now {
            return Err("sealed by a device whose certificate expired".into());
        }
        let header = ConversationHeader::decode(&o.body.header).map_err(|e| e.to_string())?;
        let id = o.body.conversation;
        if header.id != id {
            return Err("it carries another conversation's header".into());
        }
        if !header.admits(&cert) || !header.admits(&m.cert) {
            return Err("its sealer or we are not members of the conversation".into());
        }
        if self.damaged.contains_key(&id) {
            return Err("our stored copy of the conversation is damaged".into());
        }
        if !self.convs.contains_key(&id) {
            let title = header.title();
            if !self.add_conversation(header, fx) {
                return Err("the conversation could not be added".into());
            }
            fx.emit.push(Event::ConversationAdded {
                conversation: id,
                title,
            });
        }
        // Automerge parses the changes here: under containment too.
        let changes = match guarded(|| crate::replica::sync_change_hashes(&o.body.sync)) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(e.to_string().into()),
            Err(why) => {
                self.contained_panics += 1;
                return Err(format!("a library panicked on it ({why})").into());
            }
        };
        if self.reloading(&id.0) {
            return Ok(changes);
        }
        let append_only = self.config.append_only;
        let c = self
            .conversation_mut(&id)
            .ok_or("the conversation is not readable")?;
        let before = c.replica().heads_digest();
        c.replica_mut().check_rules(append_only);
        let mut state = automerge::sync::State::new();
        let result = guarded(|| c.receive_sync(&mut state, &o.body.sync));
        let applied = match result {
            Err(why) => {
                self.contained_panics += 1;
                self.contain(id.0, sender, Reason::Malformed, fx);
                return Err(format!("a library panicked on it ({why})").into());
            }
            Ok(Err(crate::replica::ReplicaError::Tainted(breach))) => {
                self.contain(id.0, sender, Reason::ProtocolViolation, fx);
                return Err(breach.to_string().into());
            }
            Ok(Err(e)) => return Err(e.to_string().into()),
            Ok(Ok(a)) => a,
        };
        self.persist_conv(&id, fx);
        self.emit_applied(now, id, &applied, fx);
        if self.replica_of(&id.0).map(|r| r.heads_digest()) != Some(before) {
            self.schedule_announce(now, id.0, fx);
        }
        Ok(changes)
    }

    /// The directory's device whose X25519 key is `x`.
    pub(in crate::node) fn mail_sender(&mut self, x: &[u8; 32]) -> Option<DeviceId> {
        let n = self.directory().count();
        if n != self.mail.x_index_of
            || !self.mail.x_index.contains_key(x) && n != self.mail.x_index.len()
        {
            let index: BTreeMap<[u8; 32], DeviceId> = self
                .directory()
                .filter_map(|c| sealed::device_x25519_public(&c.device).map(|x| (x, c.device)))
                .collect();
            self.mail.x_index = index;
            self.mail.x_index_of = n;
        }
        self.mail.x_index.get(x).copied()
    }

    /// At start: records that did not read go, expired envelopes go, and
    /// every envelope not yet settled is tried with our key (a crash may
    /// have lost the changes it carried that were waiting for others).
    pub(in crate::node) fn mail_start(&mut self, now: Millis, fx: &mut Fx) {
        for id in std::mem::take(&mut self.mail.broken) {
            fx.persist.push(StoreOp::Delete {
                key: keys::mail(&id),
            });
        }
        self.mail_expire(now, fx);
        // Changes written before a crash and never sealed.
        self.defer_queued(now, fx);
        // Tried again, not answered again (`repair.rs`).
        self.mail.starting = true;
        let ids = self.mail.mailbox.held_ids();
        for id in ids {
            if self
                .mail
                .mailbox
                .get(&id)
                .is_some_and(|h| h.settled != Some(false))
            {
                if let Some(h) = self.mail.mailbox.get_mut(&id) {
                    h.settled = None;
                }
                self.mail_open(now, id, fx);
            }
        }
        self.mail.starting = false;
    }

    pub(in crate::node) fn mail_expire(&mut self, now: Millis, fx: &mut Fx) {
        for id in self.mail.mailbox.expire(now) {
            fx.persist.push(StoreOp::Delete {
                key: keys::mail(&id),
            });
        }
        let mailbox = &self.mail.mailbox;
        self.mail.unknown.retain(|id| mailbox.get(id).is_some());
        // An envelope the mailbox no longer holds (expired, or dropped for
        // room) is not shown done: what waited of it goes too.
        self.mail.waiting.retain(|_, w| {
            w.retain(|id, _| mailbox.get(id).is_some());
            !w.is_empty()
        });
        for sent in self.mail.sent.values_mut() {
            sent.retain(|id| mailbox.get(id).is_some());
        }
        self.mail_retire(now, fx);
        self.repair_ask(now, fx);
    }

    /// Shows, for the recipients of our own envelopes that we met, the
    /// done secret of their slot once their sync state shows they hold
    /// the changes: they got them from us, not from the envelope.
    pub(in crate::node) fn mail_retire(&mut self, now: Millis, fx: &mut Fx) {
        let mailbox = &self.mail.mailbox;
        self.mail.own.retain(|id, _| mailbox.get(id).is_some());
        let mut done = Vec::new();
        for (id, own) in &self.mail.own {
            let Some(replica) = self
                .convs
                .get(&own.conversation)
                .and_then(crate::node::docs::Slot::if_loaded)
                .map(|c| c.replica())
            else {
                continue;
            };
            let Some(h) = self.mail.mailbox.get(id) else {
                continue;
            };
            for (slot, (device, secret)) in own.slots.iter().enumerate() {
                if h.done.get(slot).is_some_and(Option::is_some) {
                    continue;
                }
                let shared = self
                    .peers
                    .get(device)
                    .and_then(|p| p.sync.get(&own.conversation.0))
                    .map(|st| st.shared_heads.clone());
                if shared.is_some_and(|heads| replica.covers(&heads, &own.changes)) {
                    done.push(MailDoneEntry {
                        id: *id,
                        slot: slot as u16,
                        secret: *secret,
                    });
                }
            }
        }
        if done.is_empty() {
            return;
        }
        for d in &done {
            self.mail.mailbox.done(&d.id, d.slot, d.secret);
            self.mail_write(&d.id, fx);
        }
        let peers = self.mail_peers(None);
        self.mail_post_done(now, &peers, &done, fx);
    }
}
