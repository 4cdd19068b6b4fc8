//! When each open urgent or STAT message is next due for a re-notification
//! or an escalation level, and when each reminder occurrence is due: the
//! node's one timer for all of them (sync.md §7.6). Pure: times are given.
//!
//! Invariants:
//! - Deadlines are measured on this device's clock from `held_since`, when
//!   this device first held the message (never the author's clock).
//! - A tick does work only for what is due: O(log n) per due item, so 10k
//!   open messages cost nothing while nothing is due (BENCHMARKS.md).
//! - A clock jump neither floods nor silences: each re-notification is
//!   due an interval after the one before, so a sleep or a jump forward
//!   raises one (not a burst) and the rest follow at the interval; a timer
//!   that fires more than [`JUMP_TOLERANCE_MS`] before its deadline on
//!   this clock (the clock stepped back: a timer never fires early in real
//!   time) moves every deadline back by as much.

use std::collections::{BTreeSet, HashMap};

use super::policy::Rule;
use crate::ids::{ConversationId, MessageId, Millis};
use crate::message::Priority;

/// How far the clock may step back before deadlines are moved with it.
pub const JUMP_TOLERANCE_MS: Millis = 30_000;

pub type Key = (ConversationId, MessageId);

#[derive(Clone, Debug)]
struct Tracked {
    priority: Priority,
    held_since: Millis,
    rule: Rule,
    /// Re-notifications raised so far.
    alerted: u16,
    /// When the next is due: an interval after the last one raised.
    next_alert: Millis,
    /// Escalation levels handled so far.
    levels: u8,
    due: Option<Millis>,
}

impl Tracked {
    fn next_due(&self) -> Option<Millis> {
        let alert = (self.alerted < self.rule.times).then_some(self.next_alert);
        let level = self
            .rule
            .ladder
            .get(usize::from(self.levels))
            .map(|s| self.held_since + s.after_ms);
        match (alert, level) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }
}

/// What came due for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub key: Key,
    pub priority: Priority,
    pub held_since: Millis,
    /// Re-notification number `n` (1-based) of `of`, if one is due.
    pub alert: Option<(u16, u16)>,
    /// Escalation level (1-based) due, with its step's role.
    pub level: Option<(u8, String)>,
}

/// A reminder occurrence that came due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReminderDue {
    pub key: Key,
    pub occurrence: u16,
}

#[derive(Clone, Debug, Default)]
pub struct Schedule {
    tracked: HashMap<Key, Tracked>,
    queue: BTreeSet<(Millis, Key)>,
    /// Reminder occurrences to fire, by time.
    reminders: BTreeSet<(Millis, Key, u16)>,
}

impl Schedule {
    /// Tracks an open message (again: `held_since` and what was done stay
    /// as first tracked; the rule is the one given now).
    pub fn track(&mut self, key: Key, priority: Priority, held_since: Millis, rule: &Rule) {
        let t = self.tracked.entry(key).or_insert_with(|| Tracked {
            priority,
            held_since,
            rule: rule.clone(),
            alerted: 0,
            next_alert: held_since.saturating_add(rule.every_ms),
            levels: 0,
            due: None,
        });
        if t.rule.every_ms != rule.every_ms {
            // A new interval counts from the last alert (or the start).
            let last = t
                .next_alert
                .saturating_sub(t.rule.every_ms)
                .max(t.held_since);
            t.next_alert = last.saturating_add(rule.every_ms);
        }
        t.rule = rule.clone();
        let due = t.next_due();
        if let Some(old) = std::mem::replace(&mut t.due, due) {
            self.queue.remove(&(old, key));
        }
        match due {
            Some(d) => {
                self.queue.insert((d, key));
            }
            None => {
                self.tracked.remove(&key);
            }
        }
    }

    pub fn untrack(&mut self, key: &Key) {
        if let Some(t) = self.tracked.remove(key) {
            if let Some(d) = t.due {
                self.queue.remove(&(d, *key));
            }
        }
    }

    /// The open messages tracked.
    pub fn keys(&self) -> Vec<Key> {
        self.tracked.keys().copied().collect()
    }

    /// Is an occurrence of this reminder scheduled?
    pub fn has_reminder(&self, key: &Key) -> bool {
        self.reminders.iter().any(|(_, k, _)| k == key)
    }

    pub fn is_tracked(&self, key: &Key) -> bool {
        self.tracked.contains_key(key)
    }

    /// When this device first held a tracked message.
    pub fn held_since(&self, key: &Key) -> Option<Millis> {
        self.tracked.get(key).map(|t| t.held_since)
    }

