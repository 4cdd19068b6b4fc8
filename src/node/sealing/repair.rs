//! Repair over envelopes (protocol/sealed.md §3.1): a recipient whose
//! opened envelopes have waited a while for changes that never came (the
//! creator that would have sealed it the history was revoked or is gone; an
//! author restarted between writing and learning of it) asks one member
//! device at a time for what it lacks, with an envelope that carries its
//! heads and no change; a member that opens such an envelope seals back
//! every author's changes after those heads.
//!
//! Bounds: requests for a conversation `REPAIR_EVERY_MS` apart and then
//! twice as far each time, each to the next member device in turn, the
//! earlier one withdrawn (done) when the next is sealed; one answer per
//! conversation and asker per `REPAIR_EVERY_MS` (a request costs a few
//! hundred bytes, an answer a history: a member must not make us seal it
//! again and again).

use super::*;

/// How long an opened envelope waits before its recipient asks.
const REPAIR_AFTER_MS: Millis = 120_000;
/// How often one asker is answered for a conversation, and the least time
/// between two requests for it; later requests wait twice as long each
/// time, up to `2^REPAIR_BACKOFF_MAX` times as long (about 21 hours).
const REPAIR_EVERY_MS: Millis = 300_000;
const REPAIR_BACKOFF_MAX: u32 = 8;

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
    asked: u32,
    request: Option<Id>,
}

impl Asking {
    fn due(&self, now: Millis) -> bool {
        match self.last {
            None => now.saturating_sub(self.since) >= REPAIR_AFTER_MS,
            Some(last) => {
                let wait = REPAIR_EVERY_MS << self.asked.saturating_sub(1).min(REPAIR_BACKOFF_MAX);
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
        let r = &mut self.mail.repair;
        r.asks.retain(|c, _| waiting.contains(c));
        r.answered
            .retain(|_, at| now.saturating_sub(*at) < REPAIR_EVERY_MS);
        for id in waiting {
            let asking = self.mail.repair.asks.entry(id).or_insert(Asking {
                since: now,
                last: None,
                asked: 0,
                request: None,
            });
            if !asking.due(now) {
                continue;
            }
            let (asked, old) = (asking.asked, asking.request);
            let Some(header) = self.header_of(&id).cloned() else {
                continue;
            };
            // A member device connected to us brings it by sync.
            let connected = self.directory().any(|c| {
                header.admits(c)
                    && c.device != self.device
                    && self
                        .peers
                        .get(&c.device)
                        .is_some_and(|p| p.member().is_some())
            });
            if connected {
                continue;
            }
            let mut members: Vec<DeviceId> = self
                .directory()
                .filter(|c| header.admits(c))
                .filter(|c| self.out_of_reach(now, c))
                .map(|c| c.device)
                .collect();
            members.sort();
            let Some(replica) = self.replica_of(&id.0) else {
                continue;
            };
            let Some(&to) = members.get(asked as usize % members.len().max(1)) else {
                continue;
            };
            let push = LocalPush::heads_only(replica.heads());
            if let Some(old) = old {
                self.repair_withdraw(now, old, fx);
            }
            let request = self
                .seal_for(now, id, &push, Class::Routine, &[to], fx)
                .first()
                .copied();
            if let Some(a) = self.mail.repair.asks.get_mut(&id) {
                a.last = Some(now);
                a.asked = asked.saturating_add(1);
                a.request = request;
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

    /// An opened envelope that carried no change: a request (or a new
    /// conversation's announcement). Seals its sealer, `asker`, every
    /// author's changes after the heads it showed, if we hold any.
    pub(super) fn repair_answer(
        &mut self,
        now: Millis,
        id: ConversationId,
        asker: DeviceId,
        sync: &[u8],
        fx: &mut Fx,
    ) {
        if asker == self.device
            || self
                .mail
                .repair
                .answered
                .get(&(id, asker))
                .is_some_and(|at| now.saturating_sub(*at) < REPAIR_EVERY_MS)
        {
            return;
        }
        // Bytes `mail_apply` took already, under the same containment.
        let heads = match crate::node::contain::guarded(|| {
            automerge::sync::Message::decode(sync).map(|m| m.heads)
        }) {
            Ok(Ok(heads)) => heads,
            _ => return,
        };
        let Some(replica) = self.replica_of(&id.0) else {
            return;
        };
        if replica.changes_since(&heads).is_empty() {
            return;
        }
        self.mail.repair.answered.insert((id, asker), now);
        let owed = defer::Owed {
            since: heads,
            all: true,
            announce: false,
            class: Class::Routine,
            due: now,
        };
        self.defer_for(now, id, asker, owed, fx);
        self.seal_behind(now, fx);
    }
}
