//! The clinical rules applied to the node's documents (sync.md §7.6): who
//! still owes an acknowledgement of each open urgent or STAT message, the
//! alerts raised on our member's devices, the escalation entries written
//! into role channels, and reminders.
//!
//! Invariants:
//! - Everything here follows from the merged documents, the team directory
//!   and this device's clock, so it works with no network at all.
//! - An alert is raised only while our member still owes the
//!   acknowledgement as known at that moment; a level is escalated only if
//!   the acknowledgement is still owed when its deadline passes, and only
//!   by a device admitted to both the conversation and the role channel.
//! - An escalation entry names the message, its author, who is waiting and
//!   for how long: never the original's text.

use std::collections::{BTreeSet, HashMap};

use super::{Event, Fx, Node, Timer};
use crate::clinical::roster::AssignmentId;
use crate::clinical::schedule::{Key, ReminderDue};
use crate::clinical::{owed, Assignment, ClinicalPolicy, OnCall, Roster, Rule, Schedule, Signer};
use crate::conversation::Conversation;
use crate::header::ConversationKind;
use crate::ids::{ConversationId, MemberId, MessageId, Millis};
use crate::message::{Escalation, Fields, Message, ReceiptKind, MAX_NAMED};
use crate::store::{keys, StoreOp};

/// A reminder occurrence due at most this long before the device started
/// (or received it) still fires, late; older ones are only listed.
pub const LATE_REMINDER_MS: Millis = 3_600_000;
/// A message its author wrote this long before this device first held it
/// is history (a new device catching up, a week-old thread arriving), not
/// an alarm: it is listed as awaiting acknowledgement but not re-notified
/// or escalated from here.
pub const STALE_MS: Millis = 24 * 3_600_000;
/// At start, open messages are looked for among this many newest messages
/// of each conversation read (as the list's badges are).
const START_SCAN: usize = super::view::UNREAD_SCAN;

/// A clinical rule broken on purpose (`NodeConfig::clinical_fault`), so
/// the simulator can show its checkers catch each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    None,
    /// Escalate levels whose acknowledgement nobody owes any more.
    EscalateSettled,
    /// Show every copy of an escalation level, not the first.
    ShowEveryCopy,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Clinical {
    pub(super) schedule: Schedule,
    /// The held times in the store (`held/`): open messages and reminders
    /// for our member, so a restart finds them without reading every
    /// conversation.
    stored: HashMap<Key, Millis>,
    timer_at: Option<Millis>,
    /// The latest clock reading seen (`clinical_clock`).
    pub(super) seen: Millis,
    /// Reminders for our member that are scheduled.
    pub(super) reminders: BTreeSet<Key>,
}

impl Clinical {
    pub(super) fn from_store(held: &[([u8; 16], [u8; 16], u64)]) -> Clinical {
        Clinical {
            stored: held
                .iter()
                .map(|(c, m, t)| ((ConversationId(*c), MessageId(*m)), *t))
                .collect(),
            ..Clinical::default()
        }
    }
}

impl Node {
    /// The clinical policy in force: the authority's newest, or the default.
    pub fn clinical_policy(&self) -> &ClinicalPolicy {
        static DEFAULT: std::sync::OnceLock<ClinicalPolicy> = std::sync::OnceLock::new();
        match self.signed_policy() {
            Some(p) => &p.policy,
            None => DEFAULT.get_or_init(ClinicalPolicy::default),
        }
    }

    /// The authority's signed policy, if it set one.
    pub fn signed_policy(&self) -> Option<&crate::clinical::SignedPolicy> {
        self.membership.as_ref().and_then(|m| m.team.policy())
    }

    /// The on-call assignments that count: signed by the authority, or by a
    /// device whose valid certificate (for the member it names) holds the
    /// role.
    pub fn roster(&self) -> Roster {
        Roster {
            assignments: self
                .counting_assignments()
                .map(|(id, a)| (*id, a.clone()))
                .collect(),
        }
    }

    fn counting_assignments(&self) -> impl Iterator<Item = (&AssignmentId, &Assignment)> {
        self.membership.iter().flat_map(move |m| {
            m.team
                .assignments
                .iter()
                .filter(move |(_, a)| match a.signer {
                    Signer::Authority => true,
                    Signer::Device { device, member } => {
                        m.team.directory.get(&device).is_some_and(|c| {
                            c.member == member
                                && c.has_role(&a.role)
                                && !self.is_revoked(&device, &member)
                        })
                    }
                })
        })
    }

