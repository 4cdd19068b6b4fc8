//! Repair over envelopes (protocol/sealed.md §3.1): a recipient whose
//! opened envelopes have waited a while for changes that never came (the
//! creator that would have sealed it the history was revoked or is gone; an
//! author restarted between writing and learning of it) asks one member
//! device at a time for what it lacks, with an envelope that carries its
//! heads and no change; a member that opens such an envelope seals back
//! every author's changes after those heads.
//!
//! Bounds: requests for a conversation `REPAIR_EVERY_MS` apart, and twice
//! as far each time one brought nothing, each to the next member device
//! in turn, the earlier one withdrawn (done) when the next is sealed or
//! nothing waits any more; an answer only to an envelope sealed to us
//! alone that names changes it needs, one per conversation and asker per
//! `REPAIR_EVERY_MS`, and one envelope's worth of changes (a request
//! costs a few hundred bytes: a member must not make us seal a history
//! again and again, or to many at once).

use super::*;

/// How long an opened envelope waits before its recipient asks.
const REPAIR_AFTER_MS: Millis = 120_000;
/// How often one asker is answered for a conversation, and the least time
/// between two requests for it; while a request brings nothing, the next
/// waits twice as long each time, up to `2^REPAIR_BACKOFF_MAX` times as
/// long (about 21 hours).
const REPAIR_EVERY_MS: Millis = 300_000;
const REPAIR_BACKOFF_MAX: u32 = 8;
/// The changes one request names (Automerge's `need`).
const REPAIR_NEED_MAX: usize = 64;

/// Per conversation with opened envelopes waiting: since when, when we
/// last asked, how many times, and our latest request (done when the
/// next replaces it, so that carriers hold one per conversation).
#[derive(Clone, Default)]
pub(super) struct Repair {
    asks: BTreeMap<ConversationId, Asking>,
    /// (conversation, asker) → when we last answered.
    answered: BTreeMap<(ConversationId, DeviceId), Millis>,
}

#[derive(Clone)]
struct Asking {
    since: Millis,
    last: Option<Millis>,
    /// Requests sealed: whom the next goes to, in turn.
    asked: usize,
    /// Requests in a row that brought nothing.
    idle: u32,
    /// Our heads when we last asked.
    heads: [u8; 16],
    request: Option<Id>,
}

impl Asking {
    fn due(&self, now: Millis, heads: [u8; 16]) -> bool {
        match self.last {
            None => now.saturating_sub(self.since) >= REPAIR_AFTER_MS,
            Some(last) => {
                let idle = if heads == self.heads { self.idle } else { 0 };
                let wait = REPAIR_EVERY_MS << idle.min(REPAIR_BACKOFF_MAX);
                now.saturating_sub(last) >= wait
            }
        }
    }
}

impl Node {
    /// `Timer::Maintenance`: asks for what envelopes that waited long
    /// enough still wait for.
    pub(super) fn repair_ask(&mut self, now: Millis, fx: &mut Fx) {
        let waiting: BTreeSet<ConversationId> = self.mail.waiting.keys().copied().collect();
        self.mail
            .repair
            .answered
            .retain(|_, at| now.saturating_sub(*at) < REPAIR_EVERY_MS);
        // Nothing waits any more: the last request goes too.
        let ended: Vec<Option<Id>> = {
            let asks = &mut self.mail.repair.asks;
            let ended = asks
                .iter()
                .filter(|(c, _)| !waiting.contains(c))
                .map(|(_, a)| a.request)
                .collect();
            asks.retain(|c, _| waiting.contains(c));
            ended
        };
        for old in ended.into_iter().flatten() {
            self.repair_withdraw(now, old, fx);
        }
        for id in waiting {
            let Some(replica) = self.replica_of(&id.0) else {
                continue;
            };
            let (heads, digest) = (replica.heads(), replica.heads_digest());
            let need = replica.missing_deps(REPAIR_NEED_MAX);
            let asking = self.mail.repair.asks.entry(id).or_insert(Asking {
                since: now,
                last: None,
                asked: 0,
                idle: 0,
                heads: digest,
                request: None,
            });
            if need.is_empty() || !asking.due(now, digest) {
                continue;
            }
            let idle = if asking.last.is_some() && asking.heads == digest {
                asking.idle.saturating_add(1)
            } else {
                0
            };
            let (asked, old) = (asking.asked, asking.request);
            let Some(header) = self.header_of(&id).cloned() else {
                continue;
            };
            // A member device connected to us that had them would have
            // brought them by sync by now: ask one out of reach.
            let mut members: Vec<DeviceId> = self
                .directory()
                .filter(|c| header.admits(c) && self.out_of_reach(now, c))
                .map(|c| c.device)
                .collect();
            members.sort();
            let Some(&to) = members.get(asked % members.len().max(1)) else {
                continue;
            };
            if let Some(old) = old {
                self.repair_withdraw(now, old, fx);
            }
            let push = LocalPush::request(heads, need);
            let request = self
                .seal_for(now, id, &push, Class::Routine, &[to], fx)
                .first()
                .copied();
            if let Some(a) = self.mail.repair.asks.get_mut(&id) {
                *a = Asking {
                    since: a.since,
                    last: Some(now),
                    asked: asked.wrapping_add(1),
                    idle,
                    heads: digest,
                    request,
                };
            }
        }
    }

