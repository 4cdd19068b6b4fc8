//! The clinical checkers (protocol/sync.md §7.6), read through the nodes'
//! public API like every other check:
//!
//! - (a) a device whose member owes an acknowledgement re-notifies within
//!   the interval plus [`TOLERANCE_MS`] of the last re-notification (or of
//!   showing the message) while it is up, and raises no alert once its
//!   rendered history shows the acknowledgement that settles it;
//! - (b) an escalation level is written only while someone owes the
//!   acknowledgement and its deadline has passed on the writer, and at the
//!   end every member device of the role channel shows each level of each
//!   message written into it exactly once;
//! - (c) a reminder fires on each target device within [`TOLERANCE_MS`] of
//!   its due time on that device's clock, with or without a network, when
//!   the device held it before and stayed up.

use std::collections::{BTreeMap, BTreeSet};

use huddle::message::{AckBy, Reminder};
use huddle::{ConversationId, ConversationKind, MemberId, MessageId, Priority};

use crate::check::{member_devices, Invariant, Violation};
use crate::net::Dev;
use crate::queue::Ev;
use crate::world::World;

/// The tolerance of protocol/sync.md §7.6 (30 s), plus a second.
pub const TOLERANCE_MS: u64 = 31_000;

/// One alert raised: (sim µs, incarnation, n).
pub type Raised = (u64, u32, u16);

#[derive(Default)]
pub struct Clin {
    /// Alerts raised: (device, message) → every one raised.
    pub alerts: BTreeMap<(Dev, MessageId), Vec<Raised>>,
    /// When each device first showed each urgent or STAT message (sim µs),
    /// and in which incarnation.
    pub held: BTreeMap<(Dev, MessageId), (u64, u32)>,
    /// Escalation entries written: (channel, message, level) → writers.
    pub written: BTreeMap<(ConversationId, MessageId, u8), Vec<Dev>>,
    /// Reminders the workload set.
    pub reminders: BTreeMap<MessageId, Reminder>,
    /// Reminder firings: (device, message, occurrence) → sim µs.
    pub fired: BTreeMap<(Dev, MessageId, u16), Vec<u64>>,
    /// Counts, for the report.
    pub escalations: u64,
    pub reminders_checked: u64,
    pub alerts_checked: u64,
}

/// The rendered message `msg` of `conv` on `dev`, and who owes its
/// acknowledgement there now, by the documented rule: None if the device
/// is down or does not hold it.
fn owed_on(
    w: &World,
    dev: Dev,
    conv: ConversationId,
    msg: MessageId,
) -> Option<(bool, BTreeSet<MemberId>)> {
    let node = w.devs[dev].node.as_ref()?;
    let now = w.devs[dev].now_ms(w.now);
    let c = node.conversation(&conv)?;
    let m = node
        .history(&conv, None)?
        .into_iter()
        .find(|h| h.id == msg)?;
    let mut recipients: BTreeSet<MemberId> = match &c.header.kind {
        ConversationKind::Direct { members } => members.iter().copied().collect(),
        ConversationKind::Group { members, .. } => members.iter().copied().collect(),
        ConversationKind::Role { role } => {
            let on_call = node.on_call(role, now).holders;
            if on_call.is_empty() {
                node.role_holders(role, now)
            } else {
                on_call.into_iter().collect()
            }
        }
    };
    recipients.remove(&m.author);
    let policy = node.clinical_policy();
    let rule = policy.rule(m.priority)?;
    let ack_by = match (rule.ack_by, m.ack_by) {
        (AckBy::All, _) => AckBy::All,
        (r, mine) => mine.unwrap_or(r),
    };
    let acked: BTreeSet<MemberId> = m.acked_by.iter().copied().collect();
    let owed = huddle::clinical::owed(ack_by, &recipients, &acked);
    Some((m.escalation.is_some(), owed))
}

/// The priority of `msg` as `dev` holds it.
fn priority_on(w: &World, dev: Dev, conv: ConversationId, msg: MessageId) -> Option<Priority> {
    let node = w.devs[dev].node.as_ref()?;
    Some(node.conversation(&conv)?.get(&msg)?.priority)
}

fn rule_of(w: &World, dev: Dev, priority: Priority) -> Option<huddle::clinical::Rule> {
    let node = w.devs[dev].node.as_ref()?;
    node.clinical_policy().rule(priority).cloned()
}