    /// Who is on call for `role` now (no copy of the roster: this runs for
    /// every open message of a role channel a tick looks at).
    pub fn on_call(&self, role: &str, now: Millis) -> OnCall {
        crate::clinical::roster::on_call(self.counting_assignments(), role, now)
    }

    /// Members with a certificate, valid now and not revoked, holding `role`.
    pub fn role_holders(&self, role: &str, now: Millis) -> BTreeSet<MemberId> {
        self.directory()
            .filter(|c| {
                c.has_role(role) && c.expires > now && !self.is_revoked(&c.device, &c.member)
            })
            .map(|c| c.member)
            .collect()
    }

    /// Whom a message in `c` asks to acknowledge: the conversation's
    /// members but the author; in a role channel, the role's on-call
    /// holders if any are assigned now, else everyone holding the role.
    fn recipients(&self, c: &Conversation, author: MemberId, now: Millis) -> BTreeSet<MemberId> {
        let mut r: BTreeSet<MemberId> = match &c.header.kind {
            ConversationKind::Direct { members } => members.iter().copied().collect(),
            ConversationKind::Group { members, .. } => members.iter().copied().collect(),
            ConversationKind::Role { role } => {
                let on_call = self.on_call(role, now).holders;
                if on_call.is_empty() {
                    self.role_holders(role, now)
                } else {
                    on_call.into_iter().collect()
                }
            }
        };
        r.remove(&author);
        r
    }

    /// The rule a message follows: its priority's, with the message's own
    /// `ack_by` unless the policy asks all recipients (a sender tightens,
    /// never loosens that); an escalation entry is re-notified like its
    /// priority, acknowledged by any holder, and never escalated itself.
    pub(super) fn rule_for(&self, m: &Message) -> Option<Rule> {
        let mut rule = self.clinical_policy().rule(m.priority)?.clone();
        if m.fields.escalation.is_some() {
            rule.ack_by = crate::message::AckBy::Any;
            rule.ladder.clear();
        } else if rule.ack_by != crate::message::AckBy::All {
            rule.ack_by = m.fields.ack_by.unwrap_or(rule.ack_by);
        }
        Some(rule)
    }

    /// Whose acknowledgement of `m` is still owed (an escalation entry's
    /// acknowledgement counts on any copy of it).
    pub(super) fn owed_by(&self, c: &Conversation, m: &Message, now: Millis) -> BTreeSet<MemberId> {
        let Some(rule) = self.rule_for(m) else {
            return BTreeSet::new();
        };
        let recipients = self.recipients(c, m.author_member, now);
        let acked = match &m.fields.escalation {
            Some(e) => c
                .escalation_copies(&e.message, e.level)
                .iter()
                .filter_map(|(_, id)| c.get(id))
                .flat_map(|copy| self.ackers(c, copy, &copy.id()))
                .collect(),
            None => self.ackers(c, m, &m.id()),
        };
        owed(rule.ack_by, &recipients, &acked)
    }

    /// Can this device escalate under `rule` (its certificate holds a role
    /// of the ladder, so it is admitted to that role's channel)?
    fn may_escalate(&self, rule: &Rule) -> bool {
        self.certificate()
            .is_some_and(|c| rule.ladder.iter().any(|s| c.has_role(&s.role)))
    }

