//! What member devices out of reach are owed (protocol/sealed.md §3), and
//! when it is sealed. Every change we write while a member device is not
//! connected to us is *owed* to it: our changes after the heads it last
//! showed us, or after those before the change. An owed entry is sealed
//! when it falls due — at once for urgent and STAT, within 3 s for a
//! routine change (with what else we write meanwhile) — and a routine
//! change never before the device's grace period ends: a member
//! device that left us a moment ago (a restart, a roaming laptop, a blip
//! of the Wi-Fi) is most likely back soon, and sync then brings it
//! everything, so an envelope for it would cost every team device a copy
//! for nothing.
//!
//! Owing is computed from heads, not remembered change by change: a
//! device that leaves is owed every change of ours its sync state does not
//! show it holds, however long ago we pushed it (a push lost with the link
//! is caught up too). Only our own changes (this session's actor): every
//! author seals its own, so N members do not each seal the same. What is
//! owed is kept durably in `mailq/`: after a restart, every change after
//! the recorded heads is owed to the member devices still away when the
//! grace (counted from the start) ends.

use super::*;

/// What member devices are owed, and since when they are away.
#[derive(Clone, Default)]
pub(crate) struct Behind {
    /// (conversation, device) → what it is owed.
    owed: BTreeMap<(ConversationId, DeviceId), Owed>,
    /// When each device left us; one not here is away since `started`.
    gone: BTreeMap<DeviceId, Millis>,
    started: Millis,
    /// The heads recorded in `mailq/<conversation>`: every change after
    /// them is owed to someone or waits to be sealed.
    queued: BTreeMap<ConversationId, Vec<ChangeHash>>,
    /// Our latest urgent and STAT changes (at most [`PRESSING_MAX`]), and
    /// when we wrote them: one written within [`PRESSING_MS`] before a
    /// device leaves without it (its push lost with the link) is owed to
    /// it at once, not after the grace period.
    pressing: VecDeque<(ChangeHash, Class, Millis)>,
}

/// How many of our urgent and STAT changes `Behind::pressing` remembers.
const PRESSING_MAX: usize = 256;
/// How long before a link goes an urgent push may have been lost with it:
/// a write to a peer must finish within 30 s (the shell's `WRITE_TIMEOUT`).
/// An older one the device never showed it holds (a peer that only reads
/// a push states no heads back) is caught up when its grace ends.
const PRESSING_MS: Millis = 30_000;

#[derive(Clone)]
pub(super) struct Owed {
    /// The changes after these heads.
    pub(super) since: Vec<ChangeHash>,
    /// Every author's, not only ours (restored after a restart: our
    /// earlier sessions' actors are not ours now; a history).
    pub(super) all: bool,
    /// Sealed even with no change: the conversation's header is news.
    pub(super) announce: bool,
    pub(super) class: Class,
    /// When it is sealed if the device is still away.
    pub(super) due: Millis,
}

impl Behind {
    pub(super) fn start(&mut self, now: Millis) {
        self.started = now;
    }

    /// Notes our changes written in `class` at `now`.
    pub(super) fn note_class(&mut self, now: Millis, changes: &[automerge::Change], class: Class) {
        if class == Class::Routine {
            return;
        }
        for c in changes {
            if self.pressing.len() == PRESSING_MAX {
                self.pressing.pop_front();
            }
            self.pressing.push_back((c.hash(), class, now));
        }
    }

    /// The class of the most pressing of `changes` written within
    /// `PRESSING_MS` before `now`.
    fn class_of(&self, now: Millis, changes: &BTreeSet<ChangeHash>) -> Class {
        self.pressing
            .iter()
            .filter(|(h, _, at)| now.saturating_sub(*at) <= PRESSING_MS && changes.contains(h))
            .map(|(_, c, _)| *c)
            .max()
            .unwrap_or(Class::Routine)
    }
}

impl Node {
    /// When `device`'s grace period ends: `seal_grace_ms` after it left us
    /// (or we started).
    pub(super) fn grace_end(&self, device: &DeviceId) -> Millis {
        let b = &self.mail.behind;
        b.gone.get(device).copied().unwrap_or(b.started) + self.config.seal_grace_ms
    }

    /// Notes that `device` is owed `owed`; an earlier note's heads are
    /// older, so they stay, and the sooner due and higher class win.
    pub(super) fn defer_for(
        &mut self,
        now: Millis,
        id: ConversationId,
        device: DeviceId,
        owed: Owed,
        fx: &mut Fx,
    ) {
        self.queue_note(id, &owed.since, fx);
        self.defer_volatile(now, id, device, owed, fx);
    }

