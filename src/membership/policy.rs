//! What a team allows when its administrator admits a device.
//!
//! Invariant: every certificate this device signs lasts at most
//! `max_membership_ms`; a longer request is refused, never shortened
//! silently. Every team has the default policy until teams can carry their
//! own (then it is the team document's to say).

use crate::ids::Millis;

const DAY_MS: Millis = 86_400_000;

/// A team's rules for the certificates it signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TeamPolicy {
    /// The longest a membership may last from the day it is signed.
    pub max_membership_ms: Millis,
}

impl Default for TeamPolicy {
    /// Two years: long enough for a rotation, short enough that a forgotten
    /// device falls out of the team on its own.
    fn default() -> Self {
        TeamPolicy {
            max_membership_ms: 2 * 365 * DAY_MS,
        }
    }
}
