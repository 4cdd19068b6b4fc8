//! The clinical workload of a scenario (protocol/sync.md §7.6): its team
//! policy, set once at the start, and the reminders its traffic sets; what
//! the checkers make of them is in `clinical.rs`.

use huddle::{Command, ConversationId, ConversationKind};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;

use crate::check::Invariant;
use crate::net::Dev;
use crate::queue::Ev;
use crate::scenario::Dur;
use crate::world::World;

/// How long until a device that is down is tried again.
const RETRY_US: u64 = crate::actions::RETRY_US;

/// The team's clinical policy for the run (sync.md §7.6), set by device 0
/// at the start; both priorities follow it (the default policy otherwise).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Re-notify every so long, so many times.
    pub every: Dur,
    pub times: u16,
    /// Escalation ladder: after so long, to this role.
    #[serde(default)]
    pub escalate: Vec<(Dur, String)>,
}

/// With the scenario's `remind` chance (drawn only where a scenario asks,
/// so older scenarios' draws stay), a reminder for the message `dev` is
/// about to send into `conv`.
pub fn maybe_reminder(
    w: &mut World,
    dev: Dev,
    conv: &ConversationId,
) -> Option<huddle::message::Reminder> {
    let chance = w.sc.traffic.remind;
    if chance > 0.0 && w.wrng.gen_bool(chance.min(1.0)) {
        reminder_for(w, dev, conv)
    } else {
        None
    }
}

/// The reminder `id` went out: its occurrences are expected on its targets.
pub fn reminder_sent(w: &mut World, dev: Dev, id: huddle::MessageId, r: huddle::message::Reminder) {
    w.clin.reminders.insert(id, r);
    crate::clinical::got(w, dev, id);
}

/// A reminder for one or two members of `conv`, due a while from now on
/// `dev`'s clock.
fn reminder_for(
    w: &mut World,
    dev: Dev,
    conv: &ConversationId,
) -> Option<huddle::message::Reminder> {
    let t = w.sc.traffic.clone();
    let header = w.ledger.headers.get(conv)?.clone();
    let mut members: Vec<huddle::MemberId> = match &header.kind {
        ConversationKind::Direct { members } => members.to_vec(),
        ConversationKind::Group { members, .. } => members.iter().copied().collect(),
        ConversationKind::Role { role } => w
            .devs
            .iter()
            .filter(|d| d.cert.as_ref().is_some_and(|c| c.has_role(role)))
            .filter_map(|d| d.member)
            .collect(),
    };
    members.sort();
    members.dedup();
    let n = w.wrng.gen_range(1..=2usize).min(members.len());
    let mut targets: Vec<_> = members.choose_multiple(&mut w.wrng, n).copied().collect();
    targets.sort();
    if targets.is_empty() {
        return None;
    }
    let [lo, hi] = t.remind_in;
    let delay_ms = w.wrng.gen_range(lo.us()..=hi.us().max(lo.us())) / 1000;
    let (every_ms, times) = match (t.remind_every, t.remind_times) {
        (Some(e), Some(k)) if k > 1 => (e.us() / 1000, k),
        _ => (0, 1),
    };
    Some(huddle::message::Reminder {
        due_ms: w.devs[dev].now_ms(w.now) + delay_ms,
        targets,
        every_ms,
        times,
    })
}

/// Device 0 sets the scenario's clinical policy, signed by the team
/// authority (an administrator's act), once it is up.
pub fn policy(w: &mut World) {
    let Some(spec) = w.sc.policy.clone() else {
        return;
    };
    if !w.devs[0].up() {
        w.q.push(w.now + RETRY_US, Ev::Policy);
        return;
    }
    let rule = |r: &huddle::clinical::Rule| huddle::clinical::Rule {
        every_ms: spec.every.us() / 1000,
        times: spec.times,
        ladder: spec
            .escalate
            .iter()
            .map(|(after, role)| huddle::clinical::Step {
                after_ms: after.us() / 1000,
                role: role.clone(),
            })
            .collect(),
        ..r.clone()
    };
    let d = huddle::clinical::ClinicalPolicy::default();
    let p = huddle::clinical::ClinicalPolicy {
        urgent: rule(&d.urgent),
        stat: rule(&d.stat),
        ..d.clone()
    };
    let now = w.devs[0].now_ms(w.now);
    match huddle::clinical::SignedPolicy::sign(&w.authority, p, now) {
        Ok(signed) => {
            if let Some(Err(e)) = w.command(0, Command::SetPolicy(Box::new(signed))) {
                w.fail(
                    Invariant::Setup,
                    vec![0],
                    format!("the policy was refused: {e}"),
                );
            }
        }
        Err(e) => w.fail(
            Invariant::Setup,
            vec![0],
            format!("the scenario's policy is invalid: {e}"),
        ),
    }
}