    /// [`Node::defer_for`] without the durable record.
    pub(super) fn defer_volatile(
        &mut self,
        now: Millis,
        id: ConversationId,
        device: DeviceId,
        owed: Owed,
        fx: &mut Fx,
    ) {
        let due = owed.due;
        self.mail
            .behind
            .owed
            .entry((id, device))
            .and_modify(|o| {
                o.all |= owed.all;
                o.announce |= owed.announce;
                o.class = o.class.max(owed.class);
                o.due = o.due.min(owed.due);
            })
            .or_insert(owed);
        self.mail_wake(due.max(now), fx);
    }

    /// A member device left us: what it was not shown to hold of our
    /// changes is owed to it.
    pub(in crate::node) fn mail_left(
        &mut self,
        now: Millis,
        device: DeviceId,
        peer: &super::super::peer::Peer,
        fx: &mut Fx,
    ) {
        let Some(cert) = peer.member().cloned() else {
            return;
        };
        self.mail.behind.gone.insert(device, now);
        // What it was owed before it came back: kept while it was here, and
        // settled only if its sync state now shows it holds all of it.
        let paused: Vec<ConversationId> = self
            .mail
            .behind
            .owed
            .keys()
            .filter(|(_, d)| *d == device)
            .map(|(c, _)| *c)
            .collect();
        for id in paused {
            let covered = match (self.replica_of(&id.0), peer.sync.get(&id.0)) {
                (Some(replica), Some(state)) => {
                    let o = &self.mail.behind.owed[&(id, device)];
                    let owed: Vec<ChangeHash> = replica
                        .changes_since(&o.since)
                        .iter()
                        .filter(|c| o.all || c.actor_id() == &self.actor)
                        .map(automerge::Change::hash)
                        .collect();
                    !o.announce && replica.covers(&state.shared_heads, &owed)
                }
                _ => false,
            };
            if covered {
                self.mail.behind.owed.remove(&(id, device));
                self.queue_settled(&id, fx);
            } else if let Some(o) = self.mail.behind.owed.get_mut(&(id, device)) {
                o.due = match o.class {
                    Class::Routine => now + self.config.seal_grace_ms,
                    _ => now,
                };
                let due = o.due;
                self.mail_wake(due, fx);
            }
        }
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
            let ours: BTreeSet<ChangeHash> = replica
                .changes_since(&state.shared_heads)
                .iter()
                .filter(|c| c.actor_id() == &self.actor)
                .map(automerge::Change::hash)
                .collect();
            if !ours.is_empty() {
                // An urgent change it left without, just written (a push
                // lost with the link), is sealed at once; the rest waits
                // for the grace.
                let class = self.mail.behind.class_of(now, &ours);
                let owed = Owed {
                    since: state.shared_heads.clone(),
                    all: false,
                    announce: false,
                    class,
                    due: match class {
                        Class::Routine => now + self.config.seal_grace_ms,
                        _ => now,
                    },
                };
                self.defer_for(now, id, device, owed, fx);
            }
        }
    }

    /// A member device is back: sync brings it what it is owed, so nothing
    /// of it falls due while it is here; kept until it leaves, when its
    /// sync state shows what it still lacks (`mail_left`).
    pub(in crate::node) fn mail_met(&mut self, device: &DeviceId) {
        self.mail.behind.gone.remove(device);
        for ((_, d), o) in self.mail.behind.owed.iter_mut() {
            if d == device {
                o.due = Millis::MAX;
            }
        }
    }

    /// At start: conversations whose changes were not all sealed when we
    /// stopped are owed to every member device, sealed to those still
    /// away when the grace ends.
    pub(super) fn defer_queued(&mut self, now: Millis, fx: &mut Fx) {
        self.mail.behind.start(now);
        for (doc, before) in std::mem::take(&mut self.mail.queued) {
            let id = ConversationId(doc);
            let before: Vec<ChangeHash> = before
                .chunks_exact(32)
                .map(|h| ChangeHash(h.try_into().expect("32 bytes")))
                .collect();
            self.mail.behind.queued.insert(id, before.clone());
            let devices: Vec<DeviceId> = match self.header_of(&id) {
                Some(header) => self
                    .directory()
                    .filter(|cert| header.admits(cert) && self.out_of_reach(now, cert))
                    .map(|cert| cert.device)
                    .collect(),
                None => Vec::new(),
            };
            for d in devices {
                let owed = Owed {
                    since: before.clone(),
                    all: true,
                    announce: false,
                    class: Class::Routine,
                    due: self.grace_end(&d),
                };
                self.defer_for(now, id, d, owed, fx);
            }
            self.queue_settled(&id, fx);
        }
    }

    /// Seals what is owed to devices whose grace ended and are still away.
    pub(super) fn seal_behind(&mut self, now: Millis, fx: &mut Fx) {
        let due: Vec<(ConversationId, DeviceId)> = self
            .mail
            .behind
            .owed
            .iter()
            .filter(|(_, o)| o.due <= now)
            .map(|(k, _)| *k)
            .collect();
        let mut convs: BTreeMap<ConversationId, Vec<(DeviceId, Owed)>> = BTreeMap::new();
        for key in due {
            if let Some(owed) = self.mail.behind.owed.remove(&key) {
                convs.entry(key.0).or_default().push((key.1, owed));
            }
        }
        for (id, owed) in convs {
            let Some(replica) = self.replica_of(&id.0) else {
                if self.reloading(&id.0) {
                    // Being read back after a contained panic: sealed once it is.
                    for (d, mut o) in owed {
                        o.due = now + SEAL_DELAY_MS;
                        self.mail.behind.owed.insert((id, d), o);
                    }
                    self.mail_wake(now + SEAL_DELAY_MS, fx);
                } else {
                    // Gone or unreadable for good: nothing to seal.
                    self.queue_settled(&id, fx);
                }
                continue;
            };
            let heads = replica.heads();
            // One envelope for the devices owed the same changes.
            let mut groups: BTreeMap<Vec<ChangeHash>, Group> = BTreeMap::new();
            for (d, o) in owed {
                let away = self
                    .directory()
                    .find(|c| c.device == d)
                    .is_some_and(|cert| self.out_of_reach(now, cert));
                if !away {
                    continue;
                }
                let changes: Vec<automerge::Change> = replica
                    .changes_since(&o.since)
                    .into_iter()
                    .filter(|c| o.all || c.actor_id() == &self.actor)
                    .collect();
                if changes.is_empty() && !o.announce {
                    continue;
                }
                let key = changes.iter().map(automerge::Change::hash).collect();
                let g = groups.entry(key).or_insert_with(|| Group {
                    changes,
                    devices: Vec::new(),
                    class: o.class,
                });
                g.devices.push(d);
                g.class = g.class.max(o.class);
            }
            for (_, g) in groups {
                self.seal_changes(now, id, g.changes, &heads, g.class, &g.devices, fx);
            }
            self.queue_settled(&id, fx);
        }
        // Not for what devices here are owed (`mail_met`).
        let next = self
            .mail
            .behind
            .owed
            .values()
            .map(|o| o.due)
            .filter(|d| *d != Millis::MAX)
            .min();
        if let Some(at) = next {
            self.mail_wake(at.max(now), fx);
        }
    }

    /// Records durably that changes of `id` after `since` are owed.
    pub(super) fn queue_note(&mut self, id: ConversationId, since: &[ChangeHash], fx: &mut Fx) {
        let kept = self.mail.behind.queued.get(&id).cloned();
        let heads = match kept {
            None => since.to_vec(),
            // Without reading the document (a restart reads none).
            Some(kept) if kept == since => return,
            Some(kept) => {
                let Some(replica) = self.replica_of(&id.0) else {
                    return;
                };
                if replica.covers(since, &kept) {
                    // What is recorded is older (or the same): it covers this.
                    return;
                } else if replica.covers(&kept, since) {
                    since.to_vec()
                } else {
                    // Neither is older: everything, to be safe.
                    Vec::new()
                }
            }
        };
        fx.persist.push(StoreOp::Put {
            key: keys::mail_queue(&id.0),
            value: heads.iter().flat_map(|h| h.0).collect(),
        });
        self.mail.behind.queued.insert(id, heads);
    }

    /// Deletes `id`'s record once nothing of it waits to be sealed.
    pub(super) fn queue_settled(&mut self, id: &ConversationId, fx: &mut Fx) {
        let waits = self.mail.behind.owed.keys().any(|(c, _)| c == id);
        if !waits && self.mail.behind.queued.remove(id).is_some() {
            fx.persist.push(StoreOp::Delete {
                key: keys::mail_queue(&id.0),
            });
        }
    }
}

/// Devices owed the same changes: one envelope.
struct Group {
    changes: Vec<automerge::Change>,
    devices: Vec<DeviceId>,
    class: Class,
}