    /// Takes note of a message this device now holds (written here,
    /// received, or read at start), first held at `held`.
    pub(super) fn clinical_note(
        &mut self,
        now: Millis,
        conv: ConversationId,
        m: &Message,
        held: Millis,
        fx: &mut Fx,
    ) {
        let key = (conv, m.id());
        let me = self.member_id();
        if let Some(r) = &m.fields.reminder {
            let next = (0..r.times).find(|k| r.occurrence(*k) > now);
            let late = (0..r.times)
                .rev()
                .find(|k| r.occurrence(*k) <= now)
                .filter(|k| r.occurrence(*k).saturating_add(LATE_REMINDER_MS) > now);
            let for_me = me.is_some_and(|me| r.targets.contains(&me));
            if for_me && (next.is_some() || late.is_some()) && self.clinical.reminders.insert(key) {
                for k in late.into_iter().chain(next) {
                    self.clinical
                        .schedule
                        .remind(key, k, r.occurrence(k).max(now));
                }
                self.store_held(key, held, fx);
            }
        }
        if !m.priority.wants_ack() || self.clinical.schedule.is_tracked(&key) {
            return;
        }
        let Some(rule) = self.rule_for(m) else {
            return;
        };
        let Some(c) = self.conversation(&conv) else {
            return;
        };
        let stale = m.hlc.millis().saturating_add(STALE_MS) < held;
        if stale || !c.shown(m) || held.saturating_add(rule.horizon_ms()) <= now {
            return;
        }
        let owed = self.owed_by(c, m, now);
        let mine = me.is_some_and(|me| owed.contains(&me));
        if owed.is_empty() || !(mine || self.may_escalate(&rule)) {
            return;
        }
        // A copy that displaces an earlier-tracked first copy (after a
        // partition heals) takes over its clock.
        let mut held = held;
        if let Some(e) = &m.fields.escalation {
            for (_, id) in c.escalation_copies(&e.message, e.level) {
                let other = (conv, id);
                if let Some(h) = self.clinical.schedule.held_since(&other) {
                    held = held.min(h);
                    self.clinical.schedule.untrack(&other);
                    self.drop_held(other, fx);
                }
            }
        }
        self.clinical.schedule.track(key, m.priority, held, &rule);
        self.store_held(key, held, fx);
    }

    fn store_held(&mut self, key: Key, held: Millis, fx: &mut Fx) {
        if self.clinical.stored.get(&key) != Some(&held) {
            self.clinical.stored.insert(key, held);
            fx.persist.push(StoreOp::Put {
                key: keys::held(&key.0 .0, &key.1 .0),
                value: held.to_be_bytes().to_vec(),
            });
        }
    }

    fn drop_held(&mut self, key: Key, fx: &mut Fx) {
        if self.clinical.stored.remove(&key).is_some() {
            fx.persist.push(StoreOp::Delete {
                key: keys::held(&key.0 .0, &key.1 .0),
            });
        }
    }

    /// After receipts for `m`: stops what nobody owes any more.
    pub(super) fn clinical_receipt(
        &mut self,
        now: Millis,
        conv: ConversationId,
        r_msg: MessageId,
        kind: ReceiptKind,
        fx: &mut Fx,
    ) {
        let key = (conv, r_msg);
        match kind {
            ReceiptKind::Ack => {
                let Some(c) = self.conversation(&conv) else {
                    return;
                };
                let Some(m) = c.get(&r_msg) else {
                    return;
                };
                // An ack of any copy of an escalation closes its first copy.
                let key = match &m.fields.escalation {
                    Some(e) => c
                        .escalation_copies(&e.message, e.level)
                        .first()
                        .map_or(key, |(_, id)| (conv, *id)),
                    None => key,
                };
                let Some(first) = c.get(&key.1) else {
                    return;
                };
                let owed = self.owed_by(c, first, now);
                let me = self.member_id();
                if owed.is_empty() && self.config.clinical_fault != Fault::EscalateSettled {
                    self.clinical.schedule.untrack(&key);
                    self.drop_held(key, fx);
                }
                if me.is_some_and(|me| !owed.contains(&me)) {
                    fx.emit.push(Event::AlertsChanged);
                }
            }
            ReceiptKind::Done { .. } => fx.emit.push(Event::AlertsChanged),
            ReceiptKind::Snooze { occurrence, until } => {
                if self.clinical.reminders.contains(&key) {
                    self.clinical
                        .schedule
                        .remind(key, occurrence, until.max(now));
                    fx.emit.push(Event::AlertsChanged);
                }
            }
            ReceiptKind::Delivered | ReceiptKind::Read => {}
        }
    }

