//! Urgent messages that cannot be missed (sync.md §7.6): the team's clinical
//! policy, the on-call roster, who still owes an acknowledgement, and the
//! schedule of re-notifications, escalations and reminders. Pure: the node
//! (`node/clinical.rs`) applies it to its documents and its clock.

pub mod policy;
pub mod roster;
pub mod schedule;

use std::collections::BTreeSet;

use crate::ids::MemberId;
use crate::message::AckBy;

pub use policy::{AttachmentRule, ClinicalPolicy, Rule, SignedPolicy, Step};
pub use roster::{Assignment, AssignmentDraft, OnCall, Roster, Signer};
pub use schedule::{Due, ReminderDue, Schedule};

/// Whose acknowledgement is still owed: `recipients` are the members the
/// message asks (its conversation's members but the author, or a role's
/// holders), `acked` those whose acknowledgement counts.
///
/// - any: every recipient, until one of them acknowledges;
/// - all: each recipient who has not;
/// - a named member: that member, until they do (nobody if they are not a
///   recipient: a sender cannot make a stranger owe).
pub fn owed(
    ack_by: AckBy,
    recipients: &BTreeSet<MemberId>,
    acked: &BTreeSet<MemberId>,
) -> BTreeSet<MemberId> {
    match ack_by {
        AckBy::Any if recipients.iter().any(|m| acked.contains(m)) => BTreeSet::new(),
        AckBy::Any => recipients.clone(),
        AckBy::All => recipients.difference(acked).copied().collect(),
        AckBy::Member(m) if recipients.contains(&m) && !acked.contains(&m) => [m].into(),
        AckBy::Member(_) => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_owes_under_each_rule() {
        let (a, b, c) = (MemberId([1; 16]), MemberId([2; 16]), MemberId([3; 16]));
        let all: BTreeSet<_> = [a, b].into();
        let none = BTreeSet::new();
        let by_a: BTreeSet<_> = [a].into();
        assert_eq!(owed(AckBy::Any, &all, &none), all);
        assert!(owed(AckBy::Any, &all, &by_a).is_empty());
        assert_eq!(owed(AckBy::All, &all, &by_a), [b].into());
        assert_eq!(owed(AckBy::Member(b), &all, &by_a), [b].into());
        assert!(owed(AckBy::Member(c), &all, &none).is_empty());
    }
}