    /// Marks our earlier request `id` done, for us and every carrier: the
    /// next one replaces it.
    fn repair_withdraw(&mut self, now: Millis, id: Id, fx: &mut Fx) {
        let Some(own) = self.mail.own.get(&id) else {
            return;
        };
        let done: Vec<MailDoneEntry> = own
            .slots
            .iter()
            .enumerate()
            .map(|(slot, (_, secret))| MailDoneEntry {
                id,
                slot: slot as u16,
                secret: *secret,
            })
            .collect();
        for d in &done {
            self.mail.mailbox.done(&d.id, d.slot, d.secret);
        }
        self.mail_write(&id, fx);
        let peers = self.mail_peers(None);
        self.mail_post_done(now, &peers, &done, fx);
    }

    /// An opened envelope with no change, sealed to us alone: if its sync
    /// message names changes it needs (a request, not a new conversation's
    /// announcement) and we hold any, seals its sealer `asker` our changes
    /// after the heads it showed that we hold too, oldest first, at most
    /// one envelope's worth: it asks again for the rest.
    pub(super) fn repair_answer(
        &mut self,
        now: Millis,
        id: ConversationId,
        asker: DeviceId,
        sync: &[u8],
        fx: &mut Fx,
    ) {
        if self.mail.starting
            || asker == self.device
            || self
                .mail
                .repair
                .answered
                .get(&(id, asker))
                .is_some_and(|at| now.saturating_sub(*at) < REPAIR_EVERY_MS)
        {
            return;
        }
        // A device connected to us gets what it lacks by sync.
        if !self
            .directory()
            .find(|c| c.device == asker)
            .is_some_and(|c| self.out_of_reach(now, c))
        {
            return;
        }
        // Bytes `mail_apply` took already, under the same containment.
        let Ok(Ok((heads, need))) = crate::node::contain::guarded(|| {
            automerge::sync::Message::decode(sync).map(|m| (m.heads, m.need))
        }) else {
            return;
        };
        let Some(replica) = self.replica_of(&id.0) else {
            return;
        };
        if !need.iter().any(|h| replica.has_all(&[*h])) {
            return;
        }
        // Its heads that we hold too: the changes after them, ours and
        // not ours, are what it may lack.
        let known: Vec<ChangeHash> = heads
            .into_iter()
            .filter(|h| replica.has_all(&[*h]))
            .collect();
        let mut len = 0;
        let changes: Vec<automerge::Change> = replica
            .changes_since(&known)
            .into_iter()
            .take_while(|c| {
                len += c.raw_bytes().len();
                len <= HISTORY_BODY || len == c.raw_bytes().len()
            })
            .collect();
        let ours = replica.heads();
        self.mail.repair.answered.insert((id, asker), now);
        self.seal_changes(now, id, changes, &ours, Class::Routine, &[asker], fx);
    }
}
