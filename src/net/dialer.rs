//! Dialling: static peers (addresses given by hand, dialled at start and
//! again with exponential backoff whenever we are not connected to them),
//! peers found on mDNS, and dials a user asks for.
//!
//! Invariant: at most one dial per static peer is pending at a time, and the
//! delay before the next attempt never falls below [`MIN_BACKOFF`] or grows
//! past [`MAX_BACKOFF`]; it returns to the minimum only after a connection
//! has lasted [`STABLE_AFTER`], so a peer that refuses us is not hammered.

use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId};
use mdns_sd::ServiceEvent;
use tokio::time::Instant;

use super::deadlines::Deadline;
use super::shell::Shell;
use super::FoundBy;

pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// The peer id at the end of `addr` (`…/p2p/<id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}

/// Dial options for `addr`: bound to the peer id if the address names one
/// (then no second dial starts while connected or dialling).
pub fn dial_opts(addr: &Multiaddr) -> DialOpts {
    match peer_of(addr) {
        Some(peer) => DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build(),
        None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
    }
}

/// A peer dialled at start and again with backoff while not connected: a
/// `--peer` address, or a device remembered from an earlier run
/// (`remember.rs`).
pub struct StaticPeer {
    /// One `--peer` address, or the addresses a device was reached at.
    pub addrs: Vec<Multiaddr>,
    /// From the address, or learnt on the first connection.
    pub peer: Option<PeerId>,
    /// Remembered rather than given: its addresses follow what the device
    /// announces.
    pub remembered: bool,
    pub pending: Option<ConnectionId>,
    backoff: Duration,
}

impl StaticPeer {
    pub fn new(addr: Multiaddr) -> StaticPeer {
        StaticPeer {
            peer: peer_of(&addr),
            addrs: vec![addr],
            remembered: false,
            pending: None,
            backoff: MIN_BACKOFF,
        }
    }

    pub fn remembered(peer: PeerId, addrs: Vec<Multiaddr>) -> StaticPeer {
        StaticPeer {
            peer: Some(peer),
            addrs,
            remembered: true,
            pending: None,
            backoff: MIN_BACKOFF,
        }
    }

    /// How to dial it: bound to its peer id once known.
    fn dial_opts(&self) -> DialOpts {
        match (self.peer, self.addrs.first()) {
            (Some(peer), _) => DialOpts::peer_id(peer)
                .addresses(self.addrs.clone())
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            (None, Some(addr)) => dial_opts(addr),
            // Never made: a `--peer` has its one address.
            (None, None) => dial_opts(&Multiaddr::empty()),
        }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        d
    }

    /// A connection to this peer lasted `lived`.
    pub fn connection_ended(&mut self, lived: Duration) {
        if lived >= STABLE_AFTER {
            self.backoff = MIN_BACKOFF;
        }
    }
}

impl Shell {
    pub(super) fn dial(&mut self, opts: DialOpts, why: FoundBy) -> Result<(), DialError> {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, why);
                Ok(())
            }
            // Already connected or dialling: nothing to do.
            Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn redial(&mut self, i: usize) {
        let Some(s) = self.statics.get(i) else { return };
        if s.pending.is_some()
            || s.peer.is_some_and(|p| self.links.contains_key(&p))
            || !self.still_wanted(s)
        {
            return;
        }
        let opts = s.dial_opts();
        let id = opts.connection_id();
        let addr = s.addrs.first().cloned().unwrap_or_else(Multiaddr::empty);
        match self.dial(opts, FoundBy::Static) {
            Ok(()) if self.dials.contains_key(&id) => {
                tracing::debug!(%addr, "dialling static peer");
                if let Some(s) = self.statics.get_mut(i) {
                    s.pending = Some(id);
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(%addr, "cannot dial static peer: {e}");
                self.schedule_redial(i);
            }
        }
    }

    pub(super) fn static_dial_failed(&mut self, conn: ConnectionId) {
        let failed: Vec<usize> = (0..self.statics.len())
            .filter(|i| self.statics[*i].pending == Some(conn))
            .collect();
        for i in failed {
            self.statics[i].pending = None;
            self.schedule_redial(i);
        }
    }

    pub(super) fn schedule_redial(&mut self, i: usize) {
        if let Some(s) = self.statics.get_mut(i) {
            let delay = s.next_delay();
            tracing::debug!(addrs = ?s.addrs, ?delay, "next attempt at static peer");
            self.deadlines
                .set(Deadline::Redial(i), Instant::now() + delay);
        }
    }

    // ----- discovery -----

    pub(super) fn on_mdns(&mut self, ev: Result<ServiceEvent, mdns_sd::RecvError>) {
        let Some(d) = &mut self.discovery else { return };
        let ev = match ev {
            Ok(ev) => ev,
            Err(_) => {
                tracing::warn!("mDNS browsing stopped; starting it again");
                if let Err(e) = d.rebrowse() {
                    tracing::warn!("mDNS discovery is off from now on: {e}");
                    self.discovery = None;
                }
                return;
            }
        };
        let Some(found) = d.on_event(ev) else { return };
        if self.links.contains_key(&found.peer) || found.addrs.is_empty() {
            return;
        }
        tracing::info!(peer = %found.peer, addrs = ?found.addrs, "found a team peer on mDNS");
        let opts = DialOpts::peer_id(found.peer)
            .addresses(found.addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(e) = self.dial(opts, FoundBy::Mdns) {
            tracing::debug!(peer = %found.peer, "cannot dial the peer found on mDNS: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets_only_after_a_stable_connection() {
        let mut p = StaticPeer::new("/ip4/127.0.0.1/tcp/1".parse().unwrap());
        let delays: Vec<u64> = (0..8).map(|_| p.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        p.connection_ended(Duration::from_secs(1));
        assert_eq!(p.next_delay(), MAX_BACKOFF);
        p.connection_ended(STABLE_AFTER);
        assert_eq!(p.next_delay(), MIN_BACKOFF);
    }
}