    /// At start: what the store says is open, and the open messages of the
    /// conversations read whole.
    pub(super) fn clinical_start(&mut self, now: Millis, fx: &mut Fx) {
        let mut convs: BTreeSet<ConversationId> =
            self.clinical.stored.keys().map(|(c, _)| *c).collect();
        convs.extend(
            self.convs
                .iter()
                .filter(|(_, slot)| slot.stored_meta().is_none())
                .map(|(id, _)| *id),
        );
        for conv in convs {
            let Some(c) = self.conversation(&conv) else {
                continue;
            };
            let mut found: Vec<(Message, Millis)> = Vec::new();
            for m in c.messages().rev().take(START_SCAN) {
                if m.priority.wants_ack() || m.fields.reminder.is_some() {
                    let held = self.clinical.stored.get(&(conv, m.id())).copied();
                    found.push((m.clone(), held.unwrap_or_else(|| m.hlc.millis().min(now))));
                }
            }
            let mut gone = Vec::new();
            for (key, held) in &self.clinical.stored {
                if key.0 == conv && !found.iter().any(|(m, _)| m.id() == key.1) {
                    match c.get(&key.1) {
                        Some(m) => found.push((m.clone(), *held)),
                        None => gone.push(*key),
                    }
                }
            }
            for key in gone {
                self.drop_held(key, fx);
            }
            for (m, held) in found {
                self.clinical_note(now, conv, &m, held, fx);
            }
        }
        // What was stored but is no longer open goes.
        let open: Vec<Key> = self.clinical.stored.keys().copied().collect();
        for key in open {
            if !self.clinical.schedule.is_tracked(&key) && !self.clinical.reminders.contains(&key) {
                self.drop_held(key, fx);
            }
        }
    }

    /// The policy, the roster or the directory changed: every open message
    /// follows the rule and the recipients now in force.
    pub(super) fn clinical_retrack(&mut self, now: Millis, fx: &mut Fx) {
        for key in self.clinical.schedule.keys() {
            let Some(c) = self.conversation(&key.0) else {
                continue;
            };
            let Some(m) = c.get(&key.1).cloned() else {
                continue;
            };
            let held = self.clinical.schedule.held_since(&key).unwrap_or(now);
            match self.rule_for(&m) {
                Some(rule) if !self.owed_by(c, &m, now).is_empty() => {
                    self.clinical.schedule.track(key, m.priority, held, &rule);
                }
                _ => {
                    self.clinical.schedule.untrack(&key);
                    self.drop_held(key, fx);
                }
            }
        }
    }

    /// The clinical timer: raises what is due.
    pub(super) fn clinical_tick(&mut self, now: Millis, fx: &mut Fx) {
        let expected = self.clinical.timer_at.take();
        let (due, reminders) = self.clinical.schedule.take_due(now, expected);
        let me = self.member_id();
        for d in due {
            let (conv, msg) = d.key;
            let Some(c) = self.conversation(&conv) else {
                self.clinical.schedule.untrack(&d.key);
                continue;
            };
            let Some(m) = c.get(&msg).cloned() else {
                continue;
            };
            let owed = self.owed_by(c, &m, now);
            let settled = owed.is_empty();
            let owed = match self.config.clinical_fault {
                Fault::EscalateSettled if settled => self.recipients(c, m.author_member, now),
                _ => owed,
            };
            if owed.is_empty() {
                self.clinical.schedule.untrack(&d.key);
                self.drop_held(d.key, fx);
                continue;
            }
            if let Some((n, of)) = d.alert {
                if !settled && me.is_some_and(|me| owed.contains(&me)) {
                    fx.emit.push(Event::Alert {
                        conversation: conv,
                        message: msg,
                        priority: m.priority,
                        author: m.author_member,
                        n,
                        of,
                        waiting_ms: now.saturating_sub(d.held_since),
                    });
                }
            }
            if let Some((level, role)) = d.level {
                self.escalate(now, conv, &m, level, &role, &owed, d.held_since, fx);
            }
            if !self.clinical.schedule.is_tracked(&d.key) {
                self.drop_held(d.key, fx);
            }
        }
        for r in reminders {
            self.fire_reminder(now, r, fx);
        }
    }

