//! Remembered peers: where a device that proved membership could be
//! reached, kept under `peer/<device>` (protocol/storage.md §2.2) so that a
//! node that restarts, or whose peer restarted on a new port, finds it
//! again without mDNS. The shell (`net/remember.rs`) decides what to keep;
//! this is the record and its bounds.
//!
//! Invariant: a record decodes only if it is exactly what [`PeerRecord::encode`]
//! writes within the bounds; a damaged record is skipped, never fatal (an
//! address is a hint, and the peer is found again when it connects).

use thiserror::Error;

use super::{keys, Store, StoreError};
use crate::ids::DeviceId;

/// Addresses kept per device.
pub const MAX_ADDRS: usize = 8;
/// Bytes of one address (a multiaddr, binary): an IPv6 address, a port
/// and a peer id take about 60.
pub const MAX_ADDR_LEN: usize = 255;
/// Devices remembered; past it, the one seen longest ago is forgotten.
pub const MAX_PEERS: usize = 1024;
/// The record's version byte.
const VERSION: u8 = 1;
/// Version, `seen`, count.
const FIXED: usize = 1 + 8 + 1;

/// Where a device was last reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// When this node last learnt these addresses (ms since the epoch).
    pub seen: u64,
    /// Binary multiaddrs, at most [`MAX_ADDRS`] of at most
    /// [`MAX_ADDR_LEN`] bytes each (the core does not parse them).
    pub addrs: Vec<Vec<u8>>,
}

/// A record that is not one [`PeerRecord::encode`] writes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("a remembered-peer record is damaged: {0}")]
pub struct PeerRecordError(&'static str);

impl PeerRecord {
    /// Keeps the first [`MAX_ADDRS`] addresses that fit [`MAX_ADDR_LEN`].
    pub fn new(seen: u64, addrs: impl IntoIterator<Item = Vec<u8>>) -> PeerRecord {
        let addrs = addrs
            .into_iter()
            .filter(|a| !a.is_empty() && a.len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS)
            .collect();
        PeerRecord { seen, addrs }
    }

    /// `1`, `seen` (u64 big-endian), the count (u8), then each address as
    /// its length (u8) and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.seen.to_be_bytes());
        let addrs = &self.addrs[..self.addrs.len().min(MAX_ADDRS)];
        out.push(addrs.len() as u8);
        for a in addrs {
            let len = a.len().min(MAX_ADDR_LEN);
            out.push(len as u8);
            out.extend_from_slice(&a[..len]);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PeerRecord, PeerRecordError> {
        if bytes.len() < FIXED {
            return Err(PeerRecordError("shorter than its fixed part"));
        }
        if bytes[0] != VERSION {
            return Err(PeerRecordError("an unknown version"));
        }
        let seen = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
        let n = usize::from(bytes[9]);
        if n > MAX_ADDRS {
            return Err(PeerRecordError("more addresses than a record keeps"));
        }
        let mut rest = &bytes[FIXED..];
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let (&len, tail) = rest.split_first().ok_or(PeerRecordError("cut short"))?;
            let len = usize::from(len);
            if len == 0 || len > tail.len() {
                return Err(PeerRecordError("an address cut short or empty"));
            }
            addrs.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(PeerRecordError("bytes after the last address"));
        }
        Ok(PeerRecord { seen, addrs })
    }
}

/// Every remembered device whose record reads; damaged records and keys
/// are left out (and logged).
pub fn load(store: &dyn Store) -> Result<Vec<(DeviceId, PeerRecord)>, StoreError> {
    let mut out = Vec::new();
    for (k, v) in store.scan_prefix(keys::PEER_PREFIX)? {
        let device = <[u8; 32]>::try_from(&k[keys::PEER_PREFIX.len()..]).map(DeviceId);
        match (device, PeerRecord::decode(&v)) {
            (Ok(device), Ok(record)) => out.push((device, record)),
            (_, Err(e)) => tracing::warn!("left out a remembered peer: {e}"),
            (Err(_), _) => tracing::warn!("left out a remembered peer under a malformed key"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_keeps_its_bounds() {
        let r = PeerRecord::new(7, (0..20u8).map(|i| vec![i; 1 + usize::from(i)]));
        assert_eq!(r.addrs.len(), MAX_ADDRS);
        assert_eq!(PeerRecord::decode(&r.encode()), Ok(r));
        let long = PeerRecord::new(1, [vec![1; MAX_ADDR_LEN + 1], vec![], vec![2; 3]]);
        assert_eq!(long.addrs, vec![vec![2; 3]]);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = PeerRecord::new(9, [vec![4; 5], vec![6; 2]]).encode();
        for cut in 0..good.len() {
            assert!(PeerRecord::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(PeerRecord::decode(&longer).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(PeerRecord::decode(&version).is_err());
        let mut many = good.clone();
        many[9] = MAX_ADDRS as u8 + 1;
        assert!(PeerRecord::decode(&many).is_err());
        let mut empty_addr = good;
        empty_addr[10] = 0;
        assert!(PeerRecord::decode(&empty_addr).is_err());
    }
}