    /// Re-notifications raised so far for a tracked message.
    pub fn alerted(&self, key: &Key) -> Option<u16> {
        self.tracked.get(key).map(|t| t.alerted)
    }

    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }

    /// The reminder occurrence `occurrence` of `key` fires at `at`.
    pub fn remind(&mut self, key: Key, occurrence: u16, at: Millis) {
        self.reminders.insert((at, key, occurrence));
    }

    /// Forgets every scheduled occurrence of a reminder.
    pub fn forget_reminder(&mut self, key: &Key) {
        self.reminders.retain(|(_, k, _)| k != key);
    }

    /// The earliest deadline, for the node's timer.
    pub fn next_due(&self) -> Option<Millis> {
        let a = self.queue.first().map(|(t, _)| *t);
        let r = self.reminders.first().map(|(t, ..)| *t);
        match (a, r) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// Moves every open message's deadlines back by `back` (the clock
    /// stepped back by as much).
    pub fn shift_back(&mut self, back: Millis) {
        self.queue.clear();
        for (key, t) in &mut self.tracked {
            t.held_since = t.held_since.saturating_sub(back);
            t.next_alert = t.next_alert.saturating_sub(back);
            t.due = t.next_due();
            if let Some(d) = t.due {
                self.queue.insert((d, *key));
            }
        }
    }

    /// Everything due by `now`, the timer having been set for `expected`:
    /// per message at most one re-notification and one escalation level;
    /// then each is scheduled for what comes next.
    pub fn take_due(
        &mut self,
        now: Millis,
        expected: Option<Millis>,
    ) -> (Vec<Due>, Vec<ReminderDue>) {
        if let Some(at) = expected.filter(|at| now.saturating_add(JUMP_TOLERANCE_MS) < *at) {
            self.shift_back(at - now);
        }
        let mut out = Vec::new();
        while let Some(&(at, key)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            let Some(t) = self.tracked.get_mut(&key) else {
                continue;
            };
            let mut due = Due {
                key,
                priority: t.priority,
                held_since: t.held_since,
                alert: None,
                level: None,
            };
            if t.alerted < t.rule.times && t.next_alert <= now {
                t.alerted += 1;
                t.next_alert = now.saturating_add(t.rule.every_ms);
                due.alert = Some((t.alerted, t.rule.times));
            }
            if let Some(step) = t.rule.ladder.get(usize::from(t.levels)) {
                if t.held_since + step.after_ms <= now {
                    t.levels += 1;
                    due.level = Some((t.levels, step.role.clone()));
                }
            }
            t.due = t.next_due();
            match t.due {
                Some(d) => {
                    self.queue.insert((d, key));
                }
                None => {
                    self.tracked.remove(&key);
                }
            }
            if due.alert.is_some() || due.level.is_some() {
                out.push(due);
            }
        }
        let mut reminders = Vec::new();
        while let Some(&(at, key, occurrence)) = self.reminders.first() {
            if at > now {
                break;
            }
            self.reminders.pop_first();
            reminders.push(ReminderDue { key, occurrence });
        }
        (out, reminders)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clinical::policy::{ClinicalPolicy, Step};
    use crate::message::AckBy;

    fn key(n: u8) -> Key {
        (ConversationId([n; 16]), MessageId([n; 16]))
    }

    fn rule() -> Rule {
        Rule {
            ack_by: AckBy::Any,
            every_ms: 60_000,
            times: 3,
            ladder: vec![Step {
                after_ms: 150_000,
                role: "charge-nurse".into(),
            }],
        }
    }

    #[test]
    fn alerts_at_each_interval_then_escalates_then_stops() {
        let mut s = Schedule::default();
        s.track(key(1), Priority::Stat, 1_000, &rule());
        assert_eq!(s.next_due(), Some(61_000));
        let mut alerts = Vec::new();
        let mut levels = Vec::new();
        let mut now = 0;
        while let Some(t) = s.next_due() {
            now = t;
            for d in s.take_due(now, Some(t)).0 {
                alerts.extend(d.alert.map(|a| (now, a.0)));
                levels.extend(d.level.map(|l| (now, l.0)));
            }
        }
        assert_eq!(alerts, vec![(61_000, 1), (121_000, 2), (181_000, 3)]);
        assert_eq!(levels, vec![(151_000, 1)]);
        assert!(
            s.is_empty(),
            "nothing is due after the last deadline ({now})"
        );
    }

    #[test]
    fn a_sleep_raises_one_alert_not_a_burst_and_the_rest_follow() {
        let mut s = Schedule::default();
        s.track(key(1), Priority::Urgent, 0, &rule());
        let (due, _) = s.take_due(1_000_000, Some(60_000));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].alert, Some((1, 3)));
        assert_eq!(due[0].level.as_ref().map(|l| l.0), Some(1));
        assert_eq!(s.next_due(), Some(1_060_000), "the next an interval later");
        let (due, _) = s.take_due(1_060_000, Some(1_060_000));
        assert_eq!(due[0].alert, Some((2, 3)));
    }

    #[test]
    fn a_clock_stepping_back_moves_the_deadlines_with_it() {
        let base = 10_000_000;
        let mut s = Schedule::default();
        s.track(key(1), Priority::Urgent, base, &rule());
        assert_eq!(s.next_due(), Some(base + 60_000));
        // The timer fires a minute later in real time, but the clock has
        // stepped back an hour: the alert is raised now, not in an hour.
        let back = 3_600_000;
        let (due, _) = s.take_due(base + 60_000 - back, Some(base + 60_000));
        assert_eq!(due.len(), 1, "raised when its time came in real time");
        assert_eq!(s.next_due(), Some(base + 120_000 - back));
        // Within the tolerance nothing moves: the timer is simply early.
        let mut t = Schedule::default();
        t.track(key(2), Priority::Urgent, base, &rule());
        let (due, _) = t.take_due(base + 60_000 - JUMP_TOLERANCE_MS, Some(base + 60_000));
        assert!(due.is_empty());
        assert_eq!(t.next_due(), Some(base + 60_000));
    }

    #[test]
    fn the_default_policy_has_a_finite_horizon() {
        let p = ClinicalPolicy::default();
        assert_eq!(p.urgent.horizon_ms(), 20 * 60_000);
        assert_eq!(p.stat.horizon_ms(), 20 * 60_000);
    }
}
