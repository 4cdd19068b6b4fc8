//! Walking one device's trail as stored, entry by entry, to name the first
//! place where it was altered, removed or reordered (`huddle audit verify`).

use super::{Entry, EntryHash};
use crate::ids::DeviceId;

/// The first thing wrong with a stored trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The entry at this place does not decode, names another device, or
    /// its signature does not verify: it was altered.
    Altered { seq: u64 },
    /// No entry at this place, though later ones exist: it was removed.
    Removed { seq: u64 },
    /// The entry stored at place `seq` is the device's entry `holds`.
    Reordered { seq: u64, holds: u64 },
    /// Entry `seq` does not name entry `seq − 1` as its predecessor, though
    /// both are signed: one of them was replaced by another signed entry.
    Unchained { seq: u64 },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Altered { seq } => write!(
                f,
                "entry {seq} was altered (it does not decode or its signature does not verify)"
            ),
            Problem::Removed { seq } => write!(
                f,
                "entry {seq} was removed (the trail goes on after it)"
            ),
            Problem::Reordered { seq, holds } => write!(
                f,
                "entry {seq} is out of place: its place holds entry {holds} (entries were reordered, or some removed)"
            ),
            Problem::Unchained { seq } => write!(
                f,
                "entry {seq} does not follow entry {}: one of them was replaced",
                seq.saturating_sub(1)
            ),
        }
    }
}

/// What [`verify_chain`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    pub device: DeviceId,
    /// Entries that chain correctly from the first.
    pub good: u64,
    /// Entries stored.
    pub stored: u64,
    /// The hash of the last good entry.
    pub head: Option<EntryHash>,
    pub problem: Option<Problem>,
}

/// Checks `device`'s stored trail: `records` are (the place each was
/// stored at, its bytes), in place order.
pub fn verify_chain(device: DeviceId, records: &[(u64, Vec<u8>)]) -> ChainReport {
    let mut report = ChainReport {
        device,
        good: 0,
        stored: records.len() as u64,
        head: None,
        problem: None,
    };
    let mut prev = [0u8; 32];
    for (expected, (place, bytes)) in (0u64..).zip(records) {
        let problem = if *place != expected {
            Some(Problem::Removed { seq: expected })
        } else {
            match Entry::decode(bytes) {
                Err(_) => Some(Problem::Altered { seq: expected }),
                Ok(e) if e.device != device || !e.verify() => {
                    Some(Problem::Altered { seq: expected })
                }
                Ok(e) if e.seq != expected => Some(Problem::Reordered {
                    seq: expected,
                    holds: e.seq,
                }),
                Ok(e) if e.prev != prev => Some(Problem::Unchained { seq: expected }),
                Ok(_) => None,
            }
        };
        if let Some(p) = problem {
            report.problem = Some(p);
            return report;
        }
        prev = super::hash_of(bytes);
        report.good = expected + 1;
        report.head = Some(prev);
    }
    report
}