    /// Writes escalation level `level` of `m` into `role`'s channel, unless
    /// this device is not admitted to it or some device already did.
    #[allow(clippy::too_many_arguments)]
    fn escalate(
        &mut self,
        now: Millis,
        conv: ConversationId,
        m: &Message,
        level: u8,
        role: &str,
        owed: &BTreeSet<MemberId>,
        held: Millis,
        fx: &mut Fx,
    ) {
        if !self.certificate().is_some_and(|c| c.has_role(role)) {
            return;
        }
        let kind = ConversationKind::Role {
            role: role.to_owned(),
        };
        let channel = self
            .convs
            .iter()
            .filter(|(_, slot)| slot.header.kind == kind)
            .min_by_key(|(id, slot)| (slot.header.created, **id))
            .map(|(id, _)| *id);
        let channel = match channel {
            Some(id) => id,
            None => match self.create(now, kind, fx) {
                Ok(super::Reply::Conversation(id)) => id,
                _ => return,
            },
        };
        let msg = m.id();
        let Some(ch) = self.conversation(&channel) else {
            return;
        };
        if !ch.escalation_copies(&msg, level).is_empty() {
            return;
        }
        let waiting: Vec<MemberId> = owed.iter().take(MAX_NAMED).copied().collect();
        let name = |who: &MemberId| {
            self.member_name(who)
                .unwrap_or_else(|| format!("member {}", &who.to_hex()[..8]))
        };
        let names: Vec<String> = waiting.iter().map(name).collect();
        let minutes = now.saturating_sub(held) / 60_000;
        let body = format!(
            "Escalation (level {level}): a {} message from {} has not been acknowledged for {minutes} min; waiting on {}.",
            match m.priority {
                crate::message::Priority::Stat => "STAT",
                _ => "urgent",
            },
            name(&m.author_member),
            names.join(", "),
        );
        let fields = Fields {
            escalation: Some(Escalation {
                conversation: conv,
                message: msg,
                level,
                priority: m.priority,
                author: m.author_member,
                waiting,
                unacked_ms: now.saturating_sub(held),
            }),
            ..Fields::default()
        };
        match self.send(now, channel, body, m.priority, None, fields, fx) {
            Ok(entry) => fx.emit.push(Event::Escalated {
                conversation: conv,
                message: msg,
                level,
                channel,
                entry,
            }),
            Err(e) => tracing::warn!("could not write an escalation entry: {e}"),
        }
    }

    fn fire_reminder(&mut self, now: Millis, due: ReminderDue, fx: &mut Fx) {
        let (conv, msg) = due.key;
        let Some(c) = self.conversation(&conv) else {
            return;
        };
        let Some(m) = c.get(&msg).cloned() else {
            return;
        };
        let Some(r) = m.fields.reminder.clone() else {
            return;
        };
        let k = due.occurrence;
        let snoozed = self.snoozed_until(c, &m, k).is_some_and(|u| u > now);
        let done = self.reminder_done(c, &m, k);
        // Each occurrence, when it comes due, schedules the next (the set
        // keeps one entry per time, so a late or snoozed firing adds none).
        if let Some(next) = k.checked_add(1).filter(|n| *n < r.times) {
            if r.occurrence(next) > now {
                self.clinical
                    .schedule
                    .remind(due.key, next, r.occurrence(next));
            }
        }
        if done || snoozed {
            return;
        }
        fx.emit.push(Event::Reminder {
            conversation: conv,
            message: msg,
            occurrence: k,
            due_ms: r.occurrence(k),
        });
    }

    /// Every input's clock reading: a step back beyond the tolerance moves
    /// every deadline back by as much (sync.md §7.6), whichever input
    /// shows it first — a deadline tracked after the step may have replaced
    /// the timer set before it, which would have shown it.
    pub(super) fn clinical_clock(&mut self, now: Millis) {
        let seen = self.clinical.seen;
        let stepped = now.saturating_add(crate::clinical::schedule::JUMP_TOLERANCE_MS) < seen;
        if stepped {
            self.clinical.schedule.shift_back(seen - now);
            // The timer set before the step fires when the clock reads this.
            self.clinical.timer_at = self.clinical.timer_at.map(|t| t - (seen - now).min(t));
        }
        self.clinical.seen = if stepped { now } else { seen.max(now) };
    }

    /// Sets the clinical timer if its earliest deadline moved.
    pub(super) fn clinical_timer(&mut self, fx: &mut Fx) {
        let next = self.clinical.schedule.next_due();
        if let Some(at) = next.filter(|_| next != self.clinical.timer_at) {
            self.clinical.timer_at = next;
            fx.timers.push((Timer::Clinical, at));
        }
    }

    /// How many open messages and reminders the schedule holds (for tests
    /// and the benchmark).
    #[doc(hidden)]
    pub fn clinical_tracked(&self) -> (usize, usize) {
        (self.clinical.schedule.len(), self.clinical.reminders.len())
    }
}