/// A device showed an urgent or STAT message (`MessageAdded`).
pub fn shown(w: &mut World, dev: Dev, conv: ConversationId, msg: MessageId, priority: Priority) {
    if w.clin.held.contains_key(&(dev, msg)) {
        return;
    }
    w.clin.held.insert((dev, msg), (w.now, w.devs[dev].inc));
    let me = w.devs[dev].member;
    let Some((entry, owed)) = owed_on(w, dev, conv, msg) else {
        return;
    };
    let Some(rule) = rule_of(w, dev, priority) else {
        return;
    };
    if entry || rule.times == 0 || !me.is_some_and(|me| owed.contains(&me)) {
        return;
    }
    let inc = w.devs[dev].inc;
    let at = w.now + (rule.every_ms + TOLERANCE_MS) * 1000;
    w.q.push(
        at,
        Ev::AlertDue {
            dev,
            inc,
            conv,
            msg,
            n: 1,
        },
    );
}

/// A device raised an alert: it must still owe (a), and the next is due.
pub fn alert(
    w: &mut World,
    dev: Dev,
    conv: ConversationId,
    msg: MessageId,
    priority: Priority,
    n: u16,
    of: u16,
) {
    let inc = w.devs[dev].inc;
    w.clin
        .alerts
        .entry((dev, msg))
        .or_default()
        .push((w.now, inc, n));
    w.clin.alerts_checked += 1;
    let me = w.devs[dev].member;
    if let Some((_, owed)) = owed_on(w, dev, conv, msg) {
        if !me.is_some_and(|me| owed.contains(&me)) {
            w.fail(
                Invariant::Clinical,
                vec![dev],
                format!("d{dev} raised alert {n}/{of} for {msg} although its history shows the acknowledgement settled"),
            );
            return;
        }
    }
    if n < of {
        if let Some(rule) = rule_of(w, dev, priority) {
            let at = w.now + (rule.every_ms + TOLERANCE_MS) * 1000;
            w.q.push(
                at,
                Ev::AlertDue {
                    dev,
                    inc,
                    conv,
                    msg,
                    n: n + 1,
                },
            );
        }
    }
}

/// Re-notification `n` of `msg` on `dev` should have come by now (a).
pub fn alert_due(w: &mut World, dev: Dev, inc: u32, conv: ConversationId, msg: MessageId, n: u16) {
    let d = &w.devs[dev];
    if !d.up() || !d.is_member() || d.revoked || w.final_heal {
        return;
    }
    let Some(priority) = priority_on(w, dev, conv, msg) else {
        return;
    };
    let Some(rule) = rule_of(w, dev, priority) else {
        return;
    };
    if d.inc != inc {
        // Restarted since: its re-notifications count again from there.
        let inc = d.inc;
        let at = w.now + (rule.every_ms + TOLERANCE_MS) * 1000;
        w.q.push(
            at,
            Ev::AlertDue {
                dev,
                inc,
                conv,
                msg,
                n: 1,
            },
        );
        return;
    }
    // A restarted device raises its re-notifications again from the first,
    // but none after `times` intervals from when it first held the message
    // (sync.md §7.6).
    let restarted_past_horizon = w
        .clin
        .held
        .get(&(dev, msg))
        .is_some_and(|(held, shown_in)| {
            let due = w.now.saturating_sub((rule.every_ms + TOLERANCE_MS) * 1000);
            *shown_in != inc && due > held + rule.every_ms * u64::from(rule.times) * 1000
        });
    if restarted_past_horizon {
        return;
    }
    let raised = w
        .clin
        .alerts
        .get(&(dev, msg))
        .is_some_and(|v| v.iter().any(|(_, i, k)| *i == inc && *k >= n));
    if raised || n > rule.times {
        return;
    }
    let me = d.member;
    let Some((_, owed)) = owed_on(w, dev, conv, msg) else {
        return;
    };
    if me.is_some_and(|me| owed.contains(&me)) {
        w.fail(
            Invariant::Clinical,
            vec![dev],
            format!(
                "d{dev} still owes {msg} but raised no re-notification {n} within {} ms + {TOLERANCE_MS} ms",
                rule.every_ms
            ),
        );
    }
}

