//! Every timer the loop waits for, in one ordered set: the node's timers,
//! the grace period before a refused peer is cut off, and the next redial
//! of each static peer. The loop sleeps until the earliest one.
//!
//! Invariant: each key has at most one deadline (setting it again moves it),
//! so the set is bounded by the number of keys: a few node timers, one per
//! connected peer, one per static peer.

use std::collections::{BTreeMap, BTreeSet};

use tokio::time::Instant;

use crate::ids::DeviceId;
use crate::node::Timer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Deadline {
    /// A timer the node asked for with `Output::SetTimer`.
    Node(Timer),
    /// Close a peer's connections even if its send queue has not drained.
    Close(DeviceId),
    /// Try the static peer with this index again.
    Redial(usize),
    /// Look at the attachments being fetched (`blobs.rs`).
    Blobs,
}

#[derive(Default)]
pub struct Deadlines {
    by_key: BTreeMap<Deadline, Instant>,
    queue: BTreeSet<(Instant, Deadline)>,
}

impl Deadlines {
    pub fn set(&mut self, key: Deadline, at: Instant) {
        if let Some(old) = self.by_key.insert(key, at) {
            self.queue.remove(&(old, key));
        }
        self.queue.insert((at, key));
    }

    pub fn cancel(&mut self, key: Deadline) {
        if let Some(old) = self.by_key.remove(&key) {
            self.queue.remove(&(old, key));
        }
    }

    pub fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Removes and returns one deadline that is due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<Deadline> {
        let (at, key) = *self.queue.first()?;
        if at > now {
            return None;
        }
        self.queue.remove(&(at, key));
        self.by_key.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn setting_again_moves_and_due_come_in_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.set(Deadline::Redial(1), t0 + Duration::from_secs(5));
        d.set(
            Deadline::Node(Timer::Maintenance),
            t0 + Duration::from_secs(2),
        );
        d.set(Deadline::Redial(1), t0 + Duration::from_secs(1));
        assert_eq!(d.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(d.pop_due(t0), None);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(d.pop_due(later), Some(Deadline::Redial(1)));
        assert_eq!(d.pop_due(later), Some(Deadline::Node(Timer::Maintenance)));
        assert_eq!(d.pop_due(later), None);
        d.set(Deadline::Redial(2), t0);
        d.cancel(Deadline::Redial(2));
        assert_eq!(d.next(), None);
    }
}
