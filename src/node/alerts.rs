//! What waits for our member (`huddle alerts`, `GET /v1/alerts`): urgent
//! and STAT messages whose acknowledgement our member still owes, and
//! reminders due and not done; and the roster as a view.
//!
//! Invariant: derived from the documents, the directory and the clock
//! alone, like every view (view.rs); the schedule only says when to tell.

use serde::Serialize;

use super::Node;
use crate::conversation::Conversation;
use crate::ids::{ConversationId, MemberId, MessageId, Millis};
use crate::message::Message;
use crate::message::Priority;

/// Newest messages looked at per conversation, as for the list's badges.
const SCAN: usize = super::view::UNREAD_SCAN;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertKind {
    /// Acknowledge this urgent or STAT message.
    Ack,
    /// This reminder is due.
    Reminder,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub conversation: ConversationId,
    pub conversation_title: String,
    pub message: MessageId,
    pub priority: Priority,
    pub author: MemberId,
    pub author_name: Option<String>,
    /// The author's time (its clock).
    pub time_ms: u64,
    /// The body's first characters, as in the list.
    pub preview: String,
    /// For an escalation entry: the level.
    pub escalation_level: Option<u8>,
    /// Re-notifications raised on this device so far (acks).
    pub alerted: Option<u16>,
    /// For a reminder: the occurrence due (0-based) and when.
    pub occurrence: Option<u16>,
    pub due_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OnCallView {
    pub role: String,
    pub holders: Vec<MemberId>,
    pub names: Vec<Option<String>>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Other assignments covering now that nothing replaces: made in a
    /// partition, to be fixed by setting who is on call again.
    pub conflicts: Vec<String>,
    /// Nobody is assigned: everyone holding the role is asked.
    pub unassigned: bool,
}

impl Node {
    /// What waits for our member now, most urgent and oldest first.
    pub fn alerts(&self, now: Millis) -> Vec<Alert> {
        let Some(me) = self.member_id() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let reminders: std::collections::BTreeSet<ConversationId> =
            self.clinical.reminders.iter().map(|(c, _)| *c).collect();
        for summary in self.conversations() {
            let id = summary.id;
            // Only where the list's badges (from the index, without reading
            // the document) or a reminder say something may wait.
            if summary.to_ack == 0 && !reminders.contains(&id) {
                continue;
            }
            let Some(c) = self.conversation(&id) else {
                continue;
            };
            for m in c.messages().rev().take(SCAN) {
                let preview: String = m.body.chars().take(super::view::PREVIEW_CHARS).collect();
                let base = |kind| Alert {
                    kind,
                    conversation: id,
                    conversation_title: summary.title.clone(),
                    message: m.id(),
                    priority: m.priority,
                    author: m.author_member,
                    author_name: self.member_name(&m.author_member),
                    time_ms: m.hlc.millis(),
                    preview: preview.clone(),
                    escalation_level: m.fields.escalation.as_ref().map(|e| e.level),
                    alerted: None,
                    occurrence: None,
                    due_ms: None,
                };
                if m.priority.wants_ack() && c.shown(m) && self.owed_by(c, m, now).contains(&me) {
                    out.push(Alert {
                        alerted: self.clinical.schedule.alerted(&(id, m.id())),
                        ..base(AlertKind::Ack)
                    });
                }
                if let Some(r) = m
                    .fields
                    .reminder
                    .as_ref()
                    .filter(|r| r.targets.contains(&me))
                {
                    let due = (0..r.times).rev().find(|k| r.occurrence(*k) <= now);
                    let waiting = due.filter(|k| {
                        !self.reminder_done(c, m, *k)
                            && self.snoozed_until(c, m, *k).is_none_or(|u| u <= now)
                    });
                    if let Some(k) = waiting {
                        out.push(Alert {
                            occurrence: Some(k),
                            due_ms: Some(r.occurrence(k)),
                            ..base(AlertKind::Reminder)
                        });
                    }
                }
            }
        }
        out.sort_by_key(|a| (std::cmp::Reverse(a.priority), a.time_ms, a.message));
        out
    }

    /// Who is on call now for every role that has an assignment or a
    /// holder, with conflicts shown.
    pub fn on_call_view(&self, now: Millis) -> Vec<OnCallView> {
        let roster = self.roster();
        let mut roles: std::collections::BTreeSet<String> =
            roster.roles().into_iter().map(str::to_owned).collect();
        roles.extend(self.directory().flat_map(|c| c.roles.iter().cloned()));
        roles
            .into_iter()
            .map(|role| {
                let oc = roster.on_call(&role, now);
                let a = oc.assignment.and_then(|id| roster.assignments.get(&id));
                OnCallView {
                    names: oc.holders.iter().map(|m| self.member_name(m)).collect(),
                    holders: oc.holders.clone(),
                    from_ms: a.map(|a| a.from_ms),
                    to_ms: a.map(|a| a.to_ms),
                    conflicts: oc
                        .conflicts
                        .iter()
                        .map(|id| data_encoding::HEXLOWER.encode(id))
                        .collect(),
                    unassigned: oc.assignment.is_none(),
                    role,
                }
            })
            .collect()
    }
}

/// Whether a reminder occurrence still waits: done or snoozed by its targets.
impl Node {
    /// Is occurrence `k` of reminder `m` done by one of its targets?
    pub(super) fn reminder_done(&self, c: &Conversation, m: &Message, k: u16) -> bool {
        let Some(r) = &m.fields.reminder else {
            return true;
        };
        c.receipts.done.get(&(m.id(), k)).is_some_and(|s| {
            s.iter()
                .any(|(d, who)| r.targets.contains(who) && self.bound(d, who))
        })
    }

    /// When occurrence `k` is snoozed until, by its targets (the newest snooze).
    pub(super) fn snoozed_until(&self, c: &Conversation, m: &Message, k: u16) -> Option<Millis> {
        let r = m.fields.reminder.as_ref()?;
        c.receipts.snoozed.get(&(m.id(), k)).and_then(|per| {
            per.iter()
                .filter(|(d, (_, _, who))| r.targets.contains(who) && self.bound(d, who))
                .max_by_key(|(_, (at, _, _))| *at)
                .map(|(_, (_, until, _))| *until)
        })
    }
}