/// A device wrote an escalation entry (b): only while owed, only once the
/// level's deadline passed on it.
pub fn escalated(
    w: &mut World,
    dev: Dev,
    conv: ConversationId,
    msg: MessageId,
    level: u8,
    channel: ConversationId,
) {
    w.clin.escalations += 1;
    w.clin
        .written
        .entry((channel, msg, level))
        .or_default()
        .push(dev);
    let Some((_, owed)) = owed_on(w, dev, conv, msg) else {
        return;
    };
    if owed.is_empty() {
        w.fail(
            Invariant::Clinical,
            vec![dev],
            format!(
                "d{dev} escalated {msg} (level {level}) although nobody owed its acknowledgement"
            ),
        );
        return;
    }
    let held = w.clin.held.get(&(dev, msg)).map(|(t, _)| *t);
    let priority = priority_on(w, dev, conv, msg);
    let after = priority
        .and_then(|p| rule_of(w, dev, p))
        .and_then(|r| r.ladder.get(usize::from(level) - 1).map(|s| s.after_ms));
    if let (Some(held), Some(after)) = (held, after) {
        if (w.now - held) / 1000 + TOLERANCE_MS < after {
            w.fail(
                Invariant::Clinical,
                vec![dev],
                format!(
                    "d{dev} escalated {msg} (level {level}) {} ms after it first showed it, before its {after} ms",
                    (w.now - held) / 1000
                ),
            );
        }
    }
}

/// A device showed a message; if it is a reminder for the device's member,
/// each occurrence still ahead is expected on time (c).
pub fn got(w: &mut World, dev: Dev, msg: MessageId) {
    let Some(r) = w.clin.reminders.get(&msg).cloned() else {
        return;
    };
    let d = &w.devs[dev];
    if !d.member.is_some_and(|me| r.targets.contains(&me)) {
        return;
    }
    let (inc, skew) = (d.inc, d.skew_ms);
    let now_ms = d.now_ms(w.now);
    for k in 0..r.times {
        let due = r.occurrence(k);
        if due <= now_ms + TOLERANCE_MS {
            continue;
        }
        // When the device's clock reads `due`, in simulated time.
        let sim_ms = (due as i64 - crate::device::EPOCH_MS as i64 - skew).max(0) as u64;
        let at = (sim_ms + TOLERANCE_MS) * 1000;
        w.q.push(
            at,
            Ev::ReminderDue {
                dev,
                inc,
                msg,
                k,
                sim_ms,
            },
        );
    }
}

pub fn fired(w: &mut World, dev: Dev, msg: MessageId, k: u16) {
    w.clin.fired.entry((dev, msg, k)).or_default().push(w.now);
}

/// Occurrence `k` of reminder `msg` was due on `dev` at `sim_ms` (c).
pub fn reminder_due(w: &mut World, dev: Dev, inc: u32, msg: MessageId, k: u16, sim_ms: u64) {
    let d = &w.devs[dev];
    if !d.up() || d.inc != inc || !d.is_member() || d.revoked {
        return;
    }
    w.clin.reminders_checked += 1;
    let on_time = w.clin.fired.get(&(dev, msg, k)).is_some_and(|v| {
        v.iter()
            .any(|t| (t / 1000).abs_diff(sim_ms) <= TOLERANCE_MS)
    });
    if !on_time {
        w.fail(
            Invariant::Clinical,
            vec![dev],
            format!("d{dev} did not fire occurrence {k} of reminder {msg} within {TOLERANCE_MS} ms of its due time"),
        );
    }
}

/// At the end (b): every member device of a role channel shows each level
/// of each message written into it exactly once.
pub fn check_final(w: &World, at: u64) -> Result<(), Violation> {
    for (channel, msg, level) in w.clin.written.keys() {
        let Some(h) = w.ledger.headers.get(channel) else {
            continue;
        };
        if !w.ledger.live.contains(channel) {
            continue;
        }
        for dev in member_devices(&w.devs, h) {
            let Some(node) = w.devs[dev].node.as_ref() else {
                continue;
            };
            let shown = node
                .history(channel, None)
                .unwrap_or_default()
                .iter()
                .filter(|m| {
                    m.escalation
                        .as_ref()
                        .is_some_and(|e| e.message == *msg && e.level == *level)
                })
                .count();
            if shown != 1 {
                return Err(Violation::new(
                    Invariant::Clinical,
                    at,
                    vec![dev],
                    format!(
                        "d{dev} shows escalation level {level} of {msg} {shown} times in {channel}"
                    ),
                ));
            }
        }
    }
    Ok(())
}
