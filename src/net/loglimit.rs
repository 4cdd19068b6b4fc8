//! Rate limits for the log lines a remote can cause (a refused or broken
//! connection, a denied handshake): an attacker reconnecting flat out must
//! not fill the disk with our warnings.
//!
//! Invariants:
//! - at most one line per source address per [`LOG_EVERY`]; the lines
//!   held back are counted and the count goes with the next line let
//!   through for that address (and into the node's resources);
//! - the table is bounded by [`MAX_KEYS`]: when it is full, addresses whose
//!   window has passed are forgotten, and any other new address shares one
//!   bucket, so a crowd of addresses gets one line per window between them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

/// One line per address per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Addresses tracked at once.
pub const MAX_KEYS: usize = 1024;
/// The bucket shared by addresses that do not fit, and by lines with no
/// address.
const SHARED: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[derive(Default)]
pub struct LogLimit {
    /// When each address last had a line, and how many were held back since.
    last: HashMap<IpAddr, (Instant, u64)>,
    /// Lines held back since the start, all addresses together.
    pub suppressed: u64,
}

impl LogLimit {
    /// Whether a line about `addr` may be written now; if so, how many were
    /// held back for it since its last one.
    pub fn allow(&mut self, addr: Option<IpAddr>, now: Instant) -> Option<u64> {
        let mut key = addr.unwrap_or(SHARED);
        if !self.last.contains_key(&key) && self.last.len() >= MAX_KEYS {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < LOG_EVERY);
            if self.last.len() >= MAX_KEYS {
                key = SHARED;
            }
        }
        match self.last.get_mut(&key) {
            Some((at, held)) if now.saturating_duration_since(*at) < LOG_EVERY => {
                *held += 1;
                self.suppressed += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_per_window_and_a_bounded_table() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        assert_eq!(l.allow(a, t0), Some(0));
        for _ in 0..5 {
            assert_eq!(l.allow(a, t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(l.allow(Some(IpAddr::from([10, 0, 0, 2])), t0), Some(0));
        assert_eq!(l.allow(a, t0 + LOG_EVERY), Some(5));
        assert_eq!(l.suppressed, 5);

        for i in 0..2 * MAX_KEYS as u32 {
            l.allow(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert!(l.last.len() <= MAX_KEYS + 1);
    }
}
