//! Hybrid logical clock: physical milliseconds in the high 48 bits, a logical
//! counter in the low 16. Display order is (HLC, message id) everywhere.
//!
//! Invariant: a device's clock never goes backwards, and a remote timestamp
//! far in the future (a peer with a broken clock) is rendered but never
//! adopted, so one bad clock cannot drag the whole team into the future.

use crate::ids::Millis;

/// How far ahead of our own clock a remote timestamp may be and still be
/// adopted by [`HlcClock::observe`].
pub const MAX_ADOPTED_DRIFT_MS: u64 = 60 * 60 * 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc(pub u64);

impl Hlc {
    pub fn new(millis: Millis, counter: u16) -> Hlc {
        Hlc(((millis & 0xffff_ffff_ffff) << 16) | u64::from(counter))
    }

    pub fn millis(self) -> Millis {
        self.0 >> 16
    }

    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

/// The per-device clock state.
#[derive(Clone, Copy, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A fresh timestamp, strictly greater than every one issued or adopted.
    pub fn tick(&mut self, now: Millis) -> Hlc {
        let next = if now > self.last.millis() {
            Hlc::new(now, 0)
        } else if self.last.counter() == u16::MAX {
            Hlc::new(self.last.millis() + 1, 0)
        } else {
            Hlc(self.last.0 + 1)
        };
        self.last = next;
        next
    }

    /// Take a remote timestamp into account (unless it is implausibly far ahead).
    pub fn observe(&mut self, now: Millis, remote: Hlc) {
        if remote > self.last && remote.millis() <= now.saturating_add(MAX_ADOPTED_DRIFT_MS) {
            self.last = remote;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards() {
        let mut c = HlcClock::default();
        let a = c.tick(1000);
        let b = c.tick(999);
        let d = c.tick(1000);
        assert!(a < b && b < d);
        c.observe(1000, Hlc::new(5000, 3));
        assert!(c.tick(1000) > Hlc::new(5000, 3));
        // Too far in the future: not adopted.
        c.observe(1000, Hlc::new(1000 + MAX_ADOPTED_DRIFT_MS + 10_000, 0));
        assert!(c.tick(1000).millis() < 10_000);
    }
}
