//! Remembered peers (protocol/storage.md §2.2): where each device that
//! proved membership was reached is kept in the store, and at start every
//! remembered device the team still admits is dialled like a `--peer`
//! address (again, with backoff, while not connected). So a node that
//! restarts, or whose peer restarted on a new port, finds it again with
//! mDNS off.
//!
//! Invariant: only a proven member's addresses are written, at most
//! [`MAX_ADDRS`] per device and [`MAX_PEERS`] devices; a device the team no
//! longer admits is never dialled from memory.

use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::addr_limits::ip_of;
use super::dialer::StaticPeer;
use super::shell::{now_ms, peer_id_of, Shell};
use crate::ids::DeviceId;
use crate::store::peers::{self, PeerRecord, MAX_ADDRS, MAX_PEERS};
use crate::store::{keys, Store, StoreError, StoreOp};

/// `addr` as one to remember and dial: an IP address then a TCP port (a
/// trailing `/p2p/…` is dropped), neither unspecified nor multicast, and
/// loopback only when `loopback` (the peer was reached over loopback).
pub fn usable(addr: &Multiaddr, loopback: bool) -> Option<Multiaddr> {
    let mut parts = addr.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => {}
        _ => return None,
    }
    if ip.is_unspecified() || ip.is_multicast() || port == 0 || (ip.is_loopback() && !loopback) {
        return None;
    }
    Some(Multiaddr::from(ip).with(Protocol::Tcp(port)))
}

impl Shell {
    /// At start: reads the remembered peers and dials those the team still
    /// admits.
    pub(super) fn dial_remembered(&mut self) -> Result<(), StoreError> {
        let me = self.node.device_id();
        for (device, record) in peers::load(&self.store)? {
            self.remembered.insert(device, record);
        }
        let mut dial = Vec::new();
        for (device, record) in &self.remembered {
            if *device == me || !self.admits(device) {
                continue;
            }
            let addrs: Vec<Multiaddr> = record
                .addrs
                .iter()
                .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                .filter_map(|a| usable(&a, true))
                .collect();
            if let (Some(peer), false) = (peer_id_of(device), addrs.is_empty()) {
                dial.push(StaticPeer::remembered(peer, addrs));
            }
        }
        tracing::info!(
            devices = dial.len(),
            "dialling the peers this node remembers"
        );
        self.statics.extend(dial);
        Ok(())
    }

    /// Whether a static peer is one to dial now: a remembered device only
    /// while the team still admits it (it may be revoked while we run).
    pub(super) fn still_wanted(&self, s: &StaticPeer) -> bool {
        let device = s
            .peer
            .and_then(|p| DeviceId::from_peer_id_bytes(&p.to_bytes()));
        !s.remembered || device.is_some_and(|d| self.admits(&d))
    }

    /// Whether the team admits `device` now: a certificate for it in the
    /// team directory, unexpired and not revoked.
    fn admits(&self, device: &DeviceId) -> bool {
        let now = now_ms();
        self.node.directory().any(|c| {
            c.device == *device && c.expires > now && !self.node.is_revoked(device, &c.member)
        })
    }

    /// Remembers where `peer` was reached, if it proved membership: the
    /// addresses we dialled it at and those it announced (identify).
    pub(super) fn remember(&mut self, peer: PeerId) {
        let Some(link) = self.links.get(&peer).filter(|l| l.member) else {
            return;
        };
        let loopback = link
            .conns
            .values()
            .any(|c| ip_of(&c.addr).is_some_and(|ip| ip.is_loopback()));
        let dialled = link.conns.values().filter(|c| c.dialled).map(|c| &c.addr);
        let mut addrs: Vec<Multiaddr> = Vec::new();
        for a in dialled
            .chain(&link.heard)
            .filter_map(|a| usable(a, loopback))
        {
            if !addrs.contains(&a) && addrs.len() < MAX_ADDRS {
                addrs.push(a);
            }
        }
        let device = link.device;
        let bytes: Vec<Vec<u8>> = addrs.iter().map(|a| a.to_vec()).collect();
        if bytes.is_empty()
            || self
                .remembered
                .get(&device)
                .is_some_and(|r| r.addrs == bytes)
        {
            return;
        }
        let record = PeerRecord::new(now_ms(), bytes);
        let mut ops = vec![StoreOp::Put {
            key: keys::peer(&device),
            value: record.encode(),
        }];
        self.remembered.insert(device, record);
        if self.remembered.len() > MAX_PEERS {
            let oldest = self
                .remembered
                .iter()
                .min_by_key(|(_, r)| r.seen)
                .map(|(d, _)| *d);
            if let Some(oldest) = oldest {
                self.remembered.remove(&oldest);
                ops.push(StoreOp::Delete {
                    key: keys::peer(&oldest),
                });
            }
        }
        // Made durable by the next flush (sled's own, at most 500 ms on):
        // an address is a hint, worth no flush of its own.
        if let Err(e) = self.store.apply(&ops) {
            tracing::warn!("cannot remember where a peer was reached: {e}");
        }
        tracing::debug!(peer = %device.short(), ?addrs, "remembered where a peer was reached");
        for s in self
            .statics
            .iter_mut()
            .filter(|s| s.remembered && s.peer == Some(peer))
        {
            s.addrs.clone_from(&addrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_dialable_tcp_addresses_are_remembered() {
        let peer = "/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let cases = [
            (
                "/ip4/192.168.1.20/tcp/4001",
                false,
                Some("/ip4/192.168.1.20/tcp/4001"),
            ),
            (
                &format!("/ip4/192.168.1.20/tcp/4001{peer}"),
                false,
                Some("/ip4/192.168.1.20/tcp/4001"),
            ),
            (
                "/ip6/fe80::1/tcp/4001",
                false,
                Some("/ip6/fe80::1/tcp/4001"),
            ),
            ("/ip4/127.0.0.1/tcp/4001", false, None),
            (
                "/ip4/127.0.0.1/tcp/4001",
                true,
                Some("/ip4/127.0.0.1/tcp/4001"),
            ),
            ("/ip4/0.0.0.0/tcp/4001", true, None),
            ("/ip4/224.0.0.251/tcp/4001", true, None),
            ("/ip4/192.168.1.20/tcp/0", true, None),
            ("/ip4/192.168.1.20/udp/4001/quic-v1", true, None),
            ("/dns4/example.org/tcp/4001", true, None),
            ("/ip4/192.168.1.20/tcp/4001/ws", true, None),
        ];
        for (given, loopback, want) in cases {
            assert_eq!(usable(&addr(given), loopback), want.map(addr), "{given}");
        }
    }
}
